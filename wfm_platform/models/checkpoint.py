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
from pathlib import Path
from typing import Any

import torch

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
