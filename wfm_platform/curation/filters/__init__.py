"""Clip scores and filters: motion, visual quality, text overlay, video type.

`score_clip` measures a clip on a few sampled, downscaled frames (one decode pass, no colour conversion
of the frames it skips); `apply_filters` turns the scores into pass/reject with readable reasons, using
thresholds from configs/filters.yaml (`FilterConfig`). No Dagster here: the assets call these.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import pydantic
import yaml

from ...video.decode import fit_size
from ...video.probe import VideoError, probe
from .motion import motion_scores
from .quality import quality_scores
from .sampling import (
    ClipSample,
    SampleCollector,
    decode_sample,
    sample_from_bytes,
    sample_options,
    sample_to_bytes,
)
from .text import OCRUnavailable, text_scores
from .text import get_ocr as _get_ocr
from .vtype import VIDEO_TYPES, classify, clip_features

log = logging.getLogger(__name__)

__all__ = [
    "FilterConfig",
    "OCRUnavailable",
    "VIDEO_TYPES",
    "VideoError",
    "apply_filters",
    "get_ocr",
    "SampleCollector",
    "sample_from_bytes",
    "sample_to_bytes",
    "score_clip",
    "score_sample",
]


class FilterConfig(pydantic.BaseModel):
    """Sampling knobs and thresholds. A threshold set to None is not checked. Units in configs/filters.yaml."""

    model_config = pydantic.ConfigDict(extra="forbid")

    # --- sampling (speed): what score_clip decodes and analyses
    motion_samples: int = pydantic.Field(8, ge=1, le=64)  # motion triples spread over the clip
    motion_gap_s: float = pydantic.Field(0.1, gt=0)  # seconds between the frames of a flow pair
    motion_max_side: int = pydantic.Field(320, ge=64)  # px, long side of optical-flow frames
    quality_max_side: int = pydantic.Field(640, ge=64)  # px, long side for blur/exposure/type/OCR frames
    blockiness_crop: int = pydantic.Field(384, ge=64)  # px, native-resolution center crop (8x8 grid kept)
    ocr_frames: int = pydantic.Field(3, ge=0, le=16)  # frames given to RapidOCR; 0 turns OCR off
    ocr_max_side: int = pydantic.Field(480, ge=64, le=960)  # px, long side of OCR frames
    type_max_side: int = pydantic.Field(320, ge=64)  # px, long side of the frames the type features use
    ocr_min_det_score: float = pydantic.Field(0.6, ge=0, le=1)  # detector box score to count as text
    ocr_min_confidence: float = pydantic.Field(0.6, ge=0, le=1)  # recognition confidence to keep a box
    ocr_max_rec_boxes: int = pydantic.Field(8, ge=0)  # largest boxes recognised (for ocr_text)
    ocr_text_max_chars: int = pydantic.Field(200, ge=0)
    brisque_model_dir: str | None = None  # folder with brisque_model_live.yml / brisque_range_live.yml

    # --- thresholds
    min_duration_s: float | None = 1.0
    max_duration_s: float | None = None
    min_motion_mean: float | None = 0.002  # diagonals/s
    min_motion_p90: float | None = 0.005  # diagonals/s
    max_motion_mean: float | None = None  # diagonals/s
    max_shakiness: float | None = 0.5  # diagonals/s of camera-velocity change
    min_blur_laplacian_var: float | None = 20.0
    min_brightness_mean: float | None = 0.10
    max_brightness_mean: float | None = 0.92
    max_dark_ratio: float | None = 0.70
    max_bright_ratio: float | None = 0.50
    max_blockiness: float | None = 1.6
    max_brisque: float | None = 70.0
    max_text_area_ratio: float | None = 0.10
    allowed_video_types: list[str] = pydantic.Field(default_factory=lambda: ["natural", "animation"])

    @pydantic.field_validator("allowed_video_types")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(VIDEO_TYPES))
        if unknown:
            raise ValueError(f"unknown video types {unknown}; known: {list(VIDEO_TYPES)}")
        return v

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> FilterConfig:
        """Load from a YAML file: the whole file, or its `filters:` section if it has one."""
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise ValueError(f"cannot read filter config {path}: {e.strerror}") from e
        if not isinstance(data, dict):
            raise ValueError(f"filter config {path} must be a mapping, got {type(data).__name__}")
        if isinstance(data.get("filters"), dict):
            data = data["filters"]
        return cls.model_validate(data)


def get_ocr():
    """Cached RapidOCR (PP-OCRv4) instance; raises OCRUnavailable with the reason if it cannot load."""
    return _get_ocr()


def score_clip(
    path: str | os.PathLike,
    start: int = 0,
    end: int | None = None,
    *,
    fps: float | None = None,
    config: FilterConfig | None = None,
    ocr=None,
) -> dict[str, float | str | int | list | dict]:
    """Scores of frames start..end (inclusive) of a video as one flat JSON-able dict.

    Raises VideoError for an unusable file (empty, not a video, nothing decodes) and ValueError for a
    frame range outside the video.
    """
    cfg = config or FilterConfig()
    # vfr_window=2: we need size, rate and count, not the VFR check (which decodes 120 frames).
    info = probe(path, vfr_window=2)  # VideoError with a readable reason for empty / non-video files
    n = info.num_frames
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"bad frame range {start}..{end}: need 0 <= start <= end")
    if n > 0 and start >= n:
        raise ValueError(f"bad frame range {start}..{end}: video has {n} frames")
    if end is None or (n > 0 and end >= n):
        if end is not None:
            log.warning("%s: end %d past the last frame, clamped to %d", path, end, n - 1)
        end = max(start, n - 1)
    rate = fps or info.fps
    if not rate or rate <= 0:
        log.warning("%s: unknown frame rate, assuming 25 fps", path)
        rate = 25.0

    sample = decode_sample(path, start, end, rate, **sample_options(cfg))
    return score_sample(sample, cfg, ocr=ocr, width=info.width, height=info.height)


def score_sample(sample: ClipSample, config: FilterConfig | None = None, *, ocr=None,
                 width: int | None = None, height: int | None = None) -> dict:
    """Scores from frames already sampled (by decode_sample or a SampleCollector fed elsewhere)."""
    cfg = config or FilterConfig()
    start, end, rate = sample.start, sample.end, sample.fps
    if not sample.rgb:
        raise VideoError(f"no frame sampled in range {start}..{end}")
    if width is None or height is None:
        width, height = sample.native_size
    # A truncated file ends early: score the frames that exist and say so in the duration.
    last = min(end, sample.last_decoded)
    rgb = [sample.rgb[i] for i in sorted(sample.rgb)]
    crops = [sample.luma_crop[i] for i in sorted(sample.luma_crop)]

    scores: dict = {
        "clip_start": int(start),
        "clip_end": int(last),
        "clip_frames": int(last - start + 1),
        "clip_duration_s": round((last - start + 1) / rate, 4),
        "fps": float(rate),
        "width": int(width),
        "height": int(height),
        "frames_sampled": len(sample.gray),
    }
    scores.update(motion_scores(sample))
    scores.update(quality_scores(rgb, crops, cfg.brisque_model_dir))

    if cfg.ocr_frames > 0:
        engine = ocr if ocr is not None else get_ocr()
        step = max(1, len(rgb) // cfg.ocr_frames)
        ocr_imgs = [_fit(f, cfg.ocr_max_side) for f in rgb[step // 2 :: step][: cfg.ocr_frames]]
        scores.update(text_scores(ocr_imgs, engine, min_confidence=cfg.ocr_min_confidence,
                                  min_det_score=cfg.ocr_min_det_score, max_rec_boxes=cfg.ocr_max_rec_boxes,
                                  max_chars=cfg.ocr_text_max_chars))
    else:
        scores.update({"text_area_ratio": 0.0, "text_boxes": 0, "ocr_text": "", "ocr_frames": 0})

    feats = clip_features([_fit(f, cfg.type_max_side) for f in rgb], crops)
    vtype, type_scores = classify({**feats, **scores})
    scores.update({f"type_{k}": round(v, 4) for k, v in feats.items()})
    scores["video_type"] = vtype
    scores["video_type_scores"] = type_scores
    return scores


def _fit(img, max_side: int):
    """Downscale so the long side is at most max_side (never upscale)."""
    h, w = img.shape[:2]
    size = fit_size(w, h, max_side)
    if size == (w, h) or max(w, h) <= max_side:
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


# (score key, config field, "min"/"max", what a failure means)
_CHECKS = [
    ("clip_duration_s", "min_duration_s", "min", "too short"),
    ("clip_duration_s", "max_duration_s", "max", "too long"),
    ("motion_mean", "min_motion_mean", "min", "static"),
    ("motion_p90", "min_motion_p90", "min", "static"),
    ("motion_mean", "max_motion_mean", "max", "too much motion"),
    ("shakiness", "max_shakiness", "max", "too shaky"),
    ("blur_laplacian_var", "min_blur_laplacian_var", "min", "blurry"),
    ("brightness_mean", "min_brightness_mean", "min", "too dark"),
    ("brightness_mean", "max_brightness_mean", "max", "too bright"),
    ("dark_ratio", "max_dark_ratio", "max", "underexposed"),
    ("bright_ratio", "max_bright_ratio", "max", "overexposed"),
    ("blockiness", "max_blockiness", "max", "compression blocks"),
    ("brisque", "max_brisque", "max", "low BRISQUE quality"),
    ("text_area_ratio", "max_text_area_ratio", "max", "text overlay"),
]


def apply_filters(scores: dict, config: FilterConfig) -> tuple[bool, list[str]]:
    """(passed, reasons). One readable reason with the number per failed threshold; a score absent
    from `scores` (e.g. brisque without its model files) is not checked."""
    reasons: list[str] = []
    for key, field, kind, meaning in _CHECKS:
        limit = getattr(config, field)
        value = scores.get(key)
        if limit is None or value is None:
            continue
        value = float(value)
        if kind == "min" and value < limit:
            reasons.append(f"{key} {_fmt(value)} < min {_fmt(limit)} ({meaning})")
        elif kind == "max" and value > limit:
            reasons.append(f"{key} {_fmt(value)} > max {_fmt(limit)} ({meaning})")
    vtype = scores.get("video_type")
    if vtype is not None and vtype not in config.allowed_video_types:
        reasons.append(f"video_type {vtype} not in allowed {config.allowed_video_types}")
    return (not reasons), reasons
