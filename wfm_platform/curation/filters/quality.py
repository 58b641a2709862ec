"""Visual quality: sharpness, exposure, compression blockiness and (optional) BRISQUE."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

# Luma levels (0-255) for exposure clipping: below DARK_LEVEL is crushed black, above BRIGHT_LEVEL is
# blown-out white (video "legal" range is 16-235, so these sit just inside full-range extremes).
DARK_LEVEL = 20
BRIGHT_LEVEL = 240

BRISQUE_FILES = ("brisque_model_live.yml", "brisque_range_live.yml")
# Debian `opencv-data` installs the BRISQUE model here; a configured folder takes precedence.
BRISQUE_DEFAULT_DIRS = ("/usr/share/opencv4/quality", "/usr/share/opencv/quality")


def blur_laplacian_var(gray: np.ndarray) -> float:
    """Variance of the Laplacian: low = few sharp edges (blurred, out of focus).

    Computed on frames already scaled to the same analysis size (<= quality_max_side), which is what
    makes the number comparable across source resolutions.
    """
    return float(cv2.Laplacian(gray, cv2.CV_32F, ksize=1).var())


def blockiness(luma: np.ndarray) -> float:
    """Ratio of the luma jump across 8x8 block boundaries to the jump inside blocks.

    ~1.0 for a clean picture; heavy DCT quantisation makes every 8th column/row a visible step, so the
    ratio grows (2+ is very blocky). Needs native resolution: scaling would smear the grid.
    """
    y = luma.astype(np.float32)
    dx = np.abs(np.diff(y, axis=1))  # dx[:, i] is the jump between column i and i+1
    dy = np.abs(np.diff(y, axis=0))
    bx = np.arange(dx.shape[1]) % 8 == 7  # jumps from column 8k+7 to 8k+8 cross a block edge
    by = np.arange(dy.shape[0]) % 8 == 7
    eps = 1e-3
    rx = (dx[:, bx].mean() + eps) / (dx[:, ~bx].mean() + eps) if bx.any() else 1.0
    ry = (dy[by, :].mean() + eps) / (dy[~by, :].mean() + eps) if by.any() else 1.0
    return float((rx + ry) / 2)


def exposure(gray: np.ndarray) -> tuple[float, float, float, float]:
    """(mean brightness 0-1, share of crushed-black pixels, share of blown-white pixels, contrast std 0-1)."""
    return (
        float(gray.mean()) / 255.0,
        float((gray < DARK_LEVEL).mean()),
        float((gray > BRIGHT_LEVEL).mean()),
        float(gray.std()) / 255.0,
    )


def find_brisque_model(model_dir: str | None) -> tuple[str, str] | None:
    dirs = [model_dir] if model_dir else list(BRISQUE_DEFAULT_DIRS)
    for d in dirs:
        paths = [Path(d) / f for f in BRISQUE_FILES]
        if all(p.is_file() for p in paths):
            return str(paths[0]), str(paths[1])
    return None


@functools.lru_cache(maxsize=4)
def _brisque(model: str, range_: str):
    return cv2.quality.QualityBRISQUE_create(model, range_)


def quality_scores(rgb_frames: list[np.ndarray], luma_crops: list[np.ndarray],
                   brisque_model_dir: str | None = None) -> dict[str, float | str]:
    grays = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb_frames]
    exp = np.array([exposure(g) for g in grays])
    scores: dict[str, float | str] = {
        # Median: one motion-blurred frame should not condemn a sharp clip.
        "blur_laplacian_var": float(np.median([blur_laplacian_var(g) for g in grays])),
        "brightness_mean": float(exp[:, 0].mean()),
        "dark_ratio": float(exp[:, 1].mean()),
        "bright_ratio": float(exp[:, 2].mean()),
        "contrast_std": float(exp[:, 3].mean()),
        "blockiness": float(np.median([blockiness(c) for c in luma_crops])) if luma_crops else 1.0,
    }
    files = find_brisque_model(brisque_model_dir)
    if files is None:
        where = brisque_model_dir or " or ".join(BRISQUE_DEFAULT_DIRS)
        scores["brisque_status"] = f"skipped: no {BRISQUE_FILES[0]} in {where} (Debian package opencv-data)"
    else:
        model = _brisque(*files)
        # BRISQUE: 0 (best) .. 100 (worst), natural-scene statistics; 3 frames are enough for a clip score.
        picks = grays[:: max(1, len(grays) // 3)][:3]
        scores["brisque"] = float(np.mean([model.compute(g)[0] for g in picks]))
        scores["brisque_status"] = "ok"
    return scores
