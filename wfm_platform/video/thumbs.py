"""Thumbnails and thumbnail strips for the Dagster UI and previews."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def strip(images: Sequence[np.ndarray], height: int = 72, max_width: int = 1600) -> np.ndarray:
    """Side-by-side RGB strip of the images, each scaled to `height`, cut to max_width."""
    tiles = []
    for img in images:
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        w = max(1, int(round(img.shape[1] * height / img.shape[0])))
        tiles.append(cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA))
        tiles.append(np.full((height, 2, 3), 255, np.uint8))
    if not tiles:
        return np.zeros((height, 1, 3), np.uint8)
    return np.concatenate(tiles[:-1], axis=1)[:, :max_width]


def png_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img)
    if not ok:
        raise ValueError("PNG encode failed")
    return buf.tobytes()


def jpeg_bytes(img: np.ndarray, quality: int = 85) -> bytes:
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encode failed")
    return buf.tobytes()


def grid(images: Sequence[np.ndarray], cols: int = 6, height: int = 90) -> np.ndarray:
    """Rows of `cols` thumbnails (each scaled to `height`), for previews that must not scroll sideways."""
    rows = [strip(images[i : i + cols], height=height, max_width=10**6) for i in range(0, len(images), cols)]
    if not rows:
        return strip([], height)
    width = max(r.shape[1] for r in rows)
    pad = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(pad, axis=0)


def jpeg_grid(jpegs: Sequence[bytes], cols: int = 4, height: int = 90) -> bytes:
    """A JPEG grid of JPEG thumbnails (what the UI metadata shows)."""
    imgs = [cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for b in jpegs]
    return jpeg_bytes(grid(imgs, cols=cols, height=height))
