"""The curation pipeline's configuration: configs/pipeline.yaml, validated by pydantic.

Environment variables override single values: WFM_<SECTION>__<KEY>, e.g. WFM_CLIPS__CRF=20.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, PrivateAttr

from ..config_io import REPO_ROOT

DEFAULT_CONFIG = REPO_ROOT / "configs" / "pipeline.yaml"


def data_dir() -> Path:
    """$WFM_DATA_DIR, else <repo>/data: where the default object store (store/) and catalog (catalog/) live."""
    return Path(os.environ.get("WFM_DATA_DIR", REPO_ROOT / "data")).expanduser().resolve()


class ClipsConfig(BaseModel):
    min_duration_s: float = Field(2.0, description="Cosmos rule: shots shorter than this are dropped")
    max_duration_s: float = Field(60.0, description="Cosmos rule: longer shots are split into pieces")
    crf: int = Field(23, ge=0, le=51, description="x264 constant rate factor (lower = better, bigger)")
    preset: str = Field("veryfast", description="x264 preset: ultrafast .. veryslow")
    max_side: int | None = Field(None, description="downscale clips whose longer side exceeds this")
    thumbnails: bool = True


class FiltersSection(BaseModel):
    config: str = Field("filters.yaml", description="thresholds file, relative to configs/")


class CaptionsConfig(BaseModel):
    kind: Literal["signals", "openai"] = "signals"


class EmbeddingsConfig(BaseModel):
    kind: Literal["visual-signature", "torchscript"] = "visual-signature"


class DedupConfig(BaseModel):
    eps: float = Field(0.05, gt=0, lt=1, description="duplicate when cosine similarity >= 1 - eps")
    against_catalog: bool = True


class GuardConfig(BaseModel):
    face_blur: bool = Field(True, description="blur every face (tracked) in the clips that go into shards")
    unsafe_check: bool = Field(True, description="drop clips with an unsafe sampled frame")
    config: str = Field("guardrails.yaml", description="post-guard settings (its post: section), in configs/")


class ShardsConfig(BaseModel):
    max_samples: int = Field(256, gt=0)
    max_bytes: int = Field(1 << 30, gt=0)


class PipelineConfig(BaseModel):
    clips: ClipsConfig = ClipsConfig()
    filters: FiltersSection = FiltersSection()
    captions: CaptionsConfig = CaptionsConfig()
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    dedup: DedupConfig = DedupConfig()
    guard: GuardConfig = GuardConfig()
    shards: ShardsConfig = ShardsConfig()
    video_extensions: list[str] = Field(
        default_factory=list,
        description="if set, only these extensions are considered; empty = every file (probed by content)",
    )

    _dir: Path = PrivateAttr(DEFAULT_CONFIG.parent)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> PipelineConfig:
        path = Path(path) if path else DEFAULT_CONFIG
        data = yaml.safe_load(path.read_text()) if path.exists() else {}
        data = data or {}
        for key, value in os.environ.items():
            if key.startswith("WFM_") and "__" in key:
                section, field = key[4:].lower().split("__", 1)
                if section in cls.model_fields:
                    data.setdefault(section, {})[field] = value
        cfg = cls.model_validate(data)
        cfg._dir = path.parent
        return cfg

    def filters_path(self) -> Path:
        return self._resolve(self.filters.config)

    def guard_path(self) -> Path:
        return self._resolve(self.guard.config)

    def _resolve(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self._dir / p
