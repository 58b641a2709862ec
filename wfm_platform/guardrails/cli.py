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
    """Check a prompt with the pre-guard (blocklist, profanity and safety classifiers, optional semantic and Aegis stages).

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


@guard_app.command("video")
def video(
    src: Annotated[Path, typer.Argument(metavar="IN", help="the video to guard (e.g. a generated clip)")],
    out: Annotated[Path | None, typer.Option("--out", help="guarded mp4 to write; default <stem>.guarded.mp4")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='print {"allowed", "faces_blurred", "reasons"}')] = False,
    config: Annotated[Path | None, typer.Option(help="guardrails YAML (its post: section); default configs/guardrails.yaml")] = None,
    log: Annotated[str | None, typer.Option("--log", help="object-store root for the violation log "
                                            "(blocks and blurs are recorded there)")] = None,
) -> None:
    """Blur every face (tracked across frames) and reject the video if a sampled frame is unsafe.

    The guarded copy is written only when the video is allowed. Exit code: 0 allowed, 1 blocked (also
    when a model cannot load: the guard fails closed), 2 unreadable input.
    """
    from ..video import VideoError
    from .postguard import PostGuard, PostGuardConfig

    cfg_path = config or _default_config()
    cfg = PostGuardConfig.from_yaml(cfg_path) if cfg_path.exists() else PostGuardConfig()
    try:
        path, v = PostGuard(cfg).apply(src, out)
    except VideoError as e:
        typer.echo(f"error: {src}: {e.reason}", err=True)
        raise typer.Exit(2)
    faces = int(v.scores.get("faces", 0))
    if log and (not v.allowed or faces):
        from .violations import ViolationLog

        # the log hashes the item: for a video, its path (the content hash is in the catalog)
        ViolationLog(log).record(str(src), v, source="post")
    res = {"allowed": v.allowed, "faces_blurred": faces, "reasons": v.reasons, "output": str(path) if path else None}
    if as_json:
        typer.echo(json.dumps(res))
    else:
        typer.echo(("ALLOWED" if v.allowed else "BLOCKED") + f": {faces} face(s) blurred -> {path or '-'}")
        for reason in v.reasons:
            typer.echo(f"  {reason}")
    raise typer.Exit(0 if v.allowed else 1)


def _default_config() -> Path:
    from ..curation.config import REPO_ROOT

    return REPO_ROOT / "configs" / "guardrails.yaml"
