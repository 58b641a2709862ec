"""CLI for the tokenizer: `tokenizer_app` (train, eval) and `tokenize_app` (encode, decode, roundtrip).

Mounted by wfm_platform/cli.py as `wfm tokenizer ...` and `wfm tokenize ...`. Progress and messages go
to stderr; `--json` prints machine-readable results on stdout. Errors exit with code 2 and one line
saying what is wrong and what to do.

Token files (`wfm tokenize encode --out FILE`): .npz or .pt holding "latent" (CV, float16 [1,C,T',h,w])
or "indices" (DV, int [1,T',h,w]) plus what decoding needs: tokenizer name, preset, kind, checkpoint
(absolute path or ""), num_frames, height, width, fps, seed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..progress import training_progress
from .tokens import load_tokens, save_tokens

# torch is imported inside the commands: `wfm --help` stays fast

log = logging.getLogger(__name__)
err = Console(stderr=True)

tokenizer_app = typer.Typer(help="Train and evaluate video tokenizers.", no_args_is_help=True,
                            add_completion=False, pretty_exceptions_enable=False)
tokenize_app = typer.Typer(help="Encode videos to tokens, decode tokens to video.", no_args_is_help=True,
                           add_completion=False, pretty_exceptions_enable=False)


def _fail(msg: str) -> None:
    err.print(f"[red]error:[/red] {escape(msg)}", highlight=False, markup=True, soft_wrap=True)  # no wrapping: paths stay whole
    raise typer.Exit(2)


def _user_errors():
    """Exceptions that are the user's input (bad path, name, config) rather than our bug."""
    from ..video import VideoError
    from .data import ShardSourceError
    from .model import TokenizerInputError
    from .train import CheckpointError

    return (FileNotFoundError, CheckpointError, ShardSourceError, VideoError, TokenizerInputError, ValueError)


# ---------------------------------------------------------------- wfm tokenizer train / eval
@tokenizer_app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Option(help="training YAML, e.g. configs/tokenizer/train_tiny.yaml")],
    out: Annotated[Path, typer.Option(help="run folder: checkpoint.pt, loss.jsonl, train_config.yaml")],
    shards: Annotated[list[str] | None, typer.Option(help="manifest.json (or shard .tar URLs; repeat the "
                                                     "option); or use --dataset")] = None,
    dataset: Annotated[str | None, typer.Option(help="NAME@VERSION (or NAME: its latest version) from "
                                                "`wfm dataset list`; or use --shards")] = None,
    store: Annotated[str, typer.Option(help="with --dataset: the object-store root holding it (path or "
                                       "file/s3/gs/az URI); default $WFM_STORAGE_ROOT or data/store")] = "",
    steps: Annotated[int | None, typer.Option(help="train until this total step (default: config)")] = None,
    init: Annotated[Path | None, typer.Option(help="fine-tune from this checkpoint (weights only)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the checkpoint in --out")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    tokenizer: Annotated[str | None, typer.Option(help="tokenizer name, e.g. cv8x8x8 (default: config)")] = None,
    preset: Annotated[str | None, typer.Option(help="width preset, e.g. tiny (default: config)")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="stop with a checkpoint after this much training "
                                                      "time (a time budget; --resume goes on)")] = None,
) -> None:
    """Train (or fine-tune) a tokenizer on a dataset version or on curated WebDataset shards.

    Give --dataset NAME@VERSION or --shards; the checkpoint records which. For several processes:

    torchrun --nproc_per_node N -m wfm_platform.tokenizer.train --config ... --dataset ... --out ..."""
    from ..storage.objectstore import default_store
    from .train import load_train_config, train

    if bool(shards) == bool(dataset):
        _fail("give exactly one of --shards (manifest.json or shard URLs) and --dataset NAME[@VERSION]")
    try:
        cfg = load_train_config(config, tokenizer=tokenizer, preset=preset, max_seconds=max_seconds)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    if store and not dataset:
        _fail("--store is where --dataset versions are looked up; with --shards give the manifest or "
              "shard URLs")
    st = None
    if dataset:
        from ..storage.objectstore import ObjectStore

        st = ObjectStore(store) if store else default_store()
    total = steps or cfg.steps
    with training_progress("train", total, err, disable=as_json) as on_step:
        try:
            src = None if not shards else (shards[0] if len(shards) == 1 else shards)
            r = train(cfg, src, out, steps=steps, init=init, resume=resume, store=st, dataset=dataset,
                      on_step=on_step)
        except _user_errors() as e:
            _fail(str(e))  # DatasetError (unknown name/version) is a ValueError
    res = {"out": str(r.out_dir), "step": r.step, "checkpoint": str(r.checkpoint), "steps_per_s": r.steps_per_s,
           "first_loss": r.losses[0] if r.losses else None, "last_loss": r.losses[-1] if r.losses else None,
           "data": r.data}
    if as_json:
        typer.echo(json.dumps(res))
    else:
        what = r.data.get("dataset") or f"{len(r.data.get('shards', []))} shard(s)"
        err.print(f"step {r.step} on {what}: checkpoint {r.checkpoint} (loss log {r.out_dir / 'loss.jsonl'})")


@tokenizer_app.command("eval")
def eval_cmd(
    videos: Annotated[list[Path], typer.Argument(help="videos to reconstruct")],
    checkpoint: Annotated[Path, typer.Option(help="run folder / checkpoint.pt, or a TorchScript folder")],
    frames: Annotated[int | None, typer.Option(help="first N frames of each video (default: all)")] = 33,
    max_side: Annotated[int | None, typer.Option(help="resize so the long side is at most this")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print {overall, videos} as JSON")] = False,
) -> None:
    """Reconstruction PSNR / SSIM as TokenBench computes them (per video, then the mean)."""
    from .train import evaluate_videos, load_tokenizer

    try:
        tok = load_tokenizer(checkpoint)
        res = evaluate_videos(tok, videos, num_frames=frames, max_side=max_side)
    except _user_errors() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(res))
        return
    for v, m in res["videos"].items():
        err.print(f"{v}: PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  ({m['frames']} frames)")
    err.print(f"overall: PSNR {res['overall']['psnr']:.2f} dB  SSIM {res['overall']['ssim']:.4f}")


# ---------------------------------------------------------------- wfm tokenize encode / decode / roundtrip
def _tokenizer(name: str | None, checkpoint: Path | None, preset: str, seed: int = 0):
    from .registry import load_config
    from .train import load_tokenizer

    if checkpoint is None and name is not None:
        load_config(name, preset)  # unknown name or preset -> ValueError listing the known ones
    return load_tokenizer(checkpoint, name=name, preset=preset, seed=seed)


def _name_of(tok, fallback: str | None) -> str:
    cfg = getattr(tok, "config", None)
    return cfg.name if cfg is not None else (fallback or "jit")


# The options that pick a tokenizer and read a video, shared by `tokenize encode` and `tokenize roundtrip`.
TokenizerOpt = Annotated[str | None, typer.Option(help="tokenizer name, e.g. cv8x8x8 (random weights unless "
                                                       "--checkpoint)")]
CheckpointOpt = Annotated[Path | None, typer.Option(help="our run folder or a TorchScript folder")]
PresetOpt = Annotated[str, typer.Option(help="width preset when no checkpoint is given")]
FramesOpt = Annotated[int | None, typer.Option(help="first N frames only")]
MaxSideOpt = Annotated[int | None, typer.Option(help="resize so the long side is at most this")]


@tokenize_app.command("encode")
def encode_cmd(
    video: Annotated[Path, typer.Argument(help="input video")],
    out: Annotated[Path, typer.Option(help="token file: .npz or .pt")],
    tokenizer: TokenizerOpt = None,
    checkpoint: CheckpointOpt = None,
    preset: PresetOpt = "default",
    frames: FramesOpt = None,
    max_side: MaxSideOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Encode a video into continuous latents (CV) or discrete indices (DV)."""
    import torch

    from .model import frames_to_tensor
    from .tiling import encode_tiled
    from .train import read_video

    if out.suffix not in (".npz", ".pt"):
        _fail(f"--out {out}: use a .npz or .pt file name")
    if tokenizer is None and checkpoint is None:
        _fail("give --tokenizer NAME and/or --checkpoint DIR")
    try:
        tok = _tokenizer(tokenizer, checkpoint, preset)
        arr, fps = read_video(video, frames, max_side)
        with torch.no_grad():
            z = encode_tiled(tok, frames_to_tensor(arr))
    except _user_errors() as e:
        _fail(str(e))
    meta = {"tokenizer": _name_of(tok, tokenizer), "preset": getattr(getattr(tok, "config", None), "preset", preset),
            "kind": tok.kind, "checkpoint": str(checkpoint.resolve()) if checkpoint else "", "seed": 0,
            "num_frames": int(arr.shape[0]), "height": int(arr.shape[1]), "width": int(arr.shape[2]),
            "fps": float(fps), "source": str(video), "shape": list(z.shape)}
    save_tokens(out, z, meta)
    if as_json:
        typer.echo(json.dumps({"out": str(out), **meta}))
    else:
        err.print(f"{video} -> {out}: {tok.kind} tokens {tuple(z.shape)}")


@tokenize_app.command("decode")
def decode_cmd(
    tokens: Annotated[Path, typer.Argument(help="token file from `wfm tokenize encode`")],
    out: Annotated[Path, typer.Option(help="output .mp4 (H.264)")],
    checkpoint: Annotated[Path | None, typer.Option(help="override the checkpoint stored in the file")] = None,
    crf: Annotated[int, typer.Option(help="H.264 quality (lower: better)")] = 18,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Decode a token file back to an H.264 mp4 with the tokenizer that made it."""
    import torch

    from ..video import write_mp4
    from .model import tensor_to_frames
    from .tiling import decode_tiled

    try:
        z, meta = load_tokens(tokens)
        ck = checkpoint or (Path(meta["checkpoint"]) if meta.get("checkpoint") else None)
        tok = _tokenizer(meta["tokenizer"], ck, meta.get("preset", "default"), int(meta.get("seed", 0)))
        if tok.kind != meta["kind"]:
            _fail(f"{tokens} holds {meta['kind']} tokens but the tokenizer is {tok.kind}")
        with torch.no_grad():
            y = decode_tiled(tok, z, num_frames=meta["num_frames"], size=(meta["height"], meta["width"]))
        n = write_mp4(iter(tensor_to_frames(y)[0]), out, fps=meta["fps"], crf=crf)
    except _user_errors() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps({"out": str(out), "frames": n}))
    else:
        err.print(f"{tokens} -> {out}: {n} frames")


@tokenize_app.command("roundtrip")
def roundtrip_cmd(
    video: Annotated[Path, typer.Argument(help="input video")],
    out: Annotated[Path, typer.Option(help="reconstructed .mp4")],
    tokenizer: TokenizerOpt = None,
    checkpoint: CheckpointOpt = None,
    preset: PresetOpt = "default",
    frames: FramesOpt = None,
    max_side: MaxSideOpt = None,
    crf: Annotated[int, typer.Option(help="H.264 quality of the written video")] = 18,
    as_json: Annotated[bool, typer.Option("--json", help="print {psnr, ssim, frames} as JSON")] = False,
) -> None:
    """Encode + decode a video, write the reconstruction, print PSNR / SSIM (measured before H.264)."""
    from ..video import write_mp4
    from .metrics import video_metrics
    from .train import read_video, reconstruct_frames

    if tokenizer is None and checkpoint is None:
        _fail("give --tokenizer NAME and/or --checkpoint DIR")
    try:
        tok = _tokenizer(tokenizer, checkpoint, preset)
        arr, fps = read_video(video, frames, max_side)
        rec = reconstruct_frames(tok, arr)
        m = video_metrics(arr, rec)
        n = write_mp4(iter(rec), out, fps=fps, crf=crf)
    except _user_errors() as e:
        _fail(str(e))
    res = {"psnr": m["psnr"], "ssim": m["ssim"], "frames": n, "out": str(out)}
    if as_json:
        typer.echo(json.dumps(res))
    else:
        err.print(f"{video} -> {out}: PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  ({n} frames)")
