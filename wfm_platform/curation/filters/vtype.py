"""Video type: natural / animation / screen_recording / static_slideshow, from cheap image statistics."""

from __future__ import annotations

import cv2
import numpy as np

VIDEO_TYPES = ("natural", "animation", "screen_recording", "static_slideshow")

# Immerkaer's noise-estimation kernel: responds to pixel noise, cancels on edges and smooth gradients.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def smooth_region_noise(luma: np.ndarray) -> float:
    """Noise (luma levels) in the smooth parts of a NATIVE-resolution luma crop.

    Cameras leave photon/sensor noise or film grain in smooth areas; rendered or drawn frames are clean
    there. Native resolution matters: downscaling averages the noise away. Edges are excluded (a 5x5
    mean Sobel magnitude below 32) because the kernel responds to fine texture too.
    """
    y = luma.astype(np.float32)
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3)
    smooth = cv2.blur(np.hypot(gx, gy), (5, 5)) < 32
    if smooth.sum() < 100:
        return 0.0
    r = np.abs(cv2.filter2D(y, -1, _NOISE_KERNEL, borderType=cv2.BORDER_REFLECT))
    return float(np.sqrt(np.pi / 2) / 6 * r[smooth].mean())


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness: ~0 grey, ~15 dull, ~45 colourful, 60+ very colourful."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def frame_features(rgb: np.ndarray) -> dict[str, float]:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.hypot(gx, gy)
    strong = mag > 100  # clear edges (Sobel scale: a 25-level step gives ~100)
    ax, ay = np.abs(gx[strong]), np.abs(gy[strong])
    # Share of strong edges within ~6 degrees of horizontal/vertical: UI, windows, text lines.
    axis = float(((np.minimum(ax, ay) < 0.1 * np.maximum(ax, ay))).mean()) if strong.any() else 0.0
    # Colours needed to cover 90% of the pixels, at 4 bits per channel (4096 bins).
    q = (rgb >> 4).astype(np.int32)
    hist = np.bincount((q[..., 0] << 8 | q[..., 1] << 4 | q[..., 2]).ravel(), minlength=4096)
    hist = np.sort(hist)[::-1].cumsum()
    colours90 = int(np.searchsorted(hist, 0.9 * hist[-1]) + 1)
    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    return {
        "flat_ratio": float((mag < 8).mean()),  # pixels in perfectly flat regions (|grad| < ~2 levels)
        "edge_ratio": float(strong.mean()),
        "axis_edge_ratio": axis,
        "colours90": float(colours90),
        "saturated_ratio": float((sat > 128).mean()),  # pixels with HSV saturation > 0.5
        "colourfulness": colourfulness(rgb),
    }


def clip_features(rgb_frames: list[np.ndarray], luma_crops: list[np.ndarray]) -> dict[str, float]:
    """Median over the sampled frames (robust to one odd frame, e.g. a fade)."""
    feats = [frame_features(f) for f in rgb_frames]
    out = {k: float(np.median([f[k] for f in feats])) for k in feats[0]}
    out["smooth_noise"] = float(np.median([smooth_region_noise(c) for c in luma_crops])) if luma_crops else 0.0
    return out


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at lo, 1 at hi, linear between (hi < lo gives a falling ramp)."""
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def classify(f: dict[str, float]) -> tuple[str, dict[str, float]]:
    """Type scores in [0, 1] and the winner. `f` holds clip_features plus text/motion scores.

    The break points were set on the sample footage (see tests/test_filters.py) and synthetic screen
    recordings / slideshows; each signal has a physical reason, written next to it.
    """
    # Animation (drawn or CG-rendered): art-directed palettes are vivid (high colourfulness, many
    # strongly saturated pixels) and rendered frames carry no sensor noise in smooth areas. Either
    # signal alone is ambiguous (saturated real scenes exist; compression also cleans footage), so
    # the score needs both.
    vivid = 0.5 * _ramp(f["colourfulness"], 15, 60) + 0.5 * _ramp(f["saturated_ratio"], 0, 0.5)
    clean = _ramp(f["smooth_noise"], 0.6, 0.2)
    animation = vivid * np.sqrt(clean)
    # Screen recording: text is necessary (a UI without text is rare), and it must come with the look
    # of rendered UI: large perfectly flat fills (windows, backgrounds), very few distinct colours,
    # regions that never move (toolbars, sidebars), edges on the pixel axes. Burned-in subtitles on
    # camera footage give text without most of these. Axis-aligned edges get little weight: at
    # analysis size anti-aliased glyphs have edges in every direction, so the ratio is modest even
    # on a page of text.
    text = _ramp(f["text_area_ratio"], 0.02, 0.12)
    ui = (0.35 * _ramp(f["flat_ratio"], 0.35, 0.6) + 0.3 * _ramp(f["colours90"], 60, 15)
          + 0.2 * f["still_area_ratio"] + 0.15 * _ramp(f["axis_edge_ratio"], 0.35, 0.7))
    screen = text * ui
    # Static slideshow: the picture does not change between most frame pairs ~0.1 s apart (held
    # stills; changes between slides are abrupt, so they hit few pairs).
    slideshow = _ramp(f["static_ratio"], 0.4, 0.8)
    scores = {"animation": float(animation), "screen_recording": screen, "static_slideshow": slideshow}
    scores["natural"] = 1.0 - max(scores.values())
    scores = {k: round(v, 4) for k, v in scores.items()}
    # Ordered tie-break: a static screen recording is a screen recording first.
    order = ("screen_recording", "static_slideshow", "animation", "natural")
    best = max(order, key=lambda k: (scores[k], -order.index(k)))
    return best, scores
