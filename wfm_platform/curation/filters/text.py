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
def _make_ocr():
    try:
        from rapidocr_onnxruntime import RapidOCR
    except Exception as e:  # ImportError, or onnxruntime failing to load its shared library
        raise OCRUnavailable(
            f"RapidOCR cannot be imported ({type(e).__name__}: {e}); install rapidocr-onnxruntime"
        ) from e
    try:
        # Defaults upscale the short side to 736 px ("min"): 6x the pixels of a 480x270 frame, 3x the
        # time, for nothing. Cap the long side instead: our frames are already downscaled on purpose.
        return RapidOCR(det_limit_side_len=960, det_limit_type="max", print_verbose=False)
    except Exception as e:
        raise OCRUnavailable(f"RapidOCR models failed to load ({type(e).__name__}: {e})") from e


def get_ocr():
    """Shared RapidOCR instance (slow to build: three ONNX sessions). Raises OCRUnavailable with a reason."""
    with _lock:
        return _make_ocr()


def _detect(ocr, bgr: np.ndarray, min_det_score: float) -> list[np.ndarray]:
    """Text boxes (4x2 float arrays) from the PP-OCRv4 detector alone: the fast half of OCR.

    Note: RapidOCR stores box_thresh on the (shared) instance; every call here passes it explicitly.
    """
    boxes, _ = ocr(bgr, use_det=True, use_cls=False, use_rec=False, box_thresh=min_det_score)
    return [np.asarray(b, np.float32).reshape(4, 2) for b in boxes or []]


def _recognise(ocr, bgr: np.ndarray, box: np.ndarray) -> tuple[str, float]:
    x0, y0 = np.floor(box.min(axis=0)).astype(int)
    x1, y1 = np.ceil(box.max(axis=0)).astype(int)
    h, w = bgr.shape[:2]
    crop = bgr[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    if crop.size == 0:
        return "", 0.0
    res, _ = ocr(np.ascontiguousarray(crop), use_det=False, use_cls=False, use_rec=True)
    if not res:
        return "", 0.0
    text, conf = res[0][0], res[0][1]
    return str(text).strip(), float(conf)


def text_scores(rgb_frames: list[np.ndarray], ocr, *, min_confidence: float, min_det_score: float,
                max_rec_boxes: int, max_chars: int) -> dict[str, float | int | str]:
    """text_area_ratio: union of text boxes / frame area, averaged over the frames.

    Why detection for the area and recognition only for the largest boxes: recognition runs once per
    box, and a screen full of text has dozens per frame (25 s for 3 frames on 2 cores). The detector
    already scores each box (min_det_score); the `max_rec_boxes` largest boxes are also recognised,
    which gives ocr_text and drops those that read as nothing (recognition confidence < min_confidence).
    """
    per_frame: list[tuple[np.ndarray, list[np.ndarray]]] = []
    for img in rgb_frames:
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)  # RapidOCR follows OpenCV's channel order
        per_frame.append((bgr, _detect(ocr, bgr, min_det_score)))

    # Largest boxes first, over all frames: big overlays matter, tiny boxes are often texture.
    ranked = sorted(
        ((cv2.contourArea(b), fi, bi) for fi, (_, boxes) in enumerate(per_frame) for bi, b in enumerate(boxes)),
        reverse=True,
    )[:max_rec_boxes]
    rejected: set[tuple[int, int]] = set()
    words: list[str] = []
    for _, fi, bi in ranked:
        text, conf = _recognise(ocr, per_frame[fi][0], per_frame[fi][1][bi])
        if conf < min_confidence or not text:
            rejected.add((fi, bi))
        elif text not in words:
            words.append(text)

    ratios, counts = [], []
    for fi, (bgr, boxes) in enumerate(per_frame):
        mask = np.zeros(bgr.shape[:2], np.uint8)
        kept = [np.round(b).astype(np.int32) for bi, b in enumerate(boxes) if (fi, bi) not in rejected]
        if kept:
            # Union, not sum: overlapping boxes of one caption must not count twice.
            cv2.fillPoly(mask, kept, 1)
        ratios.append(float(mask.mean()))
        counts.append(len(kept))
    joined = " | ".join(words)
    if len(joined) > max_chars:
        joined = joined[: max(0, max_chars - 1)] + "…"
    return {
        "text_area_ratio": float(np.mean(ratios)) if ratios else 0.0,
        "text_boxes": int(max(counts)) if counts else 0,  # text boxes in the frame with the most
        "ocr_text": joined,
        "ocr_frames": len(rgb_frames),
    }
