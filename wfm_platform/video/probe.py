"""Probe a video from its content (never its extension) with PyAV."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av

log = logging.getLogger(__name__)

# Smallest frame we accept: below this nothing downstream (filters, captions, tokenizer) is meaningful.
MIN_SIDE = 32


class VideoError(Exception):
    """A video that cannot be used; `reason` is short, readable and goes into metadata."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None):
        self.reason = reason
        self.path = str(path) if path is not None else None
        super().__init__(f"{path}: {reason}" if path else reason)


@dataclass(frozen=True)
class VideoInfo:
    path: str
    container: str  # demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"
    codec: str
    width: int  # display width, after rotation
    height: int  # display height, after rotation
    fps: float  # average frame rate
    num_frames: int  # counted or estimated (see frames_exact)
    frames_exact: bool
    duration_s: float
    rotation: int  # degrees counter-clockwise the decoded frames must be turned to display upright
    pix_fmt: str
    bit_depth: int
    has_audio: bool
    variable_frame_rate: bool
    size_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def _rotation(stream: av.video.stream.VideoStream, first_frame: av.VideoFrame | None) -> int:
    rot = 0
    if first_frame is not None and getattr(first_frame, "rotation", None):
        rot = int(first_frame.rotation)
    else:
        tag = stream.metadata.get("rotate")
        if tag:
            rot = -int(tag)  # legacy mp4 tag is clockwise
    return rot % 360


def _bit_depth(pix_fmt: str) -> int:
    for depth in (16, 14, 12, 10, 9):
        if f"p{depth}" in pix_fmt or pix_fmt.endswith(f"{depth}le") or pix_fmt.endswith(f"{depth}be"):
            return depth
    return 8


def probe(path: str | os.PathLike, *, count_frames: bool = False, vfr_window: int = 120) -> VideoInfo:
    """Read container and stream facts and decode the first frames to prove the file is usable.

    Raises VideoError with a readable reason for anything we cannot curate: empty, not a video,
    audio only, undecodable, too small. `count_frames=True` demuxes the whole file (packets only,
    no decoding) and counts video packets, which is the frame count for nearly every file (a packet can
    decode to no frame: samples' coin_pen.mov has 243 packets, 242 frames); otherwise the count comes from
    the header or duration.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise VideoError(f"cannot read file: {e.strerror}", path) from e
    if size == 0:
        raise VideoError("empty file (0 bytes)", path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError as e:
        kind = _sniff(path)
        if kind:
            raise VideoError(f"truncated or corrupt {kind} file: its container cannot be parsed", path) from e
        raise VideoError("not a video: no known container format in its content", path) from e
    except av.error.FFmpegError as e:
        raise VideoError(f"cannot open: {e}", path) from e
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoError(f"no video stream (streams: {', '.join(kinds)})", path)
        stream = container.streams.video[0]
        cc = stream.codec_context
        if stream.codec_context.name is None or stream.codec_context.name == "none":
            raise VideoError("video stream has no decodable codec", path)
        # Decode a few frames: proves decodability and gives rotation and frame timing.
        first = None
        pts: list[int] = []
        try:
            for i, frame in enumerate(container.decode(stream)):
                if first is None:
                    first = frame
                if frame.pts is not None:
                    pts.append(frame.pts)
                if i + 1 >= vfr_window:
                    break
        except av.error.FFmpegError as e:
            if first is None:
                raise VideoError(f"undecodable video stream ({cc.name}): {e}", path) from e
        if first is None:
            raise VideoError(f"video stream ({cc.name}) decodes to zero frames (truncated?)", path)

        w, h = first.width, first.height
        rot = _rotation(stream, first)
        if rot in (90, 270):
            w, h = h, w
        if min(w, h) < MIN_SIDE:
            raise VideoError(f"frame too small: {w}x{h} (minimum side {MIN_SIDE} px)", path)

        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        tb = stream.time_base or Fraction(1, 1)
        if stream.duration is not None:
            duration = float(stream.duration * tb)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        # Variable frame rate: frame intervals in the first window disagree by more than 10%.
        vfr = False
        if len(pts) > 3:
            d = sorted(b - a for a, b in zip(sorted(pts), sorted(pts)[1:]) if b > a)
            if d and d[0] > 0 and d[-1] / d[0] > 1.1 and d[len(d) // 2] > 0:
                vfr = (d[-1] - d[0]) / d[len(d) // 2] > 0.1
        frames_exact = False
        n = stream.frames or 0
        if count_frames or n <= 0:
            n = _count_packets(path)
            frames_exact = True
        if fps <= 0 and duration > 0:
            fps = n / duration
        if duration <= 0 and fps > 0:
            duration = n / fps
        return VideoInfo(
            path=str(path),
            container=container.format.name,
            codec=cc.name,
            width=w,
            height=h,
            fps=round(fps, 4),
            num_frames=int(n),
            frames_exact=frames_exact,
            duration_s=round(duration, 4),
            rotation=rot,
            pix_fmt=first.format.name,
            bit_depth=_bit_depth(first.format.name),
            has_audio=bool(container.streams.audio),
            variable_frame_rate=vfr,
            size_bytes=size,
        )


_MAGIC = [
    (4, b"ftyp", "MP4/MOV"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"RIFF", "AVI"),
    (0, b"\x00\x00\x01\xba", "MPEG-PS"),
    (0, b"FLV", "FLV"),
]


def _sniff(path: Path) -> str:
    """Container family from the first bytes, to tell 'truncated video' from 'not a video'."""
    with open(path, "rb") as f:
        head = f.read(16)
    for off, magic, name in _MAGIC:
        if head[off : off + len(magic)] == magic:
            return name
    return ""


def _count_packets(path: Path) -> int:
    """Exact-ish frame count by demuxing video packets (cheap: no decoding)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sum(1 for p in c.demux(s) if p.size > 0)
