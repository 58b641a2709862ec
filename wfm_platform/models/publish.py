"""Train a world model into the object store and publish it as the latest checkpoint of its preset.

This is what the diffusion_wfm / autoregressive_wfm assets do, without Dagster (they only add config,
logging and metadata):

    cfg = load_train_config("configs/train/world_tiny.yaml", tokenizer_checkpoint=".../checkpoint.pt")
    pub = train_and_publish(store, "diffusion_wfm", "diffusion", "diffusion-tiny", cfg, "bikes",
                            version=new_version("run-id"))
    pub.uri, pub.dataset, pub.load_error, pub.preview      # the folder, "bikes@1.0.0", "" when it loads, JPEG

Layout in the store: {asset}/{preset}/{version}/ (model.pt, loss.jsonl, train_config.yaml), then
{asset}/{preset}/latest.json (checkpoint.publish_latest) once the folder is complete and loads back.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .checkpoint import (
    LOG_FILE,
    MODEL_FILE,
    CheckpointError,
    LatestPointer,
    load_world_model,
    publish_latest,
    read_checkpoint,
    resolve_model_ref,
)

if TYPE_CHECKING:
    from ..storage.objectstore import ObjectStore
    from .train import TrainConfig

log = logging.getLogger(__name__)

# what a remote store receives of the run folder (train_state.pt and cache/ stay behind: resume is local)
PUBLISHED_FILES = (MODEL_FILE, LOG_FILE, "train_config.yaml")


@dataclass
class PublishedCheckpoint:
    """What one train_and_publish run produced: enough for the asset's metadata and checks."""

    version: str
    rel: str  # {asset}/{preset}/{version}: the folder's key in the store
    uri: str  # the folder's URI
    preset: str
    family: str
    dataset: str  # "NAME@VERSION" actually read
    dataset_digest: str
    tokenizer: dict  # {"name", "preset", "checkpoint"} as recorded in model.pt
    step: int
    steps_per_s: float
    losses: list[float]
    params: int
    tensors: int  # tensors in the saved state dict
    saved_step: int  # the step model.pt records
    load_error: str  # "" when model.pt loads back equal to the trained weights
    preview: bytes = b""  # JPEG strip of a generated sample; b"" when the checkpoint did not load
    latest: LatestPointer | None = field(default=None)  # the published pointer; None when not published

    @property
    def loss_finite(self) -> bool:
        return bool(self.losses) and all(math.isfinite(v) for v in self.losses)

    @property
    def loss_first5(self) -> float:
        return float(np.mean(self.losses[:5])) if self.losses else math.nan

    @property
    def loss_last5(self) -> float:
        return float(np.mean(self.losses[-5:])) if self.losses else math.nan


def new_version(run_id: str, now: datetime | None = None) -> str:
    """A checkpoint version name that sorts by time and is unique per run: 20261127T170634-1a2b3c4d."""
    return f"{now or datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{run_id[:8]}"


def _reload_error(out: Path, trained: dict[str, torch.Tensor]) -> tuple[torch.nn.Module | None, str]:
    """(model, "") when what was written loads back into a model equal to what was trained, else (model or
    None, what is wrong)."""
    try:
        model, _ = load_world_model(out)
    except CheckpointError as e:
        return None, str(e)
    loaded = model.state_dict()
    same = loaded.keys() == trained.keys() and all(torch.equal(loaded[k], trained[k]) for k in trained)
    return model, "" if same else "loaded weights differ from the trained ones"


def train_and_publish(store: ObjectStore, asset: str, family: str, preset: str, cfg: TrainConfig, dataset: str,
                      *, version: str, steps: int | None = None, init: str | None = None,
                      preview_prompt: str = "a street with cars and people walking, daytime",
                      preview_steps: int = 8,
                      on_step: Callable[[int, int, dict], None] | None = None) -> PublishedCheckpoint:
    """Train `preset` of `family` on `dataset` (NAME@VERSION, or NAME: its latest version) into
    {asset}/{preset}/{version}/ of `store`, check that it loads back, render a preview, and point
    {asset}/{preset}/latest.json at it. `init` (post-training) is a checkpoint folder or PRESET@latest.

    A local store trains in place; any other store trains in a temp folder and uploads PUBLISHED_FILES.
    The pointer moves only when the checkpoint loads back (a broken checkpoint is kept, with load_error set,
    but generation never picks it up). Errors: storage.datasets.DatasetError (no such dataset version),
    CheckpointError / ValueError (tokenizer, init or config that does not fit)."""
    from .text import load_text_encoder
    from .train import load_data_tokenizer, preview_jpeg, train

    rel = f"{asset}/{preset}/{version}"
    text_encoder = load_text_encoder(cfg.text_encoder)  # once: training and the preview share it
    with tempfile.TemporaryDirectory(prefix="wfm-train-") as tmp, resolve_model_ref(init or None, store) as init_path:
        # train next to the data on a local store; elsewhere in a temp folder, then upload the checkpoint
        out = store.local_path(rel) if store.is_plain_local else Path(tmp) / "run"
        r = train(family, preset, cfg, dataset, out, steps=steps, store=store, init=init_path,
                  text_encoder=text_encoder, on_step=on_step)
        ckpt = read_checkpoint(out)
        trained = {k: v.detach().cpu() for k, v in r.model.state_dict().items()}
        model, load_error = _reload_error(out, trained)  # the check: what was written is what was trained
        if load_error:
            log.error("%s: the checkpoint does not load back (%s); latest.json is left as it was", rel, load_error)
        preview = b""
        if model is not None:
            tok = load_data_tokenizer(model.config, cfg.tokenizer_checkpoint, "cpu")
            preview = preview_jpeg(model, tok, text_encoder, preview_prompt, num_frames=cfg.num_frames,
                                   size=tuple(cfg.size), steps=preview_steps)
        if not store.is_plain_local:
            for f in PUBLISHED_FILES:
                store.put_file(out / f, f"{rel}/{f}")
    latest = None if load_error else publish_latest(store, asset, preset, rel, version=version, dataset=r.dataset,
                                                    step=r.step, family=family)
    return PublishedCheckpoint(
        version=version, rel=rel, uri=store.uri(rel), preset=preset, family=family, dataset=r.dataset,
        dataset_digest=ckpt.get("dataset_digest", ""), tokenizer=ckpt["tokenizer"], step=r.step,
        steps_per_s=r.steps_per_s, losses=list(r.losses), params=sum(p.numel() for p in r.model.parameters()),
        tensors=len(ckpt["state_dict"]), saved_step=int(ckpt["step"]), load_error=load_error, preview=preview,
        latest=latest)
