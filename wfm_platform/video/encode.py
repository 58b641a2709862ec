"""H.264 encoding with PyAV (libx264 bundled in the wheel): clip transcode and array -> mp4."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..storage.atomic import atomic_path
from .decode import iter_frames


def _even(x: int) -> int:
    return max(2, x - (x % 2))


def write_mp4(
    frames: Iterable[np.ndarray],
    dst: str | os.PathLike,
    *,
    fps: float,
    crf: int = 23,
    preset: str = "veryfast",
    threads: int = 0,
) -> int:
    """Encode RGB uint8 frames (h, w, 3) to an H.264 yuv420p mp4, atomically. Returns frames written.

    Odd sizes are cropped by one pixel (yuv420p needs even sides).
    """
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    n = 0
    with atomic_path(dst) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            stream = None
            for img in frames:
                if stream is None:
                    h, w = _even(img.shape[0]), _even(img.shape[1])
                    stream = out.add_stream("libx264", rate=rate)
                    stream.width, stream.height = w, h
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), "preset": preset}
                    if threads:
                        stream.codec_context.thread_count = threads
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h, :w]), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
                n += 1
            if stream is None:
                raise ValueError(f"no frames to write to {dst}")
            for packet in stream.encode():
                out.mux(packet)
    return n


def transcode_clip(
    src: str | os.PathLike,
    start: int,
    end: int,
    dst: str | os.PathLike,
    *,
    fps: float,
    crf: int = 23,
    preset: str = "veryfast",
    max_side: int | None = None,
) -> int:
    """Cut frames start..end (inclusive) of src to an H.264 mp4 at dst. Returns frames written."""
    size = None
    if max_side:
        from .probe import probe

        info = probe(src)
        if max(info.width, info.height) > max_side:
            from .decode import fit_size

            size = fit_size(info.width, info.height, max_side)
    frames = (img for _, img in iter_frames(src, start=start, end=end, size=size))
    return write_mp4(frames, dst, fps=fps, crf=crf, preset=preset)


def read_all(path: str | Path, **kw) -> np.ndarray:
    """Whole (short) clip as (n, h, w, 3). For tests and small clips only."""
    return np.stack([img for _, img in iter_frames(path, **kw)])
