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
    written = transcode_segments(src, [(start, end, dst)], fps=fps, crf=crf, preset=preset, max_side=max_side)
    return written[str(Path(dst))]


class _SegmentWriter:
    """An open H.264 encoder for one segment, committed atomically when closed."""

    def __init__(self, dst: Path, rate: Fraction, crf: int, preset: str, size: tuple[int, int]):
        from ..storage.atomic import atomic_path as _ap

        self._ctx = _ap(dst)
        self.tmp = self._ctx.__enter__()
        self.out = av.open(str(self.tmp), mode="w", format="mp4")
        w, h = _even(size[0]), _even(size[1])
        self.stream = self.out.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = w, h
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": preset}
        self.frames = 0

    def write(self, img: np.ndarray) -> None:
        h, w = self.stream.height, self.stream.width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h, :w]), format="rgb24")
        for packet in self.stream.encode(frame):
            self.out.mux(packet)
        self.frames += 1

    def close(self, ok: bool = True) -> None:
        try:
            if ok:
                for packet in self.stream.encode():
                    self.out.mux(packet)
            self.out.close()
        except BaseException as e:
            self._ctx.__exit__(type(e), e, e.__traceback__)
            raise
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            err = RuntimeError("segment aborted")
            self._ctx.__exit__(RuntimeError, err, None)


def transcode_segments(
    src: str | os.PathLike,
    segments: list[tuple[int, int, str | os.PathLike]],
    *,
    fps: float,
    crf: int = 23,
    preset: str = "veryfast",
    max_side: int | None = None,
    on_frame=None,
) -> dict[str, int]:
    """Cut many (start, end, dst) segments out of src in ONE decode pass. Returns {dst: frames}.

    Segments must not overlap. A decode error ends the pass: segments already complete are kept,
    the open one is discarded (never half-written), the rest are reported with 0 frames.
    on_frame(idx, rgb) is called for every frame inside a segment (to sample frames for analysis
    without decoding again).
    """
    segs = sorted(((int(s), int(e), Path(d)) for s, e, d in segments), key=lambda t: t[0])
    for (s1, e1, _), (s2, _, _) in zip(segs, segs[1:]):
        if s2 <= e1:
            raise ValueError(f"overlapping segments {s1}..{e1} and {s2}..")
    written: dict[str, int] = {str(d): 0 for _, _, d in segs}
    if not segs:
        return written
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    size = None
    if max_side:
        from .decode import fit_size
        from .probe import probe

        info = probe(src)
        if max(info.width, info.height) > max_side:
            size = fit_size(info.width, info.height, max_side)
    i = 0
    writer: _SegmentWriter | None = None
    try:
        for idx, img in iter_frames(src, start=segs[0][0], end=segs[-1][1], size=size):
            while i < len(segs) and idx > segs[i][1]:
                i += 1
            if i >= len(segs):
                break
            s, e, dst = segs[i]
            if idx < s:
                continue
            if writer is None:
                writer = _SegmentWriter(dst, rate, crf, preset, (img.shape[1], img.shape[0]))
            writer.write(img)
            if on_frame is not None:
                on_frame(idx, img)
            if idx == e:
                writer.close(ok=True)
                written[str(dst)] = writer.frames
                writer = None
    finally:
        if writer is not None:  # source ended (truncated) inside a segment: discard it
            writer.close(ok=False)
    return written
