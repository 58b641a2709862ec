"""Text overlay: share of the frame covered by text, from RapidOCR (PP-OCRv4 detector + recogniser)."""

from __future__ import annotations

import functools
import logging
import threading

import cv2
import numpy as np

log = logging.getLogger(__name__)

_lock = threading.Lock()


class OCRUnavailable(RuntimeError):
    pass


@functools.lru_cache(maxsize=1)
def _make_ocr(det_max_side: int):
    try:
        from rapidocr_onnxruntime import RapidOCR
    except Exception as e:  # ImportError, or onnxruntime failing to load its shared library
        raise OCRUnavailable(
            f"RapidOCR cannot be imported ({type(e).__name__}: {e}); install rapidocr-onnxruntime"
        ) from e
    try:
        # Defaults upscale the short side to 736 px ("min"), i.e. 4x the pixels of a 640x360 frame for
        # nothing: cap the long side instead, the frames are already downscaled on purpose.
        return RapidOCR(det_limit_side_len=det_max_side, det_limit_type="max", print_verbose=False)
    except Exception as e:
        raise OCRUnavailable(f"RapidOCR models failed to load ({type(e).__name__}: {e})") from e


def get_ocr(det_max_side: int = 640):
    """Shared RapidOCR instance (slow to build: three ONNX sessions). Raises OCRUnavailable with a reason."""
    with _lock:
        return _make_ocr(det_max_side)


def text_scores(rgb_frames: list[np.ndarray], ocr, *, min_confidence: float,
                max_chars: int) -> dict[str, float | int | str]:
    """text_area_ratio: union of confident text boxes / frame area, averaged over the frames."""
    ratios, counts, words = [], [], []
    for img in rgb_frames:
        # RapidOCR follows OpenCV's BGR order; skip the 0/180 degree classifier (overlays are upright).
        result, _ = ocr(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), use_cls=False)
        mask = np.zeros(img.shape[:2], np.uint8)
        n = 0
        for box, text, conf in result or []:
            if float(conf) < min_confidence or not str(text).strip():
                continue
            # Union, not sum: overlapping boxes of one caption must not count twice.
            cv2.fillPoly(mask, [np.round(np.asarray(box, np.float32)).astype(np.int32)], 1)
            n += 1
            t = str(text).strip()
            if t not in words:
                words.append(t)
        ratios.append(float(mask.mean()))
        counts.append(n)
    joined = " | ".join(words)
    if len(joined) > max_chars:
        joined = joined[: max_chars - 1] + "…"
    return {
        "text_area_ratio": float(np.mean(ratios)) if ratios else 0.0,
        "text_boxes": int(max(counts)) if counts else 0,  # most confident boxes in one frame
        "ocr_text": joined,
        "ocr_frames": len(rgb_frames),
    }
