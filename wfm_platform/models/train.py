"""Train and post-train world models (both families, one loop) on a versioned dataset.

    cfg = load_train_config("configs/train/world_tiny.yaml", steps=200)
    r = train("diffusion", "diffusion-tiny", cfg, "city@1.0.0", "runs/dit")           # one process
    r = train("diffusion", "diffusion-tiny", cfg, "zoo@1.0.0", "runs/dit-zoo", init="runs/dit")  # post-train
    torchrun --nproc_per_node 2 -m wfm_platform.models.train autoregressive --model ar-tiny \
        --config configs/train/world_tiny.yaml --dataset city@1.0.0 --out runs/ar     # DDP / FSDP

Loop: model.training_loss(batch) (models/base.py), AdamW, linear warm-up then cosine decay to
min_lr_ratio * lr, gradient clipping, bf16 autocast on CUDA, optional activation checkpointing.
strategy ddp: DistributedDataParallel; fsdp: FSDP2 `fully_shard` on each of model.blocks, then the root;
the full state dict is gathered for the checkpoint (rank 0 writes). Gloo on CPU, NCCL on GPU
(tokenizer/train.py's setup_distributed).

The run folder is a checkpoint folder (checkpoint.py): model.pt, train_state.pt (optimizer, scheduler,
per-rank RNG states, data position: exact resume), loss.jsonl, train_config.yaml, cache/ (encoded clips).
Every checkpoint records the exact dataset version ("NAME@VERSION" + digest) it was trained on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import yaml
from pydantic import BaseModel, Field, field_validator

from ..config_io import read_yaml_mapping, trim_jsonl, with_overrides
from ..storage.objectstore import default_store
from ..tokenizer.train import (
    Dist,
    _all_reduce,
    _atomic_save,
    _rng_state,
    _set_rng_state,
    lr_factor,
    setup_distributed,
    time_is_up,
)
from .checkpoint import (
    LOG_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)
from .data import EncodeConfig, EncodedClipStream, batches, resolve_dataset, tokenizer_identity

log = logging.getLogger(__name__)

CONFIG_NAME = "train_config.yaml"
FAMILIES = ("diffusion", "autoregressive")


class TrainConfig(BaseModel):
    model_config = {"extra": "forbid"}

    model: dict = Field(default_factory=dict, description="overrides of the preset's model config")
    tokenizer_checkpoint: str | None = Field(
        None, description="trained tokenizer (run folder / .pt / TorchScript folder); None: random weights of "
        "the preset's tokenizer (pipeline tests only)")
    text_encoder: str = Field("minilm", description='"minilm" or "t5:/path/to/t5"')
    num_frames: int = Field(17, ge=1, description="frames per clip window: 1 + t*n (t: tokenizer's temporal "
                            "compression)")
    size: tuple[int, int] = Field((64, 64), description="(height, width) of the window, multiples of the "
                                  "tokenizer's spatial compression")
    resize_short: int | None = None
    random_window: bool = Field(True, description="random start/crop per clip (fixed for the run)")
    cache: bool = Field(True, description="cache encoded clips under {out}/cache (epochs 2+ skip the tokenizer)")
    batch_size: int = Field(2, ge=1, description="per process")
    steps: int = Field(1000, ge=1)
    max_seconds: float | None = Field(None, gt=0, description="stop (with a checkpoint) once training has "
                                      "run this long, even before `steps`; --resume continues the schedule")
    lr: float = Field(3e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to lr * this")
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="0: no clipping")
    strategy: Literal["ddp", "fsdp"] = "ddp"
    bf16: bool = Field(True, description="bf16 autocast on GPU (ignored on CPU)")
    activation_checkpointing: bool = False
    seed: int = 0
    log_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    threads: int | None = Field(None, description="torch CPU threads per process (None: torch default)")
    latent_stats_clips: int = Field(16, ge=0, description="diffusion: estimate latent shift/scale on this many "
                                    "clips before training from scratch (0: keep the preset's)")

    @field_validator("size")
    @classmethod
    def _size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 8:
            raise ValueError(f"size {v} too small (>= 8 pixels per side)")
        return v


def load_train_config(path: str | os.PathLike | None = None, **overrides) -> TrainConfig:
    """TrainConfig from YAML (None: defaults) with keyword overrides (None values ignored)."""
    data = read_yaml_mapping(path, example="configs/train/world_tiny.yaml")
    return with_overrides(TrainConfig, data, overrides)


# ---------------------------------------------------------------- model + tokenizer
STAT_KEYS = ("latent_shift", "latent_scale")  # diffusion latent normalisation, estimated from the data


def _family(family: str):
    from .presets import family_module

    return family_module(family)


def _arch(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in STAT_KEYS}


def preset_config(family: str, preset: str, overrides: dict | None = None):
    """(model Config, preset name) for `wfm train FAMILY --model PRESET`; a family mismatch is an error."""
    from . import presets

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")
    fam, mcfg = presets.load_preset(preset, **(overrides or {}))
    if fam != family:
        raise ValueError(f"--model {preset} is in the {fam} family, not {family}: run `wfm train {fam}` "
                         f"or pick a {family} preset (`wfm models list`)")
    return mcfg, presets.read_preset(preset).name


_TOK_RE = re.compile(r"^(cv|dv|ci|di)(\d+)x(\d+)(?:x(\d+))?$")


def load_data_tokenizer(model_cfg, checkpoint: str | None, device: torch.device):
    """The frozen tokenizer the model's config names; a checkpoint must match its kind and compression."""
    from ..tokenizer.train import load_tokenizer

    tok = load_tokenizer(checkpoint, name=model_cfg.tokenizer, preset=model_cfg.tokenizer_preset, device=device)
    m = _TOK_RE.match(model_cfg.tokenizer)
    if m:
        kind = "cv" if m.group(1) in ("cv", "ci") else "dv"
        t, s = (int(m.group(2)), int(m.group(3))) if m.group(4) else (1, int(m.group(2)))
        got = (tok.kind, tok.temporal_compression, tok.spatial_compression)
        if got != (kind, t, s):
            raise CheckpointError(f"tokenizer checkpoint {checkpoint} is {got[0]} {got[1]}x{got[2]}x{got[2]}, "
                                  f"the model expects {model_cfg.tokenizer}")
    for p in tok.parameters():
        p.requires_grad_(False)  # frozen: the world model learns on its latents
    return tok.eval()


# ---------------------------------------------------------------- wrapping
EXTERNAL_METHODS = ("text_kv",)  # block-submodule methods models call outside a block's forward


class _LossModule(torch.nn.Module):
    """forward(batch) = model.training_loss(batch): DDP and FSDP hook into forward()."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.m = model

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        return self.m.training_loss(batch)


def _sharded(cfg: TrainConfig, d: Dist) -> bool:
    """FSDP applies wherever a process group exists, one process included (torchrun with WORLD_SIZE=1 makes
    none; a caller that made one gets the same sharded code path a multi-GPU run takes)."""
    return cfg.strategy == "fsdp" and (d.world_size > 1 or dist.is_initialized())


def _wrap(model: torch.nn.Module, cfg: TrainConfig, d: Dist) -> tuple[_LossModule, torch.nn.Module]:
    """(the module whose parameters the optimizer owns, the module to call)."""
    root = _LossModule(model)
    if _sharded(cfg, d):
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, torch.nn.ModuleList):
            raise TypeError(f"{type(model).__name__} has no ModuleList `blocks`: FSDP wraps each block")
        for b in blocks:
            # a block's submodule whose method the model calls outside the block's forward (the AR model's
            # cached text K/V: `blk.cross.text_kv`) becomes its own FSDP unit with that method registered,
            # else it would see sharded parameters
            for sub in b.modules():
                names = [n for n in EXTERNAL_METHODS if callable(getattr(sub, n, None))]
                if names and sub is not b:
                    fully_shard(sub)
                    for n in names:
                        register_fsdp_forward_method(sub, n)
            fully_shard(b)
        fully_shard(root)  # embeddings, heads, norms: the root's parameter group
        return root, root
    if d.world_size == 1:
        return root, root
    ids = [d.device.index] if d.device.type == "cuda" else None
    # find_unused_parameters: some parameters take part only in some steps (the null text of
    # classifier-free guidance, Video2World-only paths); DDP must not wait for their gradients
    return root, torch.nn.parallel.DistributedDataParallel(root, device_ids=ids, find_unused_parameters=True)


def _full_state(root: _LossModule, opt, cfg: TrainConfig, d: Dist) -> tuple[dict, dict, str]:
    """(full model state dict, optimizer state dict, its format); collective under FSDP (rank 0 gets them).

    Without sharding the optimizer's own state_dict is exact. Under FSDP it is gathered to a full, name-keyed
    one (torch.distributed.checkpoint.state_dict), which any world size can load back."""
    if not _sharded(cfg, d):
        return root.m.state_dict(), opt.state_dict(), "torch"
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    osd = get_optimizer_state_dict(root, opt, options=opts)
    msd = {k.removeprefix("m."): v for k, v in get_model_state_dict(root, options=opts).items()}
    return msd, osd, "full"


def _load_optimizer(root: _LossModule, opt, state: dict, cfg: TrainConfig, d: Dist) -> None:
    fmt = state.get("optimizer_format", "torch")
    sharded = _sharded(cfg, d)
    if fmt == "torch" and not sharded:
        opt.load_state_dict(state["optimizer"])
        return
    if fmt == "torch":
        raise CheckpointError("this checkpoint was trained without FSDP: resume it with strategy ddp (or one "
                              "process), or post-train from it with --init under FSDP")
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    # strict=False: parameters that got no gradient yet (e.g. the null text of classifier-free guidance
    # before its first dropped caption) have no AdamW state. torch then initialises one for them, so their
    # first update differs slightly from an uninterrupted run (only there; the unsharded path is exact)
    set_optimizer_state_dict(root, opt, state["optimizer"], options=StateDictOptions(full_state_dict=True, strict=False))


def _lr_lambda(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    return lambda i: lr_factor(i, total, cfg.warmup_steps, cfg.min_lr_ratio)  # i = optimizer steps taken so far


# ---------------------------------------------------------------- training
@dataclass
class TrainResult:
    out_dir: Path
    step: int
    losses: list[float]  # this run's per-step loss (mean over ranks)
    steps_per_s: float
    checkpoint: Path
    dataset: str  # "NAME@VERSION" actually read
    model: torch.nn.Module | None = None  # the trained model (unwrapped; under FSDP its params are sharded)
    cache_hits: int = 0
    cache_misses: int = 0


def train(family: str, preset: str, cfg: TrainConfig, dataset: str, out_dir: str | os.PathLike, *,
          steps: int | None = None, init: str | os.PathLike | None = None, resume: bool = False, store=None,
          text_encoder=None, on_step: Callable[[int, int, dict], None] | None = None) -> TrainResult:
    """Train `preset` (a name in configs/models/ or a YAML path) of `family` on dataset "NAME@VERSION"
    until `steps` (total, counting resumed ones; default cfg.steps). Returns on every rank.

    init: a checkpoint to post-train from (weights only; new optimizer). resume: continue out_dir exactly.
    store: the object store holding the dataset registry (default: WFM_STORAGE_ROOT or ./data/store).
    text_encoder: an object with .encode/.dim (default: models.text.load_text_encoder(cfg.text_encoder)).
    """
    d = setup_distributed()
    try:
        return _train(family, preset, cfg, dataset, Path(out_dir), d, steps or cfg.steps, init, resume,
                      store or default_store(), text_encoder, on_step)
    finally:
        if d.initialized_here:
            dist.destroy_process_group()


def _train(family, preset, cfg: TrainConfig, dataset, out: Path, d: Dist, total: int, init, resume: bool,
           store, text_encoder, on_step) -> TrainResult:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    mfile, sfile = out / MODEL_FILE, out / STATE_FILE
    if mfile.exists() and not resume:
        raise CheckpointError(f"{mfile} exists: pass --resume to continue it, or choose another --out")
    if resume and not (mfile.exists() and sfile.exists()):
        raise CheckpointError(f"--resume: no checkpoint with training state in {out} "
                              f"({MODEL_FILE} + {STATE_FILE})")
    if resume and init is not None:
        raise ValueError("--resume continues a run, --init starts a new one from weights: give one of them")
    dv = resolve_dataset(dataset, store)  # before any model is built: a wrong name fails fast
    mcfg, preset_name = preset_config(family, preset, cfg.model)
    state = ck = None
    if resume:
        ck = read_checkpoint(mfile)
        if ck["family"] != family or _arch(ck["config"]) != _arch(mcfg.model_dump()):
            raise CheckpointError(f"{mfile} was trained as {ck['family']} with another model config; "
                                  "resume with the same --model and --config")
        if ck.get("dataset") != dv.ref:
            raise CheckpointError(f"{mfile} was trained on {ck.get('dataset')}, not {dv.ref}: resume on the same "
                                  "dataset, or post-train on the new one with --init")
        mcfg = type(mcfg).model_validate(ck["config"])  # exactly what was trained (latent stats included)
        state = torch.load(sfile, map_location="cpu", weights_only=False)
        if int(state["step"]) != int(ck["step"]):
            raise CheckpointError(f"{out}: {MODEL_FILE} is at step {ck['step']}, {STATE_FILE} at {state['step']} "
                                  "(interrupted while saving); resume is not exact, post-train with --init")
    elif init is not None:
        ck = read_checkpoint(init)
        if ck["family"] != family:
            raise CheckpointError(f"--init {init} is a {ck['family']} checkpoint; --model {preset} is {family}: "
                                  f"post-train with `wfm train {ck['family']}` and a {ck['family']} preset")
        # the weights were learned for the checkpoint's latent normalisation: keep it
        keep = {k: ck["config"][k] for k in STAT_KEYS if k in ck["config"] and k not in cfg.model}
        mcfg = type(mcfg).model_validate({**mcfg.model_dump(), **keep})

    # frozen data models before the RNG is (re)set: loading them may seed or draw from it
    tok = load_data_tokenizer(mcfg, cfg.tokenizer_checkpoint, d.device)
    if text_encoder is None:
        from .text import load_text_encoder

        text_encoder = load_text_encoder(cfg.text_encoder)
    if text_encoder.dim != mcfg.text_dim:
        raise ValueError(f"text encoder {cfg.text_encoder} gives {text_encoder.dim}-d embeddings, the model "
                         f"expects text_dim={mcfg.text_dim}: set model.text_dim in the config")
    enc = EncodeConfig(num_frames=cfg.num_frames, size=tuple(cfg.size), resize_short=cfg.resize_short,
                       random_window=cfg.random_window, seed=cfg.seed)

    def stream_for(rank: int, world: int, skip: int = 0, epochs: int | None = None) -> EncodedClipStream:
        tid = tokenizer_identity(tok, mcfg.tokenizer, mcfg.tokenizer_preset, cfg.tokenizer_checkpoint)
        return EncodedClipStream(dv.as_shard_manifest(), family=family, tokenizer=tok, text_encoder=text_encoder,
                                 cfg=enc, tokenizer_id=tid, text_encoder_id=cfg.text_encoder,
                                 cache_dir=out / "cache" if cfg.cache else None, store=store, rank=rank,
                                 world_size=world, skip=skip, epochs=epochs, device=d.device)

    if family == "diffusion" and ck is None and cfg.latent_stats_clips and not (set(STAT_KEYS) & set(cfg.model)):
        # latent normalisation from the data (same clips on every rank: identical configs)
        from .diffusion import estimate_latent_stats

        lat = [it["latents"][None] for _, it in zip(range(cfg.latent_stats_clips), stream_for(0, 1, epochs=1))]
        stats = estimate_latent_stats(lat)
        log.info("latent stats from %d clips: shift %s, scale %s", len(lat), stats["latent_shift"][:4],
                 stats["latent_scale"][:4])
        mcfg = type(mcfg).model_validate({**mcfg.model_dump(), **stats})

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = _family(family).build_model(mcfg)
    model.preset = preset_name
    if ck is not None:
        load_weights(model, ck["state_dict"], str(mfile if resume else init))
    if init is not None:
        log.info("post-training from %s (step %s, dataset %s) on %s", init, ck.get("step"), ck.get("dataset"),
                 dv.ref)
    torch.manual_seed(cfg.seed + 1 + d.rank)  # different noise per rank from here on
    if hasattr(model, "enable_activation_checkpointing"):
        model.enable_activation_checkpointing(cfg.activation_checkpointing)
    elif cfg.activation_checkpointing:
        raise TypeError(f"{type(model).__name__} has no enable_activation_checkpointing")
    model.to(d.device).train()
    root, call = _wrap(model, cfg, d)
    opt = torch.optim.AdamW(root.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    # the schedule spans the configured run (cfg.steps), not where this invocation stops: a run stopped
    # early and resumed sees the same learning rates as an uninterrupted one
    horizon = max(cfg.steps, total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, horizon))
    step, data_pos = 0, 0
    if state is not None:
        _load_optimizer(root, opt, state, cfg, d)
        sched.load_state_dict(state["scheduler"])
        step, data_pos = int(state["step"]), int(state["data_position"])
        if state.get("lr_horizon", horizon) != horizon:
            log.warning("lr schedule spans %d steps now, %d before: learning rates differ from an uninterrupted "
                        "run", horizon, state["lr_horizon"])
        rngs = state["rng"]
        if len(rngs) == d.world_size:
            _set_rng_state(rngs[d.rank])
        else:
            log.warning("resuming %d-process RNG states on %d processes: noise differs from an "
                        "uninterrupted run", len(rngs), d.world_size)
            _set_rng_state(rngs[d.rank % len(rngs)])
        log.info("resumed %s at step %d", out, step)

    meta = {"preset": preset_name, **dv.training_record(),
            "tokenizer": {"name": mcfg.tokenizer, "preset": mcfg.tokenizer_preset,
                          "checkpoint": cfg.tokenizer_checkpoint},
            "text_encoder": cfg.text_encoder, "init": str(init) if init else None,
            "strategy": cfg.strategy, "world_size": d.world_size, "train_config": json.loads(cfg.model_dump_json())}

    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))
        if resume:
            trim_jsonl(out / LOG_FILE, step)
        else:
            (out / LOG_FILE).write_text("")
    if d.world_size > 1:
        dist.barrier()  # the cache folder exists before any rank writes into it

    stream = stream_for(d.rank, d.world_size, skip=data_pos)
    use_bf16 = cfg.bf16 and d.device.type == "cuda"
    losses: list[float] = []
    last_index = data_pos - 1
    t0, start_step = time.perf_counter(), step
    stopped_on_time = False

    def save() -> None:
        pos = int(_all_reduce(torch.tensor(last_index + 1, device=d.device), d, dist.ReduceOp.MAX))
        msd, osd, fmt = _full_state(root, opt, cfg, d)
        rngs = [_rng_state()]
        if d.world_size > 1:
            rngs = [None] * d.world_size
            dist.all_gather_object(rngs, _rng_state())
        if d.main:
            # model.pt last: a crash between the two writes leaves mismatched steps, which resume refuses
            _atomic_save({"optimizer": osd, "optimizer_format": fmt, "scheduler": sched.state_dict(), "rng": rngs, "step": step,
                          "data_position": pos, "world_size": d.world_size, "lr_horizon": horizon}, sfile)
            save_checkpoint(out, model, step=step, meta=meta, state_dict=msd)

    if step < total:
        for batch in batches(stream, cfg.batch_size):
            b = {k: v.to(d.device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss, logs = call(b)
            loss = loss.float()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {float(loss)} at step {step + 1}; lower lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            parts = {k: float(v) for k, v in (logs or {}).items() if k != "loss"}
            if cfg.grad_clip > 0:
                gn = torch.nn.utils.clip_grad_norm_(root.parameters(), cfg.grad_clip)
                parts["grad_norm"] = float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn)
            lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            step += 1
            last_index = batch["last_index"]
            mean_loss = float(_all_reduce(loss.detach(), d)) / d.world_size
            losses.append(mean_loss)
            if d.main and (step % cfg.log_every == 0 or step == total):
                with open(out / LOG_FILE, "a") as f:
                    f.write(json.dumps({"step": step, "loss": mean_loss, **parts, "lr": lr,
                                        "time": time.time()}) + "\n")
            if on_step is not None and d.main:
                on_step(step, total, {"loss": mean_loss, **parts})
            stopped_on_time = time_is_up(t0, cfg.max_seconds, d, step, total)
            if step % cfg.checkpoint_every == 0 or step >= total or stopped_on_time:
                save()
            if step >= total or stopped_on_time:
                break
    if step < total and not stopped_on_time:
        raise RuntimeError(f"data stream ended at step {step} of {total}")
    elapsed = time.perf_counter() - t0
    sps = (step - start_step) / elapsed if elapsed > 0 and step > start_step else 0.0
    if d.main:
        log.info("trained %s to step %d on %s (%.3f steps/s, cache %d hits / %d misses)", preset_name, step,
                 dv.ref, sps, stream.hits, stream.misses)
    return TrainResult(out, step, losses, sps, mfile, dv.ref, model, stream.hits, stream.misses)


# ---------------------------------------------------------------- a sample for previews
@torch.no_grad()
def sample_frames(model: torch.nn.Module, tokenizer, text_encoder, prompt: str, *, num_frames: int,
                  size: tuple[int, int], seed: int = 0, **sampling):
    """uint8 frames [T,H,W,3] of one short sample: prompt -> text encoder -> model.generate -> tokenizer decode.

    num_frames (1 + t*n) and size (h, w) in pixels, as in the training config."""
    from ..tokenizer.model import tensor_to_frames
    from ..tokenizer.tiling import decode_tiled

    t, s = tokenizer.temporal_compression, tokenizer.spatial_compression
    shape = (1 + (num_frames - 1) // t, size[0] // s, size[1] // s)
    emb, mask = text_encoder.encode([prompt])
    dev = next(model.parameters()).device
    if model.family != "diffusion":
        sampling.pop("steps", None)  # diffusion-only knob
    z = model.generate(emb.to(dev), mask.to(dev), shape=shape, seed=seed, **sampling)
    x = decode_tiled(tokenizer, z.to(next(tokenizer.parameters()).device), num_frames=num_frames, size=tuple(size))
    return tensor_to_frames(x.float().clamp(-1, 1))[0]


def preview_jpeg(model, tokenizer, text_encoder, prompt: str, *, num_frames: int, size: tuple[int, int],
                 frames: int = 6, **sampling) -> bytes:
    """A thumbnail strip (JPEG) of `frames` evenly spaced frames of a generated sample."""
    from ..video.thumbs import jpeg_bytes, strip

    video = sample_frames(model, tokenizer, text_encoder, prompt, num_frames=num_frames, size=size, **sampling)
    idx = np.linspace(0, len(video) - 1, min(frames, len(video))).astype(int)
    return jpeg_bytes(strip([video[i] for i in idx], height=max(64, min(size[0], 160))))


# ---------------------------------------------------------------- torchrun entry point
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wfm_platform.models.train",
                                 description="Train a world model (torchrun-compatible).")
    ap.add_argument("family", choices=FAMILIES)
    ap.add_argument("--model", required=True, help="preset name (configs/models/) or YAML path")
    ap.add_argument("--config", required=True, help="training config YAML (configs/train/world_tiny.yaml)")
    ap.add_argument("--dataset", required=True, help="NAME@VERSION")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--max-seconds", type=float, help="stop with a checkpoint after this much training time")
    ap.add_argument("--init")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--store", help="object-store root holding the datasets (default: WFM_STORAGE_ROOT)")
    ap.add_argument("--strategy", choices=["ddp", "fsdp"])
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..storage.objectstore import ObjectStore

    cfg = load_train_config(a.config, strategy=a.strategy, max_seconds=a.max_seconds)
    r = train(a.family, a.model, cfg, a.dataset, a.out, steps=a.steps, init=a.init, resume=a.resume,
              store=ObjectStore(a.store) if a.store else None)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"step": r.step, "dataset": r.dataset, "steps_per_s": r.steps_per_s,
                          "checkpoint": str(r.checkpoint), "first_loss": r.losses[0] if r.losses else None,
                          "last_loss": r.losses[-1] if r.losses else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
