"""`wfm generate text2world|video2world`: run a world model behind the guardrails.

The lead mounts this app with `app.add_typer(generate_app, name="generate")` in wfm_platform/cli.py.

Exit codes: 0 written; 1 bad input or a component that cannot load; 2 prompt refused by the pre-guard
(reason on stderr, nothing generated); 3 output rejected by the post-guard (nothing written).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

generate_app = typer.Typer(help="Generate videos with a world model (Text2World, Video2World), guarded.",
                           no_args_is_help=True)
err = Console(stderr=True)

EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_REJECTED = 1, 2, 3


@generate_app.callback()
def _group() -> None:
    """Generate videos with a world model (Text2World, Video2World), guarded."""


# options shared by both commands (typer has no option groups: a module-level Annotated per option)
Model = Annotated[str, typer.Option("--model", "-m", help="checkpoint folder (model.pt); PRESET@latest for the latest "
                                     "checkpoint trained for a preset (e.g. diffusion-tiny@latest, read from --store); "
                                     "or a bare preset name (untrained weights: pipeline tests only)")]
Store = Annotated[str | None, typer.Option(help="object-store root PRESET@latest is read from (default: "
                                           "$WFM_STORAGE_ROOT, else data/store)")]
Prompt = Annotated[str, typer.Option("--prompt", "-p", help="what the video shows")]
Out = Annotated[Path, typer.Option("--out", "-o", help="the mp4 to write")]
Seed = Annotated[int, typer.Option(help="random seed")]
Steps = Annotated[int | None, typer.Option(help="diffusion sampler steps (default: the model's)")]
Guidance = Annotated[float | None, typer.Option(help="classifier-free guidance scale (diffusion)")]
Frames = Annotated[int | None, typer.Option(help="output frames (default configs/inference.yaml)")]
Width = Annotated[int | None, typer.Option(help="output width in pixels")]
Height = Annotated[int | None, typer.Option(help="output height in pixels")]
Fps = Annotated[float | None, typer.Option(help="frames per second of the mp4")]
TopP = Annotated[float | None, typer.Option("--top-p", help="nucleus sampling (autoregressive)")]
Temp = Annotated[float | None, typer.Option(help="sampling temperature, 0 = greedy (autoregressive)")]
Medusa = Annotated[bool | None, typer.Option("--medusa/--no-medusa", help="Medusa speculative decoding (autoregressive)")]
OffText = Annotated[bool, typer.Option("--offload-text-encoder", help="move the text encoder to CPU after encoding")]
OffTok = Annotated[bool, typer.Option("--offload-tokenizer", help="keep the tokenizer on CPU except while it runs")]
OffModel = Annotated[bool, typer.Option("--offload-model", help="move the world model to CPU after sampling")]
NoGuards = Annotated[bool, typer.Option("--no-guards", help="DISABLE pre- and post-guard (logged, recorded in the JSON)")]
Device = Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")]
Tokenizer = Annotated[str | None, typer.Option(help="tokenizer checkpoint to use instead of the model's")]
TextEnc = Annotated[str | None, typer.Option("--text-encoder", help="minilm | t5:/path (default: the model's)")]
Config = Annotated[Path | None, typer.Option("--config", help="inference YAML (default configs/inference.yaml)")]
ViolationLog = Annotated[str | None, typer.Option("--violation-log", help="object-store root for the violation log")]
AsJson = Annotated[bool, typer.Option("--json", help="print the result as JSON on stdout")]


def _run(mode: str, *, as_json: bool, video: Path | None = None, **kw) -> None:
    from ..storage.objectstore import ObjectStore
    from .checkpoint import CheckpointError, resolve_model_ref

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = kw.pop("config")
    no_guards = kw.pop("no_guards")
    offload = {k: kw.pop(f"offload_{k}") for k in ("text_encoder", "tokenizer", "model")}
    store = kw.pop("store", None)
    guards = {"violation_log": kw.pop("violation_log")}
    if no_guards:
        guards["enabled"] = False
    with contextlib.ExitStack() as stack:
        try:  # PRESET@latest -> the local model.pt of the latest published checkpoint (kept for the whole run)
            kw["model"] = stack.enter_context(resolve_model_ref(kw["model"], ObjectStore(store) if store else None))
        except CheckpointError as e:
            err.print(f"[red]error:[/red] {e}", soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT)
        _generate(mode, as_json, config, video, offload, guards, kw)


def _generate(mode: str, as_json: bool, config, video: Path | None, offload: dict, guards: dict, kw: dict) -> None:
    from .generate import GenerationError, OutputRejected, PromptRefused, generate_video, make_request

    try:
        req = make_request(mode, config=config, video=str(video) if video else None,
                           offload={k: v for k, v in offload.items() if v} or None,
                           guards={k: v for k, v in guards.items() if v is not None}, **kw)
    except (GenerationError, ValueError) as e:  # pydantic ValidationError is a ValueError
        err.print(f"[red]error:[/red] {e}", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, transient=as_json)
    tasks: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    try:
        with bar:
            res = generate_video(req, progress=progress)
    except PromptRefused as e:
        err.print(f"[red]refused:[/red] {e}", soft_wrap=True)
        if as_json:
            typer.echo(json.dumps({"out": None, "allowed": False, "stage": "pre", "reasons": e.verdict.reasons}))
        raise typer.Exit(EXIT_REFUSED)
    except OutputRejected as e:
        err.print(f"[red]rejected:[/red] {e}", soft_wrap=True)
        if as_json:
            d = e.result.model_dump() if e.result is not None else {"out": None, "allowed": False}
            d.update(stage="post", reasons=e.verdict.reasons)
            typer.echo(json.dumps(d))
        raise typer.Exit(EXIT_REJECTED)
    except GenerationError as e:
        err.print(f"[red]error:[/red] {e}", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    if as_json:
        typer.echo(json.dumps(res.model_dump()))
    else:
        note = " [yellow](untrained weights: noise)[/yellow]" if res.untrained else ""
        guards_note = "" if res.guards_enabled else " [red](GUARDS DISABLED)[/red]"
        err.print(f"wrote [bold]{res.out}[/bold]: {res.frames} frames {res.width}x{res.height} @ {res.fps:g} fps, "
                  f"{res.faces_blurred} face(s) blurred, {res.seconds:.1f} s, peak {res.peak_memory_mb:.0f} MB "
                  f"on {res.device}{note}{guards_note}", soft_wrap=True)


@generate_app.command("text2world")
def text2world(model: Model, prompt: Prompt, out: Out, seed: Seed = 0, steps: Steps = None,
               guidance: Guidance = None, frames: Frames = None, width: Width = None, height: Height = None,
               fps: Fps = None, top_p: TopP = None, temperature: Temp = None, medusa: Medusa = None,
               offload_text_encoder: OffText = False, offload_tokenizer: OffTok = False,
               offload_model: OffModel = False, no_guards: NoGuards = False, device: Device = None,
               tokenizer: Tokenizer = None, text_encoder: TextEnc = None, config: Config = None,
               violation_log: ViolationLog = None, store: Store = None, as_json: AsJson = False) -> None:
    """Text -> video."""
    _run("text2world", as_json=as_json, model=model, prompt=prompt, out=out, seed=seed, steps=steps,
         guidance=guidance, frames=frames, width=width, height=height, fps=fps, top_p=top_p,
         temperature=temperature, medusa=medusa, offload_text_encoder=offload_text_encoder,
         offload_tokenizer=offload_tokenizer, offload_model=offload_model, no_guards=no_guards, device=device,
         tokenizer=tokenizer, text_encoder=text_encoder, config=config, violation_log=violation_log, store=store)


@generate_app.command("video2world")
def video2world(model: Model, prompt: Prompt, out: Out,
                video: Annotated[Path, typer.Option("--video", "-v", help="conditioning video (its first frames)")],
                cond_frames: Annotated[int | None, typer.Option(help="conditioning frames, 1 + t*k (default 9)")] = None,
                seed: Seed = 0, steps: Steps = None, guidance: Guidance = None, frames: Frames = None,
                width: Width = None, height: Height = None, fps: Fps = None, top_p: TopP = None,
                temperature: Temp = None, medusa: Medusa = None, offload_text_encoder: OffText = False,
                offload_tokenizer: OffTok = False, offload_model: OffModel = False, no_guards: NoGuards = False,
                device: Device = None, tokenizer: Tokenizer = None, text_encoder: TextEnc = None,
                config: Config = None, violation_log: ViolationLog = None, store: Store = None,
                as_json: AsJson = False) -> None:
    """Text + the first frames of a video -> its continuation (the conditioning frames are kept)."""
    _run("video2world", as_json=as_json, video=video, cond_frames=cond_frames, model=model, prompt=prompt,
         out=out, seed=seed, steps=steps, guidance=guidance, frames=frames, width=width, height=height, fps=fps,
         top_p=top_p, temperature=temperature, medusa=medusa, offload_text_encoder=offload_text_encoder,
         offload_tokenizer=offload_tokenizer, offload_model=offload_model, no_guards=no_guards, device=device,
         tokenizer=tokenizer, text_encoder=text_encoder, config=config, violation_log=violation_log, store=store)
