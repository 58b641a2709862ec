"""Tokenizer configurations (configs/tokenizer/*.yaml, validated by pydantic) and `build_tokenizer`.

configs/tokenizer/presets.yaml holds the width/depth presets (`default`: Cosmos-sized, `tiny`: trains on
CPU); configs/tokenizer/<name>.yaml holds what a name means (kind, compression) and optional per-preset
overrides. Keyword overrides to `build_tokenizer` win over both.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, Field, model_validator

from ..config_io import REPO_ROOT

if TYPE_CHECKING:
    from .model import VideoTokenizer

log = logging.getLogger(__name__)

CONFIG_DIR = REPO_ROOT / "configs" / "tokenizer"
NAMES = ("cv4x8x8", "cv8x8x8", "cv8x16x16", "dv4x8x8", "dv8x8x8", "dv8x16x16", "ci8x8", "di8x8")


class TokenizerConfig(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = "custom"
    preset: str = "default"
    kind: Literal["cv", "dv"] = Field(..., description="cv: continuous latents; dv: FSQ indices")
    temporal_compression: int = Field(8, description="1 (image tokenizer), 4 or 8")
    spatial_compression: int = Field(8, description="8 or 16")
    patch_levels: int = Field(2, ge=1, description="Haar wavelet levels of the patcher (/2 each)")
    channels: int = Field(128, ge=4, description="base width")
    channels_mult: list[int] = Field([2, 4, 4], min_length=1, description="width per level (x channels)")
    num_res_blocks: int = Field(2, ge=1, description="residual blocks per encoder level (decoder: +1)")
    attention_last_level: bool = Field(True, description="spatial+temporal attention in the lowest level")
    z_channels: int = Field(16, ge=1, description="latent channels (CV output; DV pre-quantization)")
    fsq_levels: list[int] = Field([8, 8, 8, 5, 5, 5], description="DV: FSQ levels, product = codebook size")
    # inference defaults for tiling.py (pixels / latent frames)
    tile_size: int = Field(512, description="spatial tile side in pixels (multiple of spatial_compression)")
    tile_overlap: int = Field(64, description="overlap between tiles in pixels (multiple of compression)")
    chunk_latents: int = Field(4, ge=1, description="latent frames per temporal chunk")
    chunk_context: int = Field(2, ge=0, description="latent frames of past context per chunk")

    @model_validator(mode="after")
    def _check(self) -> TokenizerConfig:
        t, s, p = self.temporal_compression, self.spatial_compression, 2**self.patch_levels
        if t not in (1, 2, 4, 8, 16) or s not in (4, 8, 16, 32):
            raise ValueError(f"compression {t}x{s}x{s} not supported (t in 1,2,4,8,16; s in 4..32, powers of 2)")
        extra_s = int(math.log2(s)) - self.patch_levels
        extra_t = int(math.log2(t)) - self.patch_levels if t > 1 else 0
        if extra_s < 0 or extra_t < 0:
            raise ValueError(f"patch_levels={self.patch_levels} (/{p}) exceeds compression {t}x{s}x{s}")
        if max(extra_s, extra_t) > len(self.channels_mult) - 1:
            raise ValueError(f"{len(self.channels_mult)} levels cannot downsample {max(extra_s, extra_t)} times more:"
                             " add entries to channels_mult")
        if self.kind == "dv" and (not self.fsq_levels or min(self.fsq_levels) < 2):
            raise ValueError("fsq_levels must be a non-empty list of integers >= 2")
        if self.tile_size % s or self.tile_overlap % s or self.tile_overlap >= self.tile_size:
            raise ValueError(f"tile_size/tile_overlap must be multiples of {s} with overlap < size")
        return self

    @property
    def extra_spatial_downs(self) -> int:
        return int(math.log2(self.spatial_compression)) - self.patch_levels

    @property
    def extra_temporal_downs(self) -> int:
        return int(math.log2(self.temporal_compression)) - self.patch_levels if self.temporal_compression > 1 else 0

    @property
    def codebook_size(self) -> int:
        return math.prod(self.fsq_levels)


def _read_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def available_names(config_dir: str | os.PathLike | None = None) -> list[str]:
    d = Path(config_dir) if config_dir else CONFIG_DIR
    return sorted(p.stem for p in d.glob("*.yaml") if p.stem != "presets")


def load_config(name: str, preset: str = "default", config_dir: str | os.PathLike | None = None,
                **overrides) -> TokenizerConfig:
    """The validated config of tokenizer `name` at `preset`, with keyword overrides applied."""
    d = Path(config_dir) if config_dir else CONFIG_DIR
    path = d / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown tokenizer {name!r}; known: {', '.join(available_names(d))} (files in {d})")
    spec = _read_yaml(path)
    presets_path = d / "presets.yaml"
    presets = _read_yaml(presets_path) if presets_path.exists() else {}
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(presets) or 'none'} ({presets_path})")
    per_name = (spec.pop("presets", None) or {}).get(preset, {})
    data = {**(presets[preset] or {}), **spec, **per_name, **overrides, "name": name, "preset": preset}
    return TokenizerConfig.model_validate(data)


def build_tokenizer(name: str, preset: str = "default", config_dir: str | os.PathLike | None = None,
                    **overrides) -> VideoTokenizer:
    """A freshly initialised tokenizer: `build_tokenizer("cv8x8x8")`, `build_tokenizer("dv4x8x8", preset="tiny")`.

    Returns a `VideoTokenizer` (an nn.Module) with `encode(x)`, `decode(z)` and `forward(x)`.
    """
    from .model import VideoTokenizer

    cfg = load_config(name, preset, config_dir, **overrides)
    model = VideoTokenizer(cfg)
    log.info("built %s/%s: %.1fM parameters", name, preset, sum(p.numel() for p in model.parameters()) / 1e6)
    return model
