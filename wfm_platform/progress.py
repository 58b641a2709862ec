"""The training progress bar that `wfm tokenizer train` and `wfm train ...` share (rich, on stderr).

    with training_progress("train", total=200, console=err, disable=as_json) as on_step:
        train(..., on_step=on_step)      # on_step(step, n, parts) moves the bar and shows parts["loss"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

OnStep = Callable[[int, int, dict], None]


@contextmanager
def training_progress(label: str, total: int, console: Console, disable: bool = False) -> Iterator[OnStep]:
    """A bar from 0 to `total` steps with the last loss; yields the trainers' on_step callback.

    `label` is rich markup shown in bold before the bar; `disable` (e.g. --json) hides the bar."""
    progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, disable=disable)
    with progress:
        task = progress.add_task("train", total=total, loss="-")

        def on_step(step: int, n: int, parts: dict) -> None:
            progress.update(task, completed=step, loss=f"{parts['loss']:.4f}")

        yield on_step
