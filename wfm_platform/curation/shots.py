"""Shot-boundary detection: hard cuts, dissolves and fades; then the Cosmos clip rules.

One streaming decode pass turns every frame into a tiny luma thumbnail and a joint YUV colour histogram
(read straight from the decoder's Y/U/V planes: no RGB conversion). Frames are analysed in chunks
with an overlap, so memory stays bounded however long the video is; only a few floats per frame are
kept for the whole video (`ShotResult.signals`).

Per chunk:
- cuts: the distance between every frame before and every frame after a candidate boundary (K frames
  each side) must be large: the minimum over those cross pairs. A 1-3 frame flash or glitch returns to
  the old picture, so some cross pair is close and the minimum stays small. The score must also stand
  out from the motion level around it (adaptive threshold), so fast pans, zooms and shake stay quiet.
- dissolves: where the distance between frames `lag` apart is high while neighbouring frames are close,
  test the linear-mixture model: each frame in between ~ (1 - a) * A + a * B for the window's end frames
  A, B, with a rising smoothly from 0 to 1 and a small residual. Camera motion changes the picture too,
  but its in-between frames are not mixtures of the ends, so the residual stays high.
- fades: runs of near-black frames, extended left while contrast falls (fade-out) and right while it
  rises (fade-in); the whole fade-out + black + fade-in is one "fade" transition.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import av
import cv2
import numpy as np
from pydantic import BaseModel, Field

from ..video import VideoError, probe
from ..video.decode import iter_av_frames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shot:
    """Frames start_frame..end_frame inclusive, 0-based decode order."""

    start_frame: int
    end_frame: int

    def __post_init__(self):  # numpy ints from the analysis must not leak into JSON manifests
        object.__setattr__(self, "start_frame", int(self.start_frame))
        object.__setattr__(self, "end_frame", int(self.end_frame))

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame + 1


@dataclass(frozen=True)
class Transition:
    """kind: "cut" | "dissolve" | "fade"; frames start_frame..end_frame inclusive belong to it.

    A cut at k has start_frame == end_frame == k, the first frame of the new shot.
    """

    kind: str
    start_frame: int
    end_frame: int

    def __post_init__(self):
        object.__setattr__(self, "start_frame", int(self.start_frame))
        object.__setattr__(self, "end_frame", int(self.end_frame))


@dataclass
class ShotResult:
    shots: list[Shot]
    transitions: list[Transition]
    num_frames: int
    fps: float
    # Per-frame float32 arrays (length num_frames): luma_mean, luma_std (0-255 scale, on the analysis
    # thumbnail), frame_diff (mean abs luma difference to the previous frame, 0-1), hist_diff (colour
    # histogram L1/2 distance to the previous frame, 0-1), cut_score.
    signals: dict[str, np.ndarray] = field(default_factory=dict)


class ShotConfig(BaseModel):
    """Detector settings. Defaults were tuned on the "dev" split of devset.py only."""

    analysis_width: int = Field(64, ge=16, description="thumbnail width the detector works on")
    analysis_height: int = Field(36, ge=9)
    # Cuts
    cut_context: int = Field(4, ge=1, description="frames each side compared across a cut candidate")
    cut_threshold: float = Field(0.25, description="min cross-pair colour distance for a cut")
    cut_ratio: float = Field(2.5, description="cut score / local motion level needed")
    cut_level_window: int = Field(6, description="frames each side giving the local motion level")
    luma_weight: float = Field(2.0, description="weight of the luma difference next to colour distance")
    # Dissolves
    dissolve_lags: tuple[int, ...] = (9, 11, 14, 18, 24, 32)
    dissolve_min_change: float = Field(0.33, description="min colour distance between a dissolve's ends")
    dissolve_max_residual: float = Field(0.40, description="max linear-mixture residual (relative)")
    dissolve_min_frames: int = Field(4, description="min frames with a mixture weight strictly inside (0, 1)")
    dissolve_max_step: float = Field(0.4, description="max mixture-weight jump between frames")
    ramp_lo: float = 0.06
    ramp_hi: float = 0.94
    # Fades
    black_level: float = Field(10.0, description="RMS of luma above black (16) below which a frame is black")
    fade_step: float = Field(0.015, description="min relative energy rise per frame to extend a fade")
    fade_max_frames: int = Field(40, description="longest fade-out or fade-in considered")
    # Streaming
    chunk_frames: int = Field(1536, ge=32, description="frames analysed at once (memory bound)")
    progress_every: int = 100


# ---------------------------------------------------------------------------------------------- decoding

_PLANAR_8BIT = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p"}
# Joint histogram: 8 luma x 6 x 6 chroma bins; chroma only over its busy middle range (80..175), where
# almost all natural colours sit, so the bins are not wasted on the extremes.
_HIST_BINS = 8 * 6 * 6


def _plane(frame: av.VideoFrame, i: int) -> np.ndarray:
    p = frame.planes[i]
    buf = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)
    return buf[:, : p.width]


def _shrink(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # INTER_AREA straight from a large plane costs 0.2-1 ms (1080p); a bilinear step to twice the
    # target, then a 2x2 area average, is 5-10x cheaper and plenty for frame-to-frame distances.
    w, h = size
    if img.shape[1] > 2 * w:
        img = cv2.resize(img, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _frame_features(frame: av.VideoFrame, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(luma thumbnail uint8 (h, w), normalized joint YUV histogram float32 (_HIST_BINS,))."""
    if frame.format.name not in _PLANAR_8BIT:
        frame = frame.reformat(format="yuv420p")  # 10-bit, nv12, rgb, gray, ...: rare, slower path
    y = _shrink(_plane(frame, 0), size)
    u = _shrink(_plane(frame, 1), size)
    v = _shrink(_plane(frame, 2), size)
    qu = np.clip((u.astype(np.int16) - 80) >> 4, 0, 5)
    qv = np.clip((v.astype(np.int16) - 80) >> 4, 0, 5)
    idx = (y >> 5).astype(np.int16) * 36 + qu * 6 + qv
    hist = np.bincount(idx.ravel(), minlength=_HIST_BINS).astype(np.float32)
    return y, hist / hist.sum()


def iter_features(
    path: str | os.PathLike, size: tuple[int, int]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream (luma thumbnail, histogram) per decoded frame; stops quietly at a corrupt tail."""
    for _, frame in iter_av_frames(path):
        yield _frame_features(frame, size)


# ---------------------------------------------------------------------------------------------- analysis


def _lag_dist(Y: np.ndarray, H: np.ndarray, lag: int, luma_weight: float) -> np.ndarray:
    """D(t - lag, t) for every t (inf where t < lag): colour histogram L1/2 + weighted luma MAD."""
    n = len(H)
    out = np.full(n, np.inf, np.float32)
    if lag < n:
        dh = 0.5 * np.abs(H[lag:] - H[:-lag]).sum(axis=1)
        dy = np.abs(Y[lag:] - Y[:-lag]).mean(axis=(1, 2)) / 255.0
        out[lag:] = dh + luma_weight * dy
    return out


def _cut_scores(Y: np.ndarray, H: np.ndarray, cfg: ShotConfig) -> tuple[np.ndarray, np.ndarray]:
    """(cross-pair minimum distance c[t] for a boundary between t-1 and t, adjacent distance d1[t])."""
    n, K = len(H), cfg.cut_context
    lags = {lag: _lag_dist(Y, H, lag, cfg.luma_weight) for lag in range(1, 2 * K)}
    c = np.full(n, np.inf, np.float32)
    for i in range(1, K + 1):  # pair (t - i, t + j) is lag i + j, read at index t + j
        for j in range(K):
            shifted = np.full(n, np.inf, np.float32)
            shifted[: n - j] = lags[i + j][j:]
            np.minimum(c, shifted, out=c)
    c[~np.isfinite(c)] = 0.0
    d1 = lags[1].copy()
    d1[0] = 0.0
    return c, d1


def _local_level(d1: np.ndarray, t: int, w: int) -> float:
    """Motion level around boundary t: the 2nd largest adjacent distance in t-w..t+w without t."""
    around = np.concatenate([d1[max(1, t - w) : t], d1[t + 1 : t + w + 1]])
    if len(around) < 2:
        return float(around.max()) if len(around) else 0.0
    return float(np.partition(around, -2)[-2])


def _find_cuts(c: np.ndarray, d1: np.ndarray, cfg: ShotConfig) -> list[int]:
    cuts = []
    K = cfg.cut_context
    for t in np.nonzero(c >= cfg.cut_threshold)[0]:
        lo, hi = max(0, t - K), min(len(c), t + K + 1)
        if c[t] < c[lo:hi].max():  # keep the strongest boundary of a cluster
            continue
        if c[t] < cfg.cut_ratio * _local_level(d1, int(t), cfg.cut_level_window):
            continue
        cuts.append(int(t))
    return cuts


def _fades(Y: np.ndarray, cfg: ShotConfig) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Spans of fade-out + black + fade-in around every run of black frames; and the energy curve.

    Energy = RMS of (luma - 16) on the thumbnail: under a fade to black it scales exactly with the
    fade factor (limited-range black is 16), so walking outward while it keeps rising finds the ramps.
    """
    e = np.sqrt(np.square(Y - 16.0).mean(axis=(1, 2)))
    dark = e < cfg.black_level
    spans = []
    n = len(e)
    t = 0
    while t < n:
        if not dark[t]:
            t += 1
            continue
        r0 = t
        while t + 1 < n and dark[t + 1]:
            t += 1
        r1 = t
        a = r0
        while a > 0 and r0 - a < cfg.fade_max_frames and e[a - 1] > e[a] * (1 + cfg.fade_step) + 0.3:
            a -= 1
        b = r1
        while b < n - 1 and b - r1 < cfg.fade_max_frames and e[b + 1] > e[b] * (1 + cfg.fade_step) + 0.3:
            b += 1
        spans.append((a, b))
        t += 1
    return spans, e


def _mixture_fit(win: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit frames win[1:-1] as (1 - a) * win[0] + a * win[-1]: per-frame a, relative residual, |B - A|."""
    A, B = win[0].ravel(), win[-1].ravel()
    mid = win[1:-1].reshape(len(win) - 2, -1) - A
    diff = B - A
    den = float(diff @ diff) + 1e-6
    alpha = mid @ diff / den
    resid = np.sqrt(np.square(mid - alpha[:, None] * diff).sum(axis=1) / den)
    return alpha, resid, float(np.sqrt(den / diff.size))


def _dissolves(Y: np.ndarray, H: np.ndarray, cfg: ShotConfig, debug: list | None = None):
    """Candidate windows where frames `lag` apart differ a lot, accepted by the linear-mixture test."""
    n = len(H)
    Ys = np.stack([cv2.blur(y, (3, 3)) for y in Y]) if n else Y  # tolerate small motion
    found = []  # (sort key, start, end)
    for lag in cfg.dissolve_lags:
        if lag + 1 > n:
            break
        h = lag // 2
        # Change across the window [c - h, c - h + lag], indexed by its centre c. The colour distance
        # gates (a dissolve joins different scenes); the luma term, which grows linearly through a
        # dissolve while histogram distances saturate early, centres the window on it.
        dh = np.full(n, -1.0, np.float32)
        dh[h : h + n - lag] = 0.5 * np.abs(H[lag:] - H[:-lag]).sum(axis=1)
        peak = dh >= cfg.dissolve_min_change
        if not peak.any():
            continue
        G = dh.copy()
        G[h : h + n - lag] += cfg.luma_weight * np.abs(Y[lag:] - Y[:-lag]).mean(axis=(1, 2)) / 255.0
        mx = _max_filter(G, lag)
        for c in np.nonzero(peak & (G >= mx))[0]:
            a0 = int(c) - h
            alpha, resid, _ = _mixture_fit(Ys[a0 : a0 + lag + 1])
            ramp = np.nonzero((alpha > cfg.ramp_lo) & (alpha < cfg.ramp_hi))[0]
            steps = np.diff(np.concatenate([[0.0], alpha, [1.0]]))
            r = float(resid[ramp].mean()) if len(ramp) else 9.0
            ok = (
                len(ramp) >= cfg.dissolve_min_frames
                and r <= cfg.dissolve_max_residual
                and steps.max() <= cfg.dissolve_max_step  # a jump is a cut, not a dissolve
                and steps.min() >= -cfg.dissolve_max_step  # a jump back is a flash
            )
            if debug is not None:
                debug.append((lag, a0, a0 + lag, float(G[c]), r, float(steps.max()), float(steps.min()), len(ramp), ok))
            if ok:
                # Prefer windows that hold the whole ramp (steady frames on both sides), then the best fit.
                whole = ramp[0] > 0 and ramp[-1] < len(alpha) - 1
                found.append(((not whole, r), a0 + 1 + int(ramp[0]), a0 + 1 + int(ramp[-1])))
    found.sort()
    kept: list[tuple[int, int]] = []
    for _, s, e in found:
        if all(e < ks or s > ke for ks, ke in kept):
            kept.append((s, e))
    # Two halves of one long dissolve, each found in its own window: join them.
    merged: list[tuple[int, int]] = []
    for s, e in sorted(kept):
        if merged and s - merged[-1][1] <= 3:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def _max_filter(x: np.ndarray, size: int) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    half = size // 2
    padded = np.pad(x, (half, size - half), constant_values=-np.inf)
    return sliding_window_view(padded, size + 1).max(axis=1)[: len(x)]


def analyze_features(Y: np.ndarray, H: np.ndarray, cfg: ShotConfig, debug: dict | None = None):
    """Transitions (frame indices relative to the arrays) and per-frame signals of one chunk."""
    Y = Y.astype(np.float32, copy=False)
    c, d1 = _cut_scores(Y, H, cfg)
    fades, energy = _fades(Y, cfg)
    transitions = [Transition("fade", s, e) for s, e in fades]
    dbg = [] if debug is not None else None
    for s, e in _dissolves(Y, H, cfg, dbg):
        if all(e < t.start_frame or s > t.end_frame for t in transitions):
            transitions.append(Transition("dissolve", s, e))
    for t in _find_cuts(c, d1, cfg):
        # A cut inside (or touching) a gradual transition is its steepest frame, not a new boundary.
        if all(t < g.start_frame - 1 or t > g.end_frame + 1 for g in transitions):
            transitions.append(Transition("cut", t, t))
    if debug is not None:
        debug.update(c=c, d1=d1, energy=energy, dissolve_candidates=dbg)
    return sorted(transitions, key=lambda t: t.start_frame), c, d1


# ---------------------------------------------------------------------------------------------- public API


def detect_shots(
    path: str | os.PathLike,
    config: ShotConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> ShotResult:
    """Shots and transitions of a video, in one streaming decode pass.

    Shots exclude transition frames: a cut at k ends the previous shot at k - 1 and starts the next at
    k; a dissolve or fade spanning [a, b] ends the previous shot at a - 1 and starts the next at b + 1.
    Black runs at the very start or end (leaders) come out as "fade" transitions too, so they belong to
    no shot. `progress(frames_done)` is called every `config.progress_every` frames. Raises VideoError
    for unreadable input; a corrupt tail ends the video at its last good frame.
    """
    cfg = config or ShotConfig()
    info = probe(path, vfr_window=2)  # readable VideoError for empty / non-video / undecodable files
    size = (cfg.analysis_width, cfg.analysis_height)
    # Context kept on each side of a chunk: the longest dissolve window or fade, plus the cut context.
    margin = max(max(cfg.dissolve_lags, default=0), 2 * cfg.fade_max_frames) + 2 * cfg.cut_context + 8
    ys: list[np.ndarray] = []
    hs: list[np.ndarray] = []
    buf0 = 0  # absolute index of ys[0]
    owned_from = 0  # frames before this are final
    transitions: list[Transition] = []
    sig: dict[str, list[np.ndarray]] = {k: [] for k in ("luma_mean", "luma_std", "frame_diff", "hist_diff", "cut_score")}

    def flush(final: bool) -> None:
        nonlocal buf0, owned_from, ys, hs
        Y = np.stack(ys).astype(np.float32)
        H = np.stack(hs)
        found, c, d1 = analyze_features(Y, H, cfg)
        end = buf0 + len(ys)
        own_end = end if final else end - margin
        if not final:
            # A transition reaching into the unseen future is left whole to the next chunk, unless it
            # started before this chunk's own frames (a black run longer than a chunk: split it).
            for t in found:
                if t.end_frame + buf0 >= end - cfg.cut_context - 2 and t.start_frame + buf0 > owned_from:
                    own_end = min(own_end, t.start_frame + buf0)
        for t in found:
            s, e = t.start_frame + buf0, t.end_frame + buf0
            if owned_from <= s < own_end and (not transitions or s > transitions[-1].end_frame):
                transitions.append(Transition(t.kind, s, e))
        lo, hi = owned_from - buf0, own_end - buf0
        sig["luma_mean"].append(Y[lo:hi].mean(axis=(1, 2)))
        sig["luma_std"].append(Y[lo:hi].std(axis=(1, 2)))
        sig["frame_diff"].append(
            np.abs(np.diff(Y[max(lo - 1, 0) : hi], axis=0)).mean(axis=(1, 2)) / 255.0
            if lo > 0 else np.concatenate([[0.0], np.abs(np.diff(Y[:hi], axis=0)).mean(axis=(1, 2)) / 255.0])
        )
        sig["hist_diff"].append(
            0.5 * np.abs(np.diff(H[max(lo - 1, 0) : hi], axis=0)).sum(axis=1)
            if lo > 0 else np.concatenate([[0.0], 0.5 * np.abs(np.diff(H[:hi], axis=0)).sum(axis=1)])
        )
        sig["cut_score"].append(c[lo:hi])
        owned_from = own_end
        keep = own_end - margin - buf0  # frames before this are no longer needed as context
        if keep > 0:
            ys, hs = ys[keep:], hs[keep:]
            buf0 += keep

    n = 0
    for y, h in iter_features(path, size):
        ys.append(y)
        hs.append(h)
        n += 1
        if progress is not None and n % cfg.progress_every == 0:
            progress(n)
        if len(ys) >= cfg.chunk_frames + 2 * margin:
            flush(final=False)
    if n == 0:
        raise VideoError("no decodable frames", path)
    if ys and owned_from < n:
        flush(final=True)
    if progress is not None and n % cfg.progress_every:
        progress(n)
    transitions = [t for t in transitions if not (t.kind == "cut" and t.start_frame <= 0)]
    signals = {k: np.concatenate(v).astype(np.float32) for k, v in sig.items()}
    fps = info.fps if info.fps > 0 else 25.0
    log.info("%s: %d frames, %d transitions (%s)", path, n, len(transitions),
             ", ".join(f"{k} {sum(t.kind == k for t in transitions)}" for k in ("cut", "dissolve", "fade")))
    return ShotResult(_shots_between(transitions, n), transitions, n, fps, signals)


def _shots_between(transitions: Sequence[Transition], num_frames: int) -> list[Shot]:
    shots = []
    cursor = 0
    for t in sorted(transitions, key=lambda t: t.start_frame):
        if t.kind == "cut":
            end, nxt = t.start_frame - 1, t.start_frame
        else:
            end, nxt = t.start_frame - 1, t.end_frame + 1
        if end >= cursor:
            shots.append(Shot(cursor, end))
        cursor = max(cursor, nxt)
    if cursor <= num_frames - 1:
        shots.append(Shot(cursor, num_frames - 1))
    return shots


def apply_clip_rules(shots: Sequence[Shot], fps: float, min_s: float = 2.0, max_s: float = 60.0) -> list[Shot]:
    """Cosmos clip rules: drop shots shorter than min_s; split those longer than max_s into near-equal
    pieces, each at most max_s long (frame bounds inclusive, so a shot lasts num_frames / fps s)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if max_s < min_s:
        raise ValueError(f"max_s ({max_s}) < min_s ({min_s})")
    max_frames = max(1, int(np.floor(max_s * fps + 1e-9)))
    out: list[Shot] = []
    for s in shots:
        n = s.end_frame - s.start_frame + 1
        if n / fps < min_s - 1e-9:
            continue
        if n <= max_frames:
            out.append(s)
            continue
        pieces = -(-n // max_frames)
        edges = np.linspace(0, n, pieces + 1).round().astype(int)
        out.extend(Shot(s.start_frame + a, s.start_frame + b - 1) for a, b in zip(edges[:-1], edges[1:]))
    return out


def boundaries(result_or_shots: ShotResult | Sequence[Shot]) -> list[int]:
    """Boundary frames in PySceneDetect's convention: the first frame of every shot but the first.

    For a cut at k that is k; after a dissolve or fade [a, b] it is b + 1 (within the evaluation's
    +-2 tolerance of the transition's end).
    """
    shots = result_or_shots.shots if isinstance(result_or_shots, ShotResult) else result_or_shots
    return [s.start_frame for s in sorted(shots, key=lambda s: s.start_frame)[1:]]
