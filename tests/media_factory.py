"""Real but awkward media files for tests, made with PyAV from the sample footage."""

from __future__ import annotations

import shutil
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from wfm_platform.video import iter_frames, write_mp4


def zero_byte(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def not_a_video(p: Path) -> Path:
    p.write_text("this is a text file with a video extension\n" * 50)
    return p


def truncated(src: Path, p: Path, keep: float = 0.4) -> Path:
    data = src.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])
    return p


def audio_only(p: Path, seconds: float = 1.0) -> Path:
    rate = 16000
    with av.open(str(p), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=rate)
        t = np.arange(int(rate * seconds)) / rate
        pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for i in range(0, len(pcm), 1024):
            chunk = pcm[i : i + 1024]
            if len(chunk) < 1024:
                chunk = np.pad(chunk, (0, 1024 - len(chunk)))
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = i
            for pkt in s.encode(frame):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return p


def tiny(src: Path, p: Path, size: int = 16, frames: int = 30) -> Path:
    imgs = (img for _, img in iter_frames(src, end=frames - 1, size=(size, size)))
    write_mp4(imgs, p, fps=25)
    return p


def one_frame(src: Path, p: Path) -> Path:
    write_mp4((img for _, img in iter_frames(src, end=0)), p, fps=25)
    return p


def rotated(src: Path, p: Path, frames: int = 75, start: int = 0) -> Path:
    """An mp4 whose track matrix says 'display rotated 90 degrees clockwise' (a phone video)."""
    tmp = p.with_suffix(".plain.mp4")
    write_mp4((img for _, img in iter_frames(src, start=start, end=start + frames - 1)), tmp, fps=25)
    data = bytearray(tmp.read_bytes())
    ident = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(ident, data.find(b"tkhd"))
    assert at > 0, "tkhd matrix not found"
    data[at : at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    p.write_bytes(bytes(data))
    tmp.unlink()
    return p


def variable_frame_rate(src: Path, p: Path, frames: int = 100, start: int = 0) -> Path:
    """Frames with irregular timestamps (alternating 1/50 s and 3/50 s gaps), like screen captures."""
    with av.open(str(p), "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=50)
        s.codec_context.time_base = Fraction(1, 50)
        s.pix_fmt = "yuv420p"
        pts = 0
        for i, (_, img) in enumerate(iter_frames(src, start=start, end=start + frames - 1)):
            if i == 0:
                s.width, s.height = img.shape[1] - img.shape[1] % 2, img.shape[0] - img.shape[0] % 2
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[: s.height, : s.width]), format="rgb24")
            f.pts = pts
            f.time_base = Fraction(1, 50)
            pts += 1 if i % 2 == 0 else 3
            for pkt in s.encode(f):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return p


def matroska_named_mp4(src: Path, p: Path, frames: int = 75, start: int = 0) -> Path:
    with av.open(str(p), "w", format="matroska") as out:
        s = out.add_stream("libx264", rate=25)
        s.pix_fmt = "yuv420p"
        for i, (_, img) in enumerate(iter_frames(src, start=start, end=start + frames - 1)):
            if i == 0:
                s.width, s.height = img.shape[1], img.shape[0]
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return p


def copy_as(src: Path, p: Path) -> Path:
    shutil.copyfile(src, p)
    return p
