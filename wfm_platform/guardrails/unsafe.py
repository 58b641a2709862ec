"""Unsafe-content classification of sampled video frames, behind a small pluggable protocol.

Offline default: NudeNet's detector (YOLO-style ONNX, `320n.onnx` bundled in the `nudenet` wheel, run by
onnxruntime). A frame is unsafe when any EXPOSED sexual body-part class scores >= threshold; covered
parts, faces, feet, armpits and bellies never block. A classifier that cannot load raises GuardError and
the post-guard fails closed (blocks).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import cv2
import numpy as np
from pydantic import BaseModel, Field

from .verdict import GuardError

log = logging.getLogger(__name__)

# NudeNet labels that make a frame unsafe (the rest are benign or "covered").
UNSAFE_CLASSES = (
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)


class UnsafeConfig(BaseModel):
    """Settings of the unsafe-content stage (YAML: post.unsafe)."""

    enabled: bool = True
    classifier: Literal["nudenet"] = "nudenet"
    model_path: str | None = Field(None, description="ONNX file; None = the one bundled in the nudenet wheel")
    # 0.8, not 0.5: NudeNet gives Big Buck Bunny's (animated rabbit) belly FEMALE_BREAST_EXPOSED 0.73-0.74 on
    # 3 of 11 sampled frames; no sample frame scores >= 0.8 (bench/guardrails_faces.py). Chosen on the same
    # footage (no explicit images may be used here, so recall at 0.8 is unmeasured): tune on your own data.
    threshold: float = Field(0.8, gt=0.0, le=1.0)
    classes: list[str] = Field(default_factory=lambda: list(UNSAFE_CLASSES))
    sample_every_s: float = Field(
        0.5, gt=0.0, description="classify one frame per this many seconds (+ last)"
    )
    resolution: int = Field(320, ge=32)


@dataclass
class UnsafeResult:
    score: float  # max score over the unsafe classes, 0 when none fired
    labels: dict[str, float] = field(default_factory=dict)  # unsafe class -> best score on this frame


@runtime_checkable
class UnsafeClassifier(Protocol):
    """Scores one RGB frame (h, w, 3) uint8. Raise GuardError when it cannot run."""

    name: str

    def classify(self, rgb: np.ndarray) -> UnsafeResult: ...


class NudeNetClassifier:
    """NudeNet's bundled ONNX detector, reduced to a per-frame unsafe score."""

    name = "nudenet"

    def __init__(
        self, model_path: str | os.PathLike | None = None, *, classes=UNSAFE_CLASSES, resolution: int = 320
    ):
        try:
            from nudenet import NudeDetector
        except ImportError as e:
            raise GuardError(
                "unsafe: nudenet is not installed; `pip install --no-deps nudenet==3.4.2` (its ONNX model is "
                "bundled; --no-deps keeps it from pulling opencv-python-headless over opencv-contrib)"
            ) from e
        if model_path is not None and not Path(model_path).is_file():
            raise GuardError(
                f"unsafe: model file not found: {model_path} (set post.unsafe.model_path or unset it "
                "to use the model bundled in nudenet)"
            )
        try:
            self._det = NudeDetector(
                model_path=str(model_path) if model_path else None, inference_resolution=resolution
            )
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise GuardError(f"unsafe: cannot load NudeNet model {model_path or '(bundled)'}: {e}") from e
        self.classes = set(classes)

    def classify(self, rgb: np.ndarray) -> UnsafeResult:
        try:
            dets = self._det.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # NudeNet expects OpenCV's BGR
        except Exception as e:
            raise GuardError(f"unsafe: NudeNet failed on a frame: {e}") from e
        labels: dict[str, float] = {}
        for d in dets:
            if d["class"] in self.classes:
                labels[d["class"]] = max(labels.get(d["class"], 0.0), float(d["score"]))
        return UnsafeResult(max(labels.values(), default=0.0), labels)


def make_classifier(cfg: UnsafeConfig) -> UnsafeClassifier:
    return NudeNetClassifier(cfg.model_path, classes=cfg.classes, resolution=cfg.resolution)


class FrameSampler:
    """Decides, while streaming, which frames go to the classifier: one every `every_s` seconds."""

    def __init__(self, fps: float, every_s: float):
        self.step = max(1, round(every_s * (fps if fps > 0 else 25.0)))

    def wants(self, idx: int) -> bool:
        return idx % self.step == 0


@dataclass
class UnsafeScan:
    """Running result of the unsafe stage over one video."""

    threshold: float
    sampled: int = 0
    max_score: float = 0.0
    flagged: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (frame, labels) >= threshold

    def add(self, idx: int, r: UnsafeResult) -> None:
        self.sampled += 1
        self.max_score = max(self.max_score, r.score)
        if r.score >= self.threshold:
            self.flagged.append((idx, {k: round(v, 3) for k, v in r.labels.items() if v >= self.threshold}))

    @property
    def unsafe(self) -> bool:
        return bool(self.flagged)
