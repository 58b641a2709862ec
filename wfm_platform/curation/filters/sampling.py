"""One streaming decode pass that keeps only the few downscaled frames the filters need.

Why a pass of its own instead of `iter_frames`: the filters want three views of a handful of frames
(small gray for optical flow, ~640 px RGB for quality/OCR/type, a native-resolution luma crop for the
8x8 blockiness grid). Converting every decoded frame would cost as much as the decode itself, so every
other frame is decoded and dropped without any colour conversion.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from ...video.decode import fit_size, iter_av_frames, luma_plane, upright
from ...video.probe import VideoError

log = logging.getLogger(__name__)


@dataclass
class ClipSample:
    """Frames of one clip, keyed by absolute frame index."""

    fps: float
    start: int
    end: int  # inclusive, as requested (decode may stop earlier on a truncated file)
    gap: int  # frames between the two frames of a motion pair
    anchors: list[int]  # first frame of each motion triple (anchor, anchor+gap, anchor+2*gap)
    gray: dict[int, np.ndarray] = field(default_factory=dict)  # small luma for optical flow
    rgb: dict[int, np.ndarray] = field(default_factory=dict)  # ~640 px RGB at the anchors
    luma_crop: dict[int, np.ndarray] = field(default_factory=dict)  # native-resolution luma crop
    last_decoded: int = -1
    native_size: tuple[int, int] = (0, 0)  # (w, h) after rotation

    @property
    def triples(self) -> list[tuple[int, int, int]]:
        """Motion triples whose three frames were all decoded."""
        out = []
        for a in self.anchors:
            t = (a, a + self.gap, a + 2 * self.gap)
            if all(i in self.gray for i in t):
                out.append(t)
        return out


def plan(start: int, end: int, fps: float, n_anchors: int, gap_s: float) -> tuple[list[int], int]:
    """Anchor frames spread over [start, end] and the pair gap in frames.

    The gap is a fixed time (not a fixed share of the clip) so flow magnitudes compare across clips of
    any length; it shrinks only when the clip is too short to hold one triple.
    """
    length = end - start + 1
    gap = max(1, int(round(fps * gap_s)))
    if length < 2 * gap + 1:
        gap = max(1, (length - 1) // 2)
    last_anchor = end - 2 * gap
    if last_anchor < start:  # one or two frames: no motion triple fits, keep one frame for quality
        return [start], gap
    n = max(1, min(n_anchors, last_anchor - start + 1))
    anchors = sorted({int(round(x)) for x in np.linspace(start, last_anchor, n)})
    return anchors, gap


def sample_options(cfg) -> dict:
    """decode_sample / SampleCollector keyword arguments from a FilterConfig."""
    return {"n_anchors": cfg.motion_samples, "gap_s": cfg.motion_gap_s,
            "motion_max_side": cfg.motion_max_side,
            "rgb_max_side": cfg.quality_max_side, "crop_side": cfg.blockiness_crop}


def _empty_sample(start: int, end: int, fps: float, n_anchors: int, gap_s: float
                  ) -> tuple[ClipSample, set[int], set[int]]:
    """The ClipSample to fill, the frames wanted in gray (every frame of each motion triple) and those
    wanted in colour (the anchors): one plan for decode_sample and SampleCollector."""
    anchors, gap = plan(start, end, fps, n_anchors, gap_s)
    sample = ClipSample(fps=fps, start=start, end=end, gap=gap, anchors=anchors)
    return sample, {a + k * gap for a in anchors for k in range(3)}, set(anchors)


def _aligned_center_crop(img: np.ndarray, side: int) -> np.ndarray:
    """Center crop whose origin sits on the 8x8 coding grid (so block edges stay at x % 8 == 0)."""
    h, w = img.shape[:2]
    ch, cw = min(side, h - h % 8), min(side, w - w % 8)
    y0 = ((h - ch) // 2) // 8 * 8
    x0 = ((w - cw) // 2) // 8 * 8
    return np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw])


def decode_sample(
    path: str | os.PathLike,
    start: int,
    end: int,
    fps: float,
    *,
    n_anchors: int,
    gap_s: float,
    motion_max_side: int,
    rgb_max_side: int,
    crop_side: int,
) -> ClipSample:
    sample, gray_wanted, rgb_wanted = _empty_sample(start, end, fps, n_anchors, gap_s)
    last_wanted = max(gray_wanted)

    idx = -1
    small = big = None
    for idx, frame in iter_av_frames(path):  # stops at a corrupt tail: score what decoded
        if idx not in gray_wanted:
            continue
        rot = getattr(frame, "rotation", 0) or 0
        luma = upright(luma_plane(frame), rot)
        if small is None:
            h, w = luma.shape
            sample.native_size = (w, h)
            small = fit_size(w, h, motion_max_side)
            big = fit_size(w, h, rgb_max_side)
        sample.gray[idx] = cv2.resize(luma, small, interpolation=cv2.INTER_AREA)
        if idx in rgb_wanted:
            # Let swscale convert and shrink in one step (half the cost of full-size RGB + resize);
            # it works before rotation, so a 90/270 degree frame gets the swapped size.
            bw, bh = big if rot % 180 == 0 else big[::-1]
            rgb = frame.to_ndarray(format="rgb24", width=bw, height=bh, interpolation="AREA")
            sample.rgb[idx] = upright(rgb, rot)
            sample.luma_crop[idx] = _aligned_center_crop(luma, crop_side)
        if idx >= last_wanted:
            break
    sample.last_decoded = idx
    if not sample.rgb:
        raise VideoError(f"no frame decoded in range {start}..{end} (stream ended at frame {idx})", path)
    return sample


def _shrink(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area downscale; from far above the target, a bilinear step to 2x first (5-10x cheaper)."""
    w, h = size
    if (img.shape[1], img.shape[0]) == (w, h):
        return img
    if img.shape[1] > 2 * w:
        img = cv2.resize(img, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


class SampleCollector:
    """Builds the same ClipSample as decode_sample from frames someone else decodes.

    The clips stage already decodes every frame of a source to transcode it; pushing those frames
    here gives the filters and the embedder their frames with no second decode.
    """

    def __init__(self, start: int, end: int, fps: float, *, n_anchors: int, gap_s: float,
                 motion_max_side: int, rgb_max_side: int, crop_side: int):
        self.sample, self._gray_wanted, self._rgb_wanted = _empty_sample(start, end, fps, n_anchors, gap_s)
        self._sizes = (motion_max_side, rgb_max_side, crop_side)

    @classmethod
    def for_config(cls, start: int, end: int, fps: float, cfg) -> SampleCollector:
        return cls(start, end, fps, **sample_options(cfg))

    def push(self, idx: int, rgb: np.ndarray) -> None:
        """Offer an upright RGB frame of the source (full size); only wanted frames are kept."""
        s = self.sample
        if s.start <= idx <= s.end:
            s.last_decoded = max(s.last_decoded, idx)
        if idx not in self._gray_wanted:
            return
        motion_side, rgb_side, crop_side = self._sizes
        h, w = rgb.shape[:2]
        s.native_size = (w, h)
        # Shrink first, convert after: colour conversion of a full 1080p frame costs more than all the
        # rest. The blockiness crop is cut at native resolution (the 8x8 grid must survive).
        small = _shrink(rgb, fit_size(w, h, motion_side))
        s.gray[idx] = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        if idx in self._rgb_wanted:
            s.rgb[idx] = _shrink(rgb, fit_size(w, h, rgb_side))
            s.luma_crop[idx] = cv2.cvtColor(_aligned_center_crop(rgb, crop_side), cv2.COLOR_RGB2GRAY)


def sample_to_bytes(sample: ClipSample, jpeg_quality: int = 95) -> bytes:
    """Compact serialisation: small gray and luma crops lossless (PNG), colour frames as JPEG."""
    import io
    import json

    arrays: dict[str, np.ndarray] = {}
    for kind, frames, ext in (("gray", sample.gray, ".png"), ("crop", sample.luma_crop, ".png"),
                              ("rgb", sample.rgb, ".jpg")):
        for i, img in frames.items():
            if ext == ".jpg":
                ok, buf = cv2.imencode(ext, cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            else:
                ok, buf = cv2.imencode(ext, img)
            if not ok:
                raise ValueError(f"cannot encode {kind} frame {i}")
            arrays[f"{kind}_{i}"] = buf
    meta = {"fps": sample.fps, "start": sample.start, "end": sample.end, "gap": sample.gap,
            "anchors": sample.anchors, "last_decoded": sample.last_decoded,
            "native_size": list(sample.native_size)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def sample_from_bytes(data: bytes) -> ClipSample:
    import io
    import json

    with np.load(io.BytesIO(data)) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        s = ClipSample(fps=meta["fps"], start=meta["start"], end=meta["end"], gap=meta["gap"],
                       anchors=list(meta["anchors"]), last_decoded=meta["last_decoded"],
                       native_size=tuple(meta["native_size"]))
        for key in z.files:
            if key == "meta":
                continue
            kind, i = key.rsplit("_", 1)
            buf = z[key]
            if kind == "rgb":
                s.rgb[int(i)] = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            else:
                img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
                (s.gray if kind == "gray" else s.luma_crop)[int(i)] = img
    return s
