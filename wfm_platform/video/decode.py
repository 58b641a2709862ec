"""Streaming decode with PyAV. Nothing here holds a whole video in memory.

Frame indices are 0-based in decode (presentation) order, the numbering `wfm shots` prints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import av
import cv2
import numpy as np

from .probe import VideoError

log = logging.getLogger(__name__)


def _open(path: str | os.PathLike, threads: bool = True):
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise VideoError(f"cannot open: {e}", path) from e
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream", path)
    stream = container.streams.video[0]
    if threads:
        stream.thread_type = "AUTO"
    return container, stream


def upright(img: np.ndarray, rotation: int) -> np.ndarray:
    # frame.rotation is counter-clockwise degrees of the display matrix; turn pixels to match.
    r = rotation % 360
    if r == 0:
        return img
    return np.ascontiguousarray(np.rot90(img, k=r // 90))


def luma_plane(frame: av.VideoFrame) -> np.ndarray:
    """Y plane as a (h, w) uint8 view without a colour conversion, when the format allows."""
    name = frame.format.name
    if name.startswith(("yuv", "yuvj", "nv12", "nv21")) and "p1" not in name and "p9" not in name:
        plane = frame.planes[0]
        buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        return buf[: frame.height, : frame.width]
    return frame.to_ndarray(format="gray")


def iter_frames(
    path: str | os.PathLike,
    *,
    start: int = 0,
    end: int | None = None,
    step: int = 1,
    size: tuple[int, int] | None = None,
    fmt: str = "rgb24",
    on_error: str = "stop",
    only: set[int] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame_index, image) for frames start..end inclusive, every `step`-th.

    fmt: "rgb24" -> (h, w, 3) uint8; "gray" -> (h, w) uint8 luma (fast path, no colour conversion).
    size: (width, height) to resize to (area interpolation), after rotation.
    on_error: "stop" ends the stream at a corrupt packet (what truncated files need); "raise" raises
    VideoError.
    only: if given, just these frame indices are converted and yielded (the rest are decoded, which
    the codec needs, but never converted: conversion costs as much as decoding).
    """
    for idx, frame in iter_av_frames(path, on_error=on_error):
        if end is not None and idx > end:
            break
        if idx < start or (idx - start) % step or (only is not None and idx not in only):
            continue
        img = luma_plane(frame) if fmt == "gray" else frame.to_ndarray(format=fmt)
        img = upright(img, getattr(frame, "rotation", 0) or 0)
        if size is not None and (img.shape[1], img.shape[0]) != tuple(size):
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        yield idx, img


def iter_av_frames(path: str | os.PathLike, *, on_error: str = "stop") -> Iterator[tuple[int, av.VideoFrame]]:
    """(index, decoded av.VideoFrame) in decode order, threads on. The one decode loop every reader uses.

    on_error: "stop" ends quietly at a corrupt packet (a truncated upload still yields its good
    frames; a warning is logged); "raise" raises VideoError.
    """
    container, stream = _open(path)
    try:
        idx = -1
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                if on_error == "raise":
                    raise VideoError(f"decode error after frame {idx}: {e}", path) from e
                log.warning("%s: decode error after frame %d, stopping there: %s", path, idx, e)
                break
            idx += 1
            yield idx, frame
    finally:
        container.close()


def sample_frames(
    path: str | os.PathLike,
    start: int,
    end: int,
    n: int,
    *,
    size: tuple[int, int] | None = None,
    fmt: str = "rgb24",
) -> list[tuple[int, np.ndarray]]:
    """n frames spread evenly over [start, end] (inclusive), decoded in one streaming pass."""
    if end < start:
        raise ValueError(f"empty range {start}..{end}")
    n = max(1, min(n, end - start + 1))
    wanted = sorted({int(round(x)) for x in np.linspace(start, end, n)})
    out: list[tuple[int, np.ndarray]] = []
    it = iter(wanted)
    target = next(it)
    for idx, img in iter_frames(path, start=start, end=end, size=size, fmt=fmt, only=set(wanted)):
        if idx == target:
            out.append((idx, img))
            target = next(it, None)
            if target is None:
                break
    return out


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled so the longer side is at most max_side, even numbers, aspect kept."""
    s = min(1.0, max_side / max(width, height))
    return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)
