"""`wfm train diffusion|autoregressive`: train or post-train a world model on a dataset version.

Mounted by wfm_platform/cli.py (`app.add_typer(train_app, name="train")`). Progress goes to stderr,
`--json` prints the result on stdout; user errors exit with code 2 and one line saying what to do.
Several processes: `torchrun --nproc_per_node N -m wfm_platform.models.train FAMILY --model ... ...`.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..progress import training_progress

# torch is imported inside the command: `wfm --help` stays fast
err = Console(stderr=True)
train_app = typer.Typer(help="Train or post-train world models (diffusion, autoregressive) on a dataset version.",
                        no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _fail(msg: str) -> None:
    err.print(f"[red]error:[/red] {escape(msg)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(2)


def _run(family: str, model: str, config: Path, dataset: str, out: Path, steps: int | None, init: str | None,
         resume: bool, store: str | None, strategy: str | None, as_json: bool,
         tokenizer_checkpoint: str | None = None, max_seconds: float | None = None) -> None:
    from ..storage.objectstore import ObjectStore
    from ..tokenizer.data import ShardSourceError
    from .checkpoint import CheckpointError, resolve_model_ref
    from .train import load_train_config, train

    try:
        cfg = load_train_config(config, strategy=strategy, tokenizer_checkpoint=tokenizer_checkpoint,
                                max_seconds=max_seconds)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    total = steps or cfg.steps
    the_store = ObjectStore(store) if store else None
    with contextlib.ExitStack() as stack:
        try:
            init = stack.enter_context(resolve_model_ref(init, the_store))
            on_step = stack.enter_context(training_progress(f"train {model}", total, err, disable=as_json))
            r = train(family, model, cfg, dataset, out, steps=steps, init=init, resume=resume, store=the_store,
                      on_step=on_step)
        except (FileNotFoundError, CheckpointError, ShardSourceError, ValueError, KeyError) as e:
            _fail(str(e).strip("'\""))
    res = {"out": str(r.out_dir), "step": r.step, "dataset": r.dataset, "checkpoint": str(r.checkpoint),
           "steps_per_s": r.steps_per_s, "first_loss": r.losses[0] if r.losses else None,
           "last_loss": r.losses[-1] if r.losses else None}
    if as_json:
        typer.echo(json.dumps(res))
    else:
        err.print(f"step {r.step} on {r.dataset}: checkpoint {r.checkpoint} (loss log {r.out_dir / 'loss.jsonl'})")


Model = Annotated[str, typer.Option("--model", help="preset name (wfm models list) or a preset YAML path")]
Config = Annotated[Path, typer.Option(help="training YAML, e.g. configs/train/world_tiny.yaml")]
Dataset = Annotated[str, typer.Option(help="dataset version NAME@VERSION (wfm dataset list); NAME: latest")]
Out = Annotated[Path, typer.Option(help="run folder = checkpoint folder (model.pt, train_state.pt, loss.jsonl)")]
Steps = Annotated[int | None, typer.Option(help="train until this total step (default: config)")]
Init = Annotated[str | None, typer.Option(help="post-train from this checkpoint (weights only, new optimizer): a "
                                          "checkpoint folder, or PRESET@latest for the latest one published in --store")]
Resume = Annotated[bool, typer.Option("--resume", help="continue the checkpoint in --out exactly")]
Store = Annotated[str | None, typer.Option(help="object-store root with the datasets (default: WFM_STORAGE_ROOT "
                                           "or ./data/store)")]
Strategy = Annotated[str | None, typer.Option(help="ddp | fsdp under torchrun (default: config)")]
Json = Annotated[bool, typer.Option("--json", help="print the result as JSON")]
MaxSeconds = Annotated[float | None, typer.Option(help="stop with a checkpoint after this much training time "
                                                  "(a time budget; --resume goes on)")]
TokCkpt = Annotated[str | None, typer.Option(help="trained tokenizer (a `wfm tokenizer train` run folder or "
                                             "checkpoint); default: the config's tokenizer_checkpoint")]


@train_app.command("diffusion")
def diffusion(model: Model, config: Config, dataset: Dataset, out: Out, steps: Steps = None, init: Init = None,
              resume: Resume = False, store: Store = None, strategy: Strategy = None, as_json: Json = False,
              tokenizer_checkpoint: TokCkpt = None, max_seconds: MaxSeconds = None) -> None:
    """Train a diffusion world model (DiT over CV latents) on a dataset version."""
    _run("diffusion", model, config, dataset, out, steps, init, resume, store, strategy, as_json, tokenizer_checkpoint,
         max_seconds)


@train_app.command("autoregressive")
def autoregressive(model: Model, config: Config, dataset: Dataset, out: Out, steps: Steps = None,
                   init: Init = None, resume: Resume = False, store: Store = None, strategy: Strategy = None,
                   as_json: Json = False, tokenizer_checkpoint: TokCkpt = None,
                   max_seconds: MaxSeconds = None) -> None:
    """Train an autoregressive world model (decoder-only transformer over DV tokens) on a dataset version."""
    _run("autoregressive", model, config, dataset, out, steps, init, resume, store, strategy, as_json,
         tokenizer_checkpoint, max_seconds)
