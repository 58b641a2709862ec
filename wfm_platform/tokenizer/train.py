"""Train, fine-tune and evaluate the video tokenizer.

    cfg = load_train_config("configs/tokenizer/train_tiny.yaml", steps=200)
    result = train(cfg, "data/webdataset_shards/b1/manifest.json", "runs/tok1")      # one process
    result = train(cfg, None, "runs/tok2", dataset="city@1.2.0", store=ObjectStore("data/store"))  # a version
    torchrun --nproc_per_node 2 -m wfm_platform.tokenizer.train --config ... --shards ... --out ...  # DDP
    tok = load_checkpoint("runs/tok1"); evaluate_videos(tok, ["a.mp4"])                # TokenBench metrics

Loss: L1 + SSIM (+ optical-flow consistency, + pluggable perceptual losses), see losses.py. AdamW with a
linear warm-up, gradient clipping, bf16 autocast on GPU. DDP: NCCL on GPU, Gloo on CPU; rank 0 writes.

A run folder holds:
    checkpoint.pt      model, optimizer, step, data position, RNG states, train + tokenizer config, and
                       "dataset": what the run read (see data_record; absent in older checkpoints)
                       (written to a temp name, then renamed: a crash never leaves half a checkpoint)
    train_config.yaml  the resolved training config, plus the same `dataset` record (ignored when the
                       file is loaded back as a --config: data is chosen with --dataset / --shards)
    loss.jsonl         one JSON line per logged step: {"step", "loss", "l1", "ssim", ..., "lr", "time"}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import yaml
from pydantic import BaseModel, Field, field_validator

from ..config_io import read_jsonl, read_yaml_mapping, trim_jsonl, with_overrides
from .data import ClipStream, ClipStreamConfig, batches
from .losses import LossConfig, TokenizerLoss
from .metrics import video_metrics
from .model import TokenizerAPI, VideoTokenizer, frames_to_tensor, tensor_to_frames
from .registry import TokenizerConfig, build_tokenizer
from .tiling import decode_tiled, encode_tiled

log = logging.getLogger(__name__)

CKPT_NAME = "checkpoint.pt"
LOG_NAME = "loss.jsonl"
CONFIG_NAME = "train_config.yaml"
RUN_FILES = (CONFIG_NAME, LOG_NAME, CKPT_NAME)  # a training run's files, uploaded in this order: checkpoint last
DATA_KEY = "dataset"  # checkpoint / train_config.yaml entry recording the data a run read


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


MIN_WINDOW_FRAMES = 9  # the shortest default training window (4x and image tokenizers)


class TrainConfig(BaseModel):
    model_config = {"extra": "forbid"}

    tokenizer: str = Field("cv4x8x8", description="a name from configs/tokenizer/")
    preset: str = Field("tiny", description="width preset (configs/tokenizer/presets.yaml)")
    model: dict = Field(default_factory=dict, description="TokenizerConfig overrides, e.g. {channels: 8}")
    num_frames: int | None = Field(None, ge=1, description="frames per training window: 1 + t*n; unset: "
                                   "1 + 2t (two latent frames after frame 0's), at least 9")
    crop: tuple[int, int] = Field((64, 64), description="(height, width) of the training crop")
    resize_short: int | None = Field(None, description="resize the short side to this before cropping")
    random_crop: bool = True
    augment: list[Literal["flip", "stride", "zoom"]] = Field(
        default_factory=list, description="training-window augmentations (needs random_crop): flip = mirror "
        "half the time, stride = every 2nd frame half the time, zoom = 1-1.5x before cropping")
    batch_size: int = Field(2, ge=1, description="per process")
    steps: int = Field(1000, ge=1)
    max_seconds: float | None = Field(None, gt=0, description="stop (with a checkpoint) once training has run "
                                      "this long, even before `steps`; resume continues the same schedule")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay from lr to lr * this at `steps` "
                                "(1.0: constant lr)")
    grad_clip: float = Field(1.0, ge=0, description="0: no clipping")
    loss: LossConfig = Field(default_factory=LossConfig)
    seed: int = 0
    log_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    bf16: bool = Field(True, description="bf16 autocast on GPU (ignored on CPU)")
    threads: int | None = Field(None, description="torch CPU threads per process (None: torch default)")
    num_workers: int = Field(0, ge=0, description="DataLoader decode processes per rank (0: decode inline; "
                             "resume is exact only with 0)")

    def window_frames(self, temporal_compression: int) -> int:
        """num_frames, or when unset 1 + 2t, at least 9: 9 for 4x and image tokenizers, 17 for 8x ones.
        Two latent frames after frame 0's, because tiled encode/decode runs a model on 4-6 latent frames;
        with 9-frame windows the 8x models saw one and did worse on held-out clips at the same step budget
        (a tie at the same number of frames seen; README)."""
        return self.num_frames or max(MIN_WINDOW_FRAMES, 1 + 2 * temporal_compression)

    def eval_frames(self) -> int:
        """Frames of a held-out evaluation: two windows and one, so the model runs past its training length;
        19 when the window is unset, for every tokenizer (2 x 17 + 1 could outrun short curated clips)."""
        return 2 * (self.num_frames or MIN_WINDOW_FRAMES) + 1

    @field_validator("crop")
    @classmethod
    def _crop(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 8:
            raise ValueError(f"crop {v} too small (>= 8 pixels per side)")
        return v


def load_train_config(path: str | os.PathLike | None = None, **overrides) -> TrainConfig:
    """TrainConfig from YAML (None: defaults) with keyword overrides (None values ignored)."""
    data = read_yaml_mapping(path, example="configs/tokenizer/train_tiny.yaml")
    if DATA_KEY in data:  # a run folder's train_config.yaml reused as a config: a record, not a choice
        log.info("%s: ignoring its `%s` entry (a record of what a run read); choose data with "
                 "--dataset or --shards", path, DATA_KEY)
        data.pop(DATA_KEY)
    return with_overrides(TrainConfig, data, overrides)


def lr_factor(step: int, total: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier after `step` optimizer steps: linear warm-up, then cosine to min_lr_ratio at
    `total` (shared by the tokenizer and world-model trainers)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(max(step - warmup_steps, 0) / max(total - warmup_steps, 1), 1.0)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE > 1), or use one already initialised.

    NCCL when CUDA is available, Gloo otherwise. A single process needs no process group."""
    cuda = torch.cuda.is_available()
    here = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
        here = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    local = int(os.environ.get("LOCAL_RANK", rank))
    if cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    return Dist(rank, world, local, device, here)


def _all_reduce(v: torch.Tensor, d: Dist, op=None) -> torch.Tensor:
    if d.world_size > 1:
        v = v.clone()
        dist.all_reduce(v, op=op or dist.ReduceOp.SUM)
    return v


def time_is_up(t0: float, max_seconds: float | None, d: Dist, step: int, total: int) -> bool:
    """True (and logged) once a run started at perf_counter() t0 has trained max_seconds (None: never);
    every rank gets the same answer, so all stop at the same step. Shared with models/train.py."""
    if max_seconds is None:
        return False
    late = torch.tensor(float(time.perf_counter() - t0 >= max_seconds), device=d.device)
    up = float(_all_reduce(late, d, dist.ReduceOp.MAX)) > 0
    if up and d.main and step < total:
        log.info("max_seconds=%s reached at step %d of %d; stopping with a checkpoint", max_seconds, step, total)
    return up


# ---------------------------------------------------------------- checkpoints
def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # atomic on one filesystem: readers see the old or the new file, never half


def checkpoint_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p / CKPT_NAME if p.is_dir() else p


def read_checkpoint(path: str | os.PathLike) -> dict:
    p = checkpoint_path(path)
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p} (expected a run folder with {CKPT_NAME}, or the .pt file)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for corrupt files
        raise CheckpointError(f"{p} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "tokenizer_config" not in ckpt:
        raise CheckpointError(f"{p} is not a wfm tokenizer checkpoint (no model / tokenizer_config)")
    return ckpt


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> VideoTokenizer:
    """Our trained tokenizer (eval mode) from a run folder or checkpoint file."""
    ckpt = read_checkpoint(path)
    model = VideoTokenizer(TokenizerConfig.model_validate(ckpt["tokenizer_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def load_tokenizer(checkpoint: str | os.PathLike | None = None, name: str | None = None, preset: str = "default",
                   device: str | torch.device = "cpu", seed: int = 0) -> TokenizerAPI:
    """What the CLI decodes/encodes with: a TorchScript folder (encoder.jit/decoder.jit), one of our
    checkpoints (a path, or the URI of a checkpoint.pt in an object store: s3://, gs://, az://, ...), or
    (no checkpoint) a freshly initialised `name` with a fixed seed, which is only good for testing the
    pipeline: its weights are random."""
    if checkpoint is not None and "://" in str(checkpoint):  # a checkpoint file in an object store
        from ..storage.objectstore import local_file

        with local_file(checkpoint) as local:  # read whole by torch.load: the temp copy may go after
            return load_tokenizer(local, name, preset, device, seed)
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.exists():
            raise CheckpointError(f"checkpoint {p} does not exist")
        if p.is_dir() and ((p / "encoder.jit").exists() or (p / "decoder.jit").exists()):
            from .jit import load_jit_tokenizer

            return load_jit_tokenizer(p, device=device)
        return load_checkpoint(p, device)
    if name is None:
        raise ValueError("give a tokenizer name or a checkpoint")
    log.warning("no checkpoint: %s/%s has random weights (seed %d); use it to test the pipeline only",
                name, preset, seed)
    torch.manual_seed(seed)
    return build_tokenizer(name, preset=preset).to(device).eval()


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def load_state_strict(model: torch.nn.Module, state: dict, source: str, what: str,
                      error: type[Exception] = CheckpointError) -> None:
    """Strict load_state_dict; a mismatch raises `error` saying that `source` does not fit `what`
    (with the start of torch's list of missing / unexpected keys). Shared with models/checkpoint.py."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise error(f"{source} does not fit {what}: {str(e)[:300]}") from e


def _load_weights(model: VideoTokenizer, state: dict, source: str) -> None:
    load_state_strict(model, state, source,
                      f"{model.config.name}/{model.config.preset} (different architecture?)")


@contextlib.contextmanager
def run_in_store(store, rel: str, *, resume: bool = False) -> Iterator[Path]:
    """A local folder for the training run kept at `rel` of `store`. A plain local store: the folder itself.
    Any other store: a temp folder (filled from the stored run when `resume` and one exists) whose files are
    uploaded when the block ends without error, checkpoint last, since readers look for checkpoint.pt."""
    if store.is_plain_local:
        yield store.local_path(rel)
        return
    with tempfile.TemporaryDirectory(prefix="wfm-tok-") as tmp:
        out = Path(tmp) / "run"
        out.mkdir()
        if resume and store.exists(f"{rel}/{CKPT_NAME}"):
            for f in RUN_FILES:
                if store.exists(f"{rel}/{f}"):
                    with store.local_copy(f"{rel}/{f}") as src:
                        shutil.copyfile(src, out / f)
        yield out
        for f in RUN_FILES:
            store.put_file(out / f, f"{rel}/{f}")


# ---------------------------------------------------------------- what a run reads
def resolve_training_data(shards, dataset, store) -> tuple[object, dict]:
    """(what ClipStream reads, the record the checkpoint keeps) from exactly one of shards / dataset.

    dataset: "NAME@VERSION", "NAME" (latest, recorded as the exact version it resolved to) or a
    DatasetVersion, looked up in `store`'s DatasetRegistry. Its record is `training_record()`
    ({"dataset": "NAME@VERSION", "dataset_digest", "num_clips", "num_shards"}). A shards run records
    {"shards": [the shard URLs, in order]}."""
    from ..storage.datasets import DatasetRegistry, DatasetVersion
    from .data import ShardSourceError, resolve_shards

    if (shards is None) == (dataset is None):
        raise ValueError("give exactly one of --shards (manifest.json or shard URLs) and "
                         "--dataset NAME[@VERSION]")
    if dataset is None:
        return shards, {"shards": resolve_shards(shards, store)}
    dv = dataset if isinstance(dataset, DatasetVersion) else DatasetRegistry(store).get(str(dataset))
    if not dv.shards:
        raise ShardSourceError(f"{dv.ref} lists no shards (all erased?): nothing to train on; "
                               "choose another version (`wfm dataset list`)")
    log.info("training on dataset %s (%d clips in %d shards, digest %s)", dv.ref, len(dv.clip_ids),
             len(dv.shards), dv.digest[:12])
    return dv.as_shard_manifest(), dv.training_record()


def data_record(checkpoint: str | os.PathLike | dict) -> dict | None:
    """The data a checkpoint was trained on (see resolve_training_data), None for checkpoints written
    before runs recorded it."""
    ck = checkpoint if isinstance(checkpoint, dict) else read_checkpoint(checkpoint)
    return ck.get(DATA_KEY)


def _same_data(old: dict | None, new: dict) -> bool:
    if old is None:  # an older checkpoint: nothing to compare against
        return True
    if "dataset" in old or "dataset" in new:
        return all(old.get(k) == new.get(k) for k in ("dataset", "dataset_digest"))
    return old.get("shards") == new.get("shards")


def _describe(record: dict | None) -> str:
    if not record:
        return "unrecorded data"
    if "dataset" in record:
        return str(record["dataset"])
    return f"{len(record.get('shards', []))} shard(s) starting {record.get('shards', ['?'])[0]}"


# ---------------------------------------------------------------- training
@dataclass
class TrainResult:
    out_dir: Path
    step: int
    losses: list[float]  # this run's per-step total loss (rank 0's view: mean over ranks)
    steps_per_s: float
    checkpoint: Path
    model: VideoTokenizer | None = None  # the trained module (unwrapped from DDP), still in train mode
    data: dict = field(default_factory=dict)  # what it read: {"dataset": "NAME@VER", ...} / {"shards": [...]}


def train(cfg: TrainConfig, shards, out_dir: str | os.PathLike, *, steps: int | None = None,
          init: str | os.PathLike | None = None, resume: bool = False, store=None,
          on_step: Callable[[int, int, dict], None] | None = None, dataset=None) -> TrainResult:
    """Train until `steps` (total, counting resumed ones; default cfg.steps). Returns on every rank.

    shards: manifest.json path/URI, a manifest dict, shard URL(s); or None with
    dataset: "NAME@VERSION" / "NAME" (latest) / a DatasetVersion from `store`'s DatasetRegistry
    (store default: default_store()). The checkpoint records which (see data_record); resume must
    read the same data. init: weights to fine-tune from (checkpoint folder/file; optimizer starts
    fresh). resume: continue out_dir's checkpoint exactly.
    """
    if dataset is not None and store is None:
        from ..storage.objectstore import default_store

        store = default_store()
    d = setup_distributed()
    try:
        return _train(cfg, shards, Path(out_dir), d, steps or cfg.steps, init, resume, store, on_step,
                      dataset)
    finally:
        if d.initialized_here:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, shards, out: Path, d: Dist, total: int, init, resume: bool, store,
           on_step, dataset=None) -> TrainResult:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ckpt_file = out / CKPT_NAME
    if ckpt_file.exists() and not resume and init is None:
        raise CheckpointError(f"{ckpt_file} exists: pass --resume to continue it, or choose another --out")
    if resume and not ckpt_file.exists():
        raise CheckpointError(f"--resume: no checkpoint at {ckpt_file}")
    # before any model is built: a wrong dataset name or a missing shard fails fast
    source, record = resolve_training_data(shards, dataset, store)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts them)
    model = build_tokenizer(cfg.tokenizer, preset=cfg.preset, **cfg.model)
    t = model.temporal_compression
    cfg = cfg.model_copy(update={"num_frames": cfg.window_frames(t)})  # the run's config records the window
    if t > 1 and (cfg.num_frames - 1) % t:
        raise ValueError(f"num_frames={cfg.num_frames} must be 1 + {t}*n for {cfg.tokenizer} "
                         f"(e.g. {1 + t}, {1 + 2 * t}); padded frames would be trained on")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    step, data_pos = 0, 0
    if resume:
        ckpt = read_checkpoint(ckpt_file)
        if ckpt["tokenizer_config"] != model.config.model_dump():
            raise CheckpointError(f"{ckpt_file} was trained with a different tokenizer config; "
                                  "resume with the same --config")
        _load_weights(model, ckpt["model"], str(ckpt_file))
        opt.load_state_dict(ckpt["optimizer"])
        if not _same_data(ckpt.get(DATA_KEY), record):  # data_position only means something on the same data
            raise CheckpointError(f"{ckpt_file} was trained on {_describe(ckpt.get(DATA_KEY))}, not "
                                  f"{_describe(record)}: resume on the same data, or fine-tune on the new "
                                  "data with --init into another --out")
        if DATA_KEY not in ckpt:
            log.warning("%s records no dataset (written before runs recorded it); from now on it records %s",
                        ckpt_file, _describe(record))
        step, data_pos = int(ckpt["step"]), int(ckpt["data_position"])
        _set_rng_state(ckpt["rng"])
        log.info("resumed %s at step %d", ckpt_file, step)
    elif init is not None:
        ck = read_checkpoint(init)
        _load_weights(model, ck["model"], str(init))
        log.info("fine-tuning from %s (step %s there, trained on %s) on %s", init, ck.get("step"),
                 _describe(ck.get(DATA_KEY)), _describe(record))
    model.to(d.device)
    for st in opt.state.values():  # optimizer state follows the model onto the GPU
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "step":
                st[k] = v.to(d.device)

    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        run_cfg = {**json.loads(cfg.model_dump_json()), DATA_KEY: record}
        (out / CONFIG_NAME).write_text(yaml.safe_dump(run_cfg, sort_keys=False))
        if resume:
            trim_jsonl(out / LOG_NAME, step)
        elif not ckpt_file.exists():
            (out / LOG_NAME).write_text("")
    ddp_model: torch.nn.Module = model
    if d.world_size > 1:
        ids = [d.device.index] if d.device.type == "cuda" else None
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    loss_fn = TokenizerLoss(cfg.loss).to(d.device)
    stream = ClipStream(source, ClipStreamConfig(num_frames=cfg.num_frames, size=tuple(cfg.crop),
                                                 resize_short=cfg.resize_short, random_crop=cfg.random_crop,
                                                 augment=tuple(cfg.augment), flow=loss_fn.needs_flow, seed=cfg.seed),
                        store=store, rank=d.rank, world_size=d.world_size, skip=data_pos)
    use_bf16 = cfg.bf16 and d.device.type == "cuda"
    losses: list[float] = []
    last_index = data_pos - 1
    t0, start_step = time.perf_counter(), step

    def save() -> None:
        pos = _all_reduce(torch.tensor(last_index + 1, device=d.device), d, dist.ReduceOp.MAX)
        if d.main:
            _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                          "data_position": int(pos), "rng": _rng_state(),
                          "train_config": json.loads(cfg.model_dump_json()),
                          "tokenizer_config": model.config.model_dump(), DATA_KEY: record}, ckpt_file)
            log.info("checkpoint at step %d -> %s", step, ckpt_file)

    model.train()
    # the lr schedule spans the configured run (cfg.steps): a run stopped early (steps=3) and resumed later
    # follows the same learning rates as an uninterrupted one
    horizon = max(cfg.steps, total)
    stopped_on_time = False
    if step < total:
        for batch in batches(stream, cfg.batch_size, cfg.num_workers):
            lr = cfg.lr * lr_factor(step, horizon, cfg.warmup_steps, cfg.min_lr_ratio)
            for g in opt.param_groups:
                g["lr"] = lr
            x = batch["video"].to(d.device, non_blocking=True)
            flow = batch["flow"].to(d.device) if batch["flow"] is not None else None
            with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out_ = ddp_model(x)
            loss, parts = loss_fn(out_.reconstruction.float(), x, flow, out_.aux)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {float(loss)} at step {step + 1}; lower lr or check data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            opt.step()
            step += 1
            last_index = batch["last_index"]
            mean_loss = float(_all_reduce(loss.detach(), d)) / d.world_size
            losses.append(mean_loss)
            if d.main and (step % cfg.log_every == 0 or step == total):
                rec = {"step": step, "loss": mean_loss, **parts, "lr": lr, "time": time.time()}
                with open(out / LOG_NAME, "a") as f:
                    f.write(json.dumps(rec) + "\n")
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
        log.info("trained to step %d (%.3f steps/s)", step, sps)
    return TrainResult(out, step, losses, sps, ckpt_file, model, record)


def read_loss_log(out_dir: str | os.PathLike) -> list[dict]:
    return read_jsonl(Path(out_dir) / LOG_NAME)


# ---------------------------------------------------------------- evaluation (TokenBench rules)
def read_video(path: str | os.PathLike, num_frames: int | None = None, max_side: int | None = None) -> tuple[np.ndarray, float]:
    """uint8 frames [T,H,W,3] (first num_frames; resized so the long side <= max_side) and the fps."""
    from ..video import VideoError, fit_size, iter_frames, probe

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"video {p} does not exist")
    info = probe(p)
    size = fit_size(info.width, info.height, max_side) if max_side and max(info.width, info.height) > max_side else None
    end = None if num_frames is None else num_frames - 1
    frames = [f for _, f in iter_frames(p, end=end, size=size)]
    if not frames:
        raise VideoError("no decodable frames", p)
    if num_frames is not None and len(frames) < num_frames:
        raise VideoError(f"too short: {len(frames)} frames, {num_frames} asked for (lower --frames)", p)
    return np.stack(frames), info.fps


@torch.no_grad()
def reconstruct_frames(tok: TokenizerAPI, frames: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 [T,H,W,3] -> reconstructed uint8 frames (tiled: bounded memory at any size)."""
    x = frames_to_tensor(frames).to(device)
    z = encode_tiled(tok, x)
    y = decode_tiled(tok, z, num_frames=x.shape[2], size=(x.shape[-2], x.shape[-1]))
    return tensor_to_frames(y)[0]


def evaluate_videos(tok: TokenizerAPI, videos: Sequence[str | os.PathLike], *, num_frames: int | None = None,
                    max_side: int | None = None, device: str | torch.device = "cpu") -> dict:
    """{"overall": {"psnr", "ssim"}, "videos": {path: {"psnr", "ssim", "frames"}}}.

    As TokenBench: per video, PSNR from one MSE over the whole clip and SSIM averaged over frames,
    on uint8 frames; overall = mean over videos."""
    if not videos:
        raise ValueError("no videos to evaluate")
    per: dict[str, dict] = {}
    for v in videos:
        frames, _ = read_video(v, num_frames, max_side)
        rec = reconstruct_frames(tok, frames, device)
        m = video_metrics(frames, rec)
        per[str(v)] = {"psnr": m["psnr"], "ssim": m["ssim"], "frames": int(frames.shape[0])}
        log.info("%s: PSNR %.2f dB, SSIM %.4f", v, m["psnr"], m["ssim"])
    finite = [m["psnr"] for m in per.values() if math.isfinite(m["psnr"])]
    overall = {"psnr": float(np.mean(finite)) if finite else math.inf,
               "ssim": float(np.mean([m["ssim"] for m in per.values()]))}
    return {"overall": overall, "videos": per}


# ---------------------------------------------------------------- torchrun entry point
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wfm_platform.tokenizer.train",
                                 description="Train the video tokenizer (torchrun-compatible).")
    ap.add_argument("--config", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", nargs="+", help="manifest.json or shard URLs")
    src.add_argument("--dataset", help="NAME@VERSION (or NAME: latest) from the dataset registry")
    ap.add_argument("--store", help="object-store root holding the datasets (default: $WFM_STORAGE_ROOT, "
                    "else data/store)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--init")
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_train_config(a.config)
    if a.store and not a.dataset:
        ap.error("--store is where --dataset versions are looked up; with --shards give the manifest "
                 "or shard URLs")
    shards = None if a.shards is None else (a.shards[0] if len(a.shards) == 1 else a.shards)
    from ..storage.objectstore import ObjectStore

    store = ObjectStore(a.store) if a.store else None
    r = train(cfg, shards, a.out, steps=a.steps, init=a.init, resume=a.resume, store=store, dataset=a.dataset)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"step": r.step, "steps_per_s": r.steps_per_s, "checkpoint": str(r.checkpoint),
                          "data": r.data,
                          "first_loss": r.losses[0] if r.losses else None,
                          "last_loss": r.losses[-1] if r.losses else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def evaluate_on_shards(tok: TokenizerAPI, shard_uris: Sequence[str], store=None, *, clips: int = 2,
                       num_frames: int | None = None, max_side: int | None = 256) -> tuple[dict, bytes]:
    """TokenBench metrics on the first `clips` clips of some shards, and a JPEG preview (top: input
    frames, bottom: reconstruction) of the first one."""
    import tempfile

    from ..curation.shards import open_dataset
    from ..video.thumbs import grid, jpeg_bytes

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for sample in open_dataset(list(shard_uris), store=store):
            p = Path(tmp) / f"{sample['__key__']}.mp4"
            p.write_bytes(sample["mp4"])
            paths.append(p)
            if len(paths) >= clips:
                break
        metrics = evaluate_videos(tok, paths, num_frames=num_frames, max_side=max_side)
        frames, _ = read_video(paths[0], num_frames, max_side)
    rec = reconstruct_frames(tok, frames)
    idx = np.linspace(0, len(frames) - 1, min(4, len(frames))).astype(int)
    preview = jpeg_bytes(grid([frames[i] for i in idx] + [rec[i] for i in idx], cols=len(idx)))
    return metrics, preview
