"""World-model size presets: configs/models/<name>.yaml, validated by pydantic, built by family.

A preset file holds `name`, `family` ("diffusion" | "autoregressive"), `published_params` (the published
parameter count for the 4B..14B capacities, null otherwise) and `model` (the family Config fields).
Parameter counts come from instantiating the model on the meta device: exact, no memory, no weights.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config_io import REPO_ROOT

log = logging.getLogger(__name__)

PRESET_DIR = REPO_ROOT / "configs" / "models"
FAMILIES = ("diffusion", "autoregressive")
TOLERANCE = 0.10  # a named size must be within 10% of its published parameter count


class PresetError(ValueError):
    """Unknown preset, unreadable or invalid preset file: the message says what to do."""


class PresetFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    family: Literal["diffusion", "autoregressive"]
    published_params: int | None = Field(None, ge=1)
    description: str | None = None
    model: dict[str, Any] = Field(default_factory=dict)


def preset_dir() -> Path:
    """configs/models, or $WFM_MODELS_DIR when set (a deployment's own presets)."""
    return Path(os.environ.get("WFM_MODELS_DIR") or PRESET_DIR)


def family_module(family: str) -> ModuleType:
    """The family package (wfm_platform.models.diffusion / .autoregressive): exports Config and build_model."""
    if family not in FAMILIES:
        raise PresetError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
    return importlib.import_module(f"wfm_platform.models.{family}")


def _is_preset(path: Path) -> bool:
    # configs/models also holds other YAML (training configs): a preset is a file with a top-level `family:`
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return True  # broken YAML: listing it makes read_preset say what is wrong
    return isinstance(raw, dict) and "family" in raw


def preset_names() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml") if _is_preset(p))


def _resolve(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise PresetError(f"model config {p} does not exist")
        return p
    f = preset_dir() / f"{name_or_path}.yaml"
    if not f.is_file():
        raise PresetError(f"unknown model preset {str(name_or_path)!r}; available: {', '.join(preset_names()) or 'none'}"
                          f" (in {preset_dir()}), or pass a path to a YAML file")
    return f


def read_preset(name_or_path: str | os.PathLike) -> PresetFile:
    path = _resolve(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        pf = PresetFile(**raw)
    except (yaml.YAMLError, ValidationError, TypeError) as e:
        raise PresetError(f"invalid model preset {path}: {e}") from e
    if path.parent == preset_dir() and pf.name != path.stem:
        raise PresetError(f"preset {path} says name: {pf.name}; the name must match the file name ({path.stem})")
    return pf


def load_preset(name_or_path: str | os.PathLike, **overrides: Any):
    """(family, Config) of a preset name or YAML path; keyword overrides replace `model:` fields."""
    pf = read_preset(name_or_path)
    mod = family_module(pf.family)
    try:
        cfg = mod.Config(**{**pf.model, **overrides})
    except ValidationError as e:
        raise PresetError(f"model preset {pf.name}: invalid {pf.family} config: {e}") from e
    return pf.family, cfg


def build_model(name_or_path: str | os.PathLike, **overrides: Any):
    """An untrained model of a preset (name or YAML path); `preset` attribute = the preset's name."""
    pf = read_preset(name_or_path)
    family, cfg = load_preset(name_or_path, **overrides)
    model = family_module(family).build_model(cfg)
    model.preset = pf.name
    return model


@functools.lru_cache(maxsize=64)
def _count(path: str, mtime: float) -> int:
    import torch

    with torch.device("meta"):  # shapes only: a 14B model costs no memory
        model = build_model(path)
    return sum(p.numel() for p in model.parameters())


def count_params(name_or_path: str | os.PathLike) -> int:
    """Parameter count of a preset, by instantiating it on the meta device."""
    path = _resolve(name_or_path)
    return _count(str(path.resolve()), path.stat().st_mtime)


def list_presets() -> list[dict[str, Any]]:
    """[{"name", "family", "params", "published_params"}] for every preset, sorted by family then size."""
    rows = []
    for name in preset_names():
        pf = read_preset(name)
        rows.append({"name": pf.name, "family": pf.family, "params": count_params(name),
                     "published_params": pf.published_params})
    return sorted(rows, key=lambda r: (r["family"], r["params"]))


def check_published(name_or_path: str | os.PathLike, tolerance: float = TOLERANCE) -> tuple[int, int | None, bool]:
    """(params, published_params, within tolerance); presets without a published size always pass."""
    pf = read_preset(name_or_path)
    n = count_params(name_or_path)
    if pf.published_params is None:
        return n, None, True
    return n, pf.published_params, abs(n - pf.published_params) <= tolerance * pf.published_params
