"""`wfm guard ...`: check prompts (and, later, videos) from the shell.

The lead mounts this app with `app.add_typer(guard_app, name="guard")` in wfm_platform/cli.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

guard_app = typer.Typer(help="Guardrails: check prompts before generation (and videos after).",
                        no_args_is_help=True)


@guard_app.callback()
def _group() -> None:
    """Guardrails: check prompts before generation (and videos after)."""
    # a callback keeps `guard` a command group even while it has a single command


@guard_app.command("prompt")
def prompt(
    text: Annotated[str | None, typer.Argument(help="the prompt to check")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="a text file, one prompt per line")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='print {"allowed", "reasons"} (a list for --file)')] = False,
    config: Annotated[Path | None, typer.Option(help="guardrails YAML; default configs/guardrails.yaml")] = None,
    log: Annotated[str | None, typer.Option("--log", help="object-store root for the violation log "
                                            "(overrides pre.violation_log.uri)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also print per-stage scores")] = False,
) -> None:
    """Check a prompt with the pre-guard (blocklist, classifier, semantic, optional Aegis LLM).

    Exit code: for a single prompt 0 when allowed, 1 when blocked (also when a stage cannot load:
    the guard fails closed); with --file always 0 (read the verdicts), 2 on bad usage.
    """
    from .preguard import PreGuard, PreGuardConfig

    if (text is None) == (file is None):
        typer.echo("give either a prompt or --file PROMPTS.txt", err=True)
        raise typer.Exit(2)
    logging.basicConfig(level=logging.WARNING)
    try:
        cfg = PreGuardConfig.from_yaml(config)
    except FileNotFoundError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from e
    if log:
        cfg.violation_log.uri = log
    guard = PreGuard(cfg)

    def show(p: str, v) -> dict:
        d = {"allowed": v.allowed, "reasons": v.reasons}
        if verbose:
            d["scores"] = v.scores
        return d

    if file is not None:
        if not file.is_file():
            typer.echo(f"{file} not found", err=True)
            raise typer.Exit(2)
        prompts = [ln for ln in file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        out = [show(p, guard.check(p)) for p in prompts]
        if as_json:
            typer.echo(json.dumps(out))
        else:
            for p, d in zip(prompts, out):
                typer.echo(f"{'ALLOWED' if d['allowed'] else 'BLOCKED'}  {p}" +
                           ("" if d["allowed"] else f"  [{'; '.join(d['reasons'])}]"))
        raise typer.Exit(0)

    v = guard.check(text)
    d = show(text, v)
    if as_json:
        typer.echo(json.dumps(d))
    else:
        typer.echo("ALLOWED" if v.allowed else "BLOCKED: " + "; ".join(v.reasons))
    raise typer.Exit(0 if v.allowed else 1)
