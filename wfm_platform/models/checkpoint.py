"""World-model checkpoints: a folder that generation, the Dagster assets and post-training all read.

    {dir}/model.pt        {"family", "preset", "config", "state_dict", "step", "dataset": "NAME@VER",
                           "tokenizer": {"name", "preset", "checkpoint"}, "text_encoder": "minilm", ...}
    {dir}/train_state.pt  optimizer, scheduler, per-rank RNG states, data position (only what resume needs;
                          kept apart so inference never loads the optimizer's 2x-parameters of state)
    {dir}/loss.jsonl      one JSON line per logged step

Both .pt files are written to a temp name and renamed (a crash never leaves half a file).

    save_checkpoint("runs/dit", model, step=100, meta={"preset": "diffusion-tiny", "dataset": "city@1.0.0", ...})
    model, meta = load_world_model("runs/dit")            # trained weights, eval mode
    model, meta = load_world_model("diffusion-tiny")      # a preset: untrained, meta["untrained"] is True
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, field_validator

if TYPE_CHECKING:
    from ..storage.objectstore import ObjectStore

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
LOG_FILE = "loss.jsonl"
FAMILIES = ("diffusion", "autoregressive")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, of the wrong family or does not fit the model."""


def _atomic_save(obj: Any, path: Path) -> None:
    from ..tokenizer.train import _atomic_save as save  # one implementation of temp-name-then-rename

    save(obj, path)


def model_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p / MODEL_FILE if p.is_dir() or p.suffix != ".pt" else p


def _config_dict(model: torch.nn.Module) -> dict:
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise CheckpointError(f"{type(model).__name__} has no .config: not a WorldModel (models/base.py)")
    return cfg.model_dump() if hasattr(cfg, "model_dump") else dict(cfg)


def save_checkpoint(dir: str | os.PathLike, model: torch.nn.Module, *, step: int, meta: dict,
                    state_dict: dict | None = None) -> Path:
    """Write {dir}/model.pt atomically; returns its path.

    meta: "preset", "dataset", "tokenizer", "text_encoder" (and anything else worth keeping).
    state_dict: pass the gathered full state dict when the model is sharded (FSDP); default model's own.
    """
    family = getattr(model, "family", None)
    if family not in FAMILIES:
        raise CheckpointError(f"model family {family!r} is not one of {FAMILIES}")
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else model.state_dict()
    payload = {
        "preset": None, "dataset": None, "tokenizer": None, "text_encoder": "minilm",
        **meta,
        "family": family,
        "config": _config_dict(model),
        "state_dict": {k: v.detach().cpu() for k, v in sd.items()},
        "step": int(step),
    }
    path = d / MODEL_FILE
    _atomic_save(payload, path)
    log.info("world-model checkpoint (step %d) -> %s", step, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The model.pt dict of a checkpoint folder (or the file itself), validated."""
    p = model_file(path)
    if not p.exists():
        raise CheckpointError(f"no world-model checkpoint at {p} (expected a folder with {MODEL_FILE}, "
                              "written by `wfm train`)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for corrupt files
        raise CheckpointError(f"{p} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(ckpt, dict) or not {"family", "config", "state_dict"} <= set(ckpt):
        raise CheckpointError(f"{p} is not a world-model checkpoint (no family / config / state_dict); "
                              "a tokenizer checkpoint is read with wfm_platform.tokenizer.train.load_tokenizer")
    if ckpt["family"] not in FAMILIES:
        raise CheckpointError(f"{p}: unknown family {ckpt['family']!r}")
    return ckpt


def build_from_config(family: str, config: dict) -> torch.nn.Module:
    from .presets import family_module

    fam = family_module(family)
    return fam.build_model(fam.Config.model_validate(config))


def load_weights(model: torch.nn.Module, state_dict: dict, source: str) -> None:
    """Strict load with an error that says what does not fit."""
    from ..tokenizer.train import load_state_strict

    load_state_strict(model, state_dict, source, "this model (different preset or overrides?)",
                      CheckpointError)


def _meta(ckpt: dict, source: str) -> dict:
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    meta.update(untrained=False, source=source)
    return meta


def load_world_model(path_or_preset: str | os.PathLike, device: str | torch.device = "cpu"
                     ) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, meta) from a checkpoint folder / model.pt, or an untrained preset.

    A preset name (configs/models/<name>.yaml) gives freshly initialised weights and
    meta["untrained"] = True: good for testing the pipeline only."""
    p = Path(path_or_preset)
    if p.exists():
        ckpt = read_checkpoint(p)
        model = build_from_config(ckpt["family"], ckpt["config"])
        load_weights(model, ckpt["state_dict"], str(p))
        return model.to(device).eval(), _meta(ckpt, str(p))
    from . import presets

    names = [e["name"] for e in presets.list_presets()]
    if str(path_or_preset) not in names:
        raise CheckpointError(f"{path_or_preset} is neither a checkpoint folder nor a preset "
                              f"(presets: {', '.join(names)})")
    family, cfg = presets.load_preset(str(path_or_preset))
    log.warning("%s: untrained weights (a preset, not a checkpoint); use it to test the pipeline only",
                path_or_preset)
    model = presets.build_model(str(path_or_preset))
    meta = {"family": family, "preset": str(path_or_preset), "config": cfg.model_dump(), "step": 0,
            "dataset": None, "tokenizer": {"name": cfg.tokenizer, "preset": cfg.tokenizer_preset,
                                           "checkpoint": None},
            "text_encoder": "minilm", "untrained": True, "source": str(path_or_preset)}
    return model.to(device).eval(), meta


def read_loss_log(dir: str | os.PathLike) -> list[dict]:
    from ..config_io import read_jsonl

    return read_jsonl(Path(dir) / LOG_FILE)


# ---------------------------------------------------------------- the latest-checkpoint pointer
# Trained checkpoints live in versioned folders of the object store, {asset}/{preset}/{version}/, and
# {asset}/{preset}/latest.json names the newest one. Training publishes it (last, after the folder is
# complete); generation reads it when no checkpoint folder is named.
LATEST_FILE = "latest.json"
# the store prefix each family's checkpoints are published under (the Dagster asset of the same name)
FAMILY_ASSET = {"diffusion": "diffusion_wfm", "autoregressive": "autoregressive_wfm"}


class NoTrainedCheckpoint(CheckpointError):
    """No latest.json for this asset / preset yet: nothing has been trained (or published) for it."""


class LatestPointer(BaseModel):
    """The content of {asset}/{preset}/latest.json (older pointers may lack step / preset / family)."""

    model_config = {"extra": "ignore"}

    version: str
    uri: str  # the checkpoint folder's URI in the store
    dataset: str = ""  # "NAME@VERSION" it was trained on
    step: int = 0
    preset: str = ""
    family: str = ""

    @field_validator("dataset", mode="before")
    @classmethod
    def _none_is_empty(cls, v):
        return v or ""


@dataclass
class LatestCheckpoint:
    pointer: LatestPointer
    pointer_uri: str  # where latest.json is
    model_path: Path  # a local model.pt: the file itself on a local store, else a temp download


def latest_rel(asset: str, preset: str) -> str:
    return f"{asset}/{preset}/{LATEST_FILE}"


def publish_latest(store: ObjectStore, asset: str, preset: str, folder: str, *, version: str, dataset: str,
                   step: int, family: str) -> LatestPointer:
    """Point {asset}/{preset}/latest.json at the checkpoint folder `folder` (a key in `store`); returns
    what was written.

    Written atomically (ObjectStore.write_json: temp name then rename, or one PUT on object stores), so a
    reader sees the old pointer or the new one, never half of one. Call it once the folder is complete:
    a folder without model.pt is refused rather than published."""
    if not store.exists(f"{folder}/{MODEL_FILE}"):
        raise CheckpointError(f"cannot publish {store.uri(folder)} as the latest {preset} checkpoint: it has "
                              f"no {MODEL_FILE} (upload the checkpoint folder first)")
    pointer = LatestPointer(version=version, uri=store.uri(folder), dataset=dataset, step=step, preset=preset,
                            family=family)
    where = store.write_json(latest_rel(asset, preset), pointer.model_dump())
    log.info("latest %s checkpoint: %s (%s)", preset, pointer.uri, where)
    return pointer


def read_latest(store: ObjectStore, asset: str, preset: str) -> LatestPointer:
    """The parsed latest.json. NoTrainedCheckpoint when there is none; CheckpointError when it is unreadable."""
    rel = latest_rel(asset, preset)
    if not store.exists(rel):
        family = {a: f for f, a in FAMILY_ASSET.items()}.get(asset, "FAMILY")
        raise NoTrainedCheckpoint(
            f"no trained {preset} checkpoint ({store.uri(rel)} does not exist): materialize {asset} first "
            f"(config preset: {preset}, dataset: NAME@VERSION), or train one with `wfm train {family}` and "
            "pass --model PATH")
    try:
        return LatestPointer.model_validate_json(store.read_bytes(rel))
    except ValueError as e:  # not JSON, or no version / uri (pydantic's ValidationError is a ValueError)
        raise CheckpointError(f"{store.uri(rel)} is not a checkpoint pointer ({str(e)[:200]}): materialize "
                              f"{asset} (preset {preset}) again") from e


@contextmanager
def latest_checkpoint(store: ObjectStore, asset: str, preset: str) -> Iterator[LatestCheckpoint]:
    """The latest trained checkpoint of `asset` / `preset`, with a local model.pt for the `with` block
    (on a remote store a temp download, removed afterwards).

    NoTrainedCheckpoint: no pointer yet. CheckpointError: the pointer is unreadable or its folder is gone."""
    pointer = read_latest(store, asset, preset)
    pointer_uri = store.uri(latest_rel(asset, preset))
    try:
        model_rel = f"{store.rel(pointer.uri)}/{MODEL_FILE}"
    except ValueError as e:  # a folder outside this store: written by hand, or the store moved
        raise CheckpointError(f"{pointer_uri} points at {pointer.uri}, outside {store.uri()}: materialize "
                              f"{asset} (preset {preset}) again") from e
    if not store.exists(model_rel):
        raise CheckpointError(f"{pointer_uri} points at {pointer.uri}, which has no {MODEL_FILE}: "
                              f"materialize {asset} (preset {preset}) again")
    with store.local_copy(model_rel) as local:
        yield LatestCheckpoint(pointer, pointer_uri, Path(local))


LATEST_SUFFIX = "@latest"


@contextmanager
def resolve_model_ref(ref: str | os.PathLike | None, store: ObjectStore | None = None) -> Iterator[str | None]:
    """What load_world_model / --init should read for a model reference a user typed.

    "PRESET@latest" (e.g. diffusion-tiny@latest) is the latest trained checkpoint of that preset in the
    store (default: $WFM_STORAGE_ROOT, else data/store), i.e. what the Dagster asset last published: yields
    a local model.pt (a temp download on a remote store, for the `with` block). Anything else (a checkpoint
    folder, a model.pt, a preset name, None) is yielded unchanged.
    NoTrainedCheckpoint / CheckpointError when the preset has no (readable) latest checkpoint."""
    if ref is None or not str(ref).endswith(LATEST_SUFFIX):
        yield None if ref is None else str(ref)
        return
    ref = str(ref)
    from . import presets

    preset = ref[: -len(LATEST_SUFFIX)]
    try:
        family, _ = presets.load_preset(preset)
    except (KeyError, ValueError, FileNotFoundError) as e:
        names = ", ".join(p["name"] for p in presets.list_presets())
        raise CheckpointError(f"{ref}: {preset!r} is not a preset ({names})") from e
    if store is None:
        from ..storage.objectstore import default_store

        store = default_store()
    with latest_checkpoint(store, FAMILY_ASSET[family], preset) as latest:
        p = latest.pointer
        log.info("%s = %s (version %s, step %d, dataset %s)", ref, p.uri, p.version, p.step, p.dataset or "?")
        yield str(latest.model_path)
