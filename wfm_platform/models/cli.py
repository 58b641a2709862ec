"""`wfm models ...`: world-model presets. Mounted by wfm_platform/cli.py (`app.add_typer(models_app, name="models")`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

models_app = typer.Typer(help="World-model presets (configs/models).", no_args_is_help=True,
                         add_completion=False, pretty_exceptions_enable=False)
err = Console(stderr=True)


@models_app.callback()
def _group() -> None:
    """World-model presets."""  # a callback keeps `list` a subcommand even while it is the only one


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


@models_app.command("list")
def list_cmd(as_json: Annotated[bool, typer.Option("--json", help="print [{name, family, params}] on stdout")] = False):
    """List the presets with their parameter counts (counted on the meta device, no weights)."""
    from .presets import PresetError, list_presets

    try:
        rows = list_presets()
    except (PresetError, ImportError) as e:
        err.print(f"[red]error:[/red] {e}", soft_wrap=True)
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps([{"name": r["name"], "family": r["family"], "params": r["params"]} for r in rows]))
        return
    table = Table(title="world-model presets")
    for col in ("name", "family", "params", "published", "vs published"):
        table.add_column(col, justify="left" if col in ("name", "family") else "right")
    for r in rows:
        pub = r["published_params"]
        ratio = f"{(r['params'] / pub - 1) * 100:+.1f}%" if pub else "-"
        table.add_row(r["name"], r["family"], _human(r["params"]), _human(pub), ratio)
    Console().print(table)
