"""Shot-boundary dev/test set: composite videos with exact ground truth, built from the real footage.

Nothing ships shot-boundary annotations besides bikes.mp4's cut list, so we make our own truth: take
continuous pieces of real footage (each piece is known to be one shot), crop/resize them to a common
size and join them with hard cuts, linear dissolves and fades through black. Inside shots we add the
hard negatives a detector must NOT call a boundary: camera flashes, fast synthetic pans and zooms
(Ken Burns crops), handheld shake, static scenes, very short shots.

Splits: "dev" and "test" draw from disjoint source segments (different frame ranges of the long
videos; bikes.mp4 and Megamind.avi shots only in "test", so both real videos stay unseen while tuning),
different seeds and partly different output sizes / frame rates. Tune on "dev" only.

Evaluation rule (`evaluate`): every prediction is a span [s, e] (a plain int boundary b is [b, b]; for
PySceneDetect b is the first frame of a new scene). A prediction matches a true transition when its
span overlaps the true span widened by `tolerance` frames on each side, [start - tol, end + tol].
Matching is one-to-one and greedy: predictions in order of start frame, each takes the unmatched true
transition it overlaps whose centre is nearest. Unmatched predictions are false positives, unmatched
truths false negatives. Predictions inside a video's `ignore` spans count as neither.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..video import iter_frames, write_mp4
from .shots import ShotResult, Transition

log = logging.getLogger(__name__)

# Bump when the generator changes: cached composites with another version are rebuilt.
SPEC_VERSION = 4

# Continuous pieces of real footage, (file, first, last) inclusive; each piece is a single shot.
# "group" (the file, or file#shot for files with real cuts) keeps adjacent composite shots different.
_DEV_SOURCES = [
    ("vtest.avi", 0, 379),
    ("cockatoo.mp4", 0, 129),
    ("bigbuckbunny.mp4", 0, 60),
    ("carphone_pristine.mp4", 0, 59),
]
_TEST_SOURCES = [
    ("vtest.avi", 400, 794),
    ("cockatoo.mp4", 150, 279),
    ("bigbuckbunny.mp4", 70, 131),
    ("carphone_pristine.mp4", 60, 119),
    # bikes.mp4's own shots (cuts at 30, 76, 137, 187, 242) and Megamind.avi's (cuts at 98, 154, 200;
    # frame 0 is black), both only here.
    ("bikes.mp4", 0, 29),
    ("bikes.mp4", 30, 75),
    ("bikes.mp4", 76, 136),
    ("bikes.mp4", 137, 186),
    ("bikes.mp4", 187, 241),
    ("Megamind.avi", 1, 97),
    ("Megamind.avi", 98, 153),
    ("Megamind.avi", 154, 199),
    ("Megamind.avi", 200, 269),
]
# (width, height, fps) per composite; "test" adds sizes and rates that "dev" never has.
_DEV_FORMATS = [(640, 360, 25.0), (480, 270, 25.0)] * 4
_TEST_FORMATS = [
    (640, 360, 25.0),
    (480, 270, 25.0),
    (960, 540, 30.0),
    (640, 360, 25.0),
    (854, 480, 24.0),
    (480, 270, 25.0),
    (960, 540, 30.0),
    (640, 480, 30.0),
]

MEGAMIND_CUTS = [98, 154, 200]

EFFECTS = ("plain", "flash", "pan", "zoom", "shake", "still_pan", "still_zoom", "static")
_EFFECT_P = (0.30, 0.16, 0.11, 0.09, 0.12, 0.08, 0.07, 0.07)
# Share of shots that cut to a close-up of the previous shot's own scene (same colours, new framing):
# the hard cuts of real edits, which colour histograms alone miss.
_CLOSEUP_P = 0.22


@dataclass
class DevVideo:
    path: Path
    num_frames: int
    fps: float
    transitions: list[Transition]
    width: int = 0
    height: int = 0
    name: str = ""
    # Hard negatives inside shots (flash, pan, zoom, shake, static): information only, never truth.
    events: list[dict] = field(default_factory=list)
    # Frame spans where predictions count neither way (e.g. Megamind.avi's single black first frame).
    ignore: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class _ShotPlan:
    file: str
    group: str
    first: int  # first source frame
    avail: int  # source frames available from `first` inside the piece
    n: int  # output frames
    effect: str
    flip: bool
    seed: int


# ---------------------------------------------------------------------------------------------- evaluation


def _spans(pred) -> list[tuple[int, int]]:
    if isinstance(pred, ShotResult):
        pred = pred.transitions
    out = []
    for p in pred:
        if isinstance(p, Transition):
            out.append((p.start_frame, p.end_frame))
        else:
            out.append((int(p), int(p)))
    return sorted(out)


def evaluate(
    pred: Sequence[Transition] | Sequence[int] | ShotResult,
    truth: Sequence[Transition],
    tolerance: int = 2,
    ignore: Sequence[tuple[int, int]] = (),
) -> dict:
    """Precision / recall / F1 of predicted boundaries against true transitions (rule: module docstring).

    Returns {tp, fp, fn, precision, recall, f1, by_kind: {kind: {tp, fn}}}.
    """
    preds = [s for s in _spans(pred) if not any(s[0] <= b and s[1] >= a for a, b in ignore)]
    truths = sorted(truth, key=lambda t: t.start_frame)
    matched = [False] * len(truths)
    tp = 0
    for ps, pe in preds:
        best, best_d = None, None
        for i, t in enumerate(truths):
            if matched[i] or pe < t.start_frame - tolerance or ps > t.end_frame + tolerance:
                continue
            d = abs((ps + pe) - (t.start_frame + t.end_frame))
            if best is None or d < best_d:
                best, best_d = i, d
        if best is not None:
            matched[best] = True
            tp += 1
    fp = len(preds) - tp
    fn = len(truths) - tp
    by_kind: dict[str, dict[str, int]] = {}
    for t, m in zip(truths, matched):
        k = by_kind.setdefault(t.kind, {"tp": 0, "fn": 0})
        k["tp" if m else "fn"] += 1
    return {**_prf(tp, fp, fn), "by_kind": by_kind}


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def merge_scores(scores: Sequence[dict]) -> dict:
    """Micro-average of several `evaluate` results (sum tp/fp/fn, then P/R/F1)."""
    tp, fp, fn = (sum(s[k] for s in scores) for k in ("tp", "fp", "fn"))
    by_kind: dict[str, dict[str, int]] = {}
    for s in scores:
        for kind, c in s.get("by_kind", {}).items():
            k = by_kind.setdefault(kind, {"tp": 0, "fn": 0})
            k["tp"] += c["tp"]
            k["fn"] += c["fn"]
    return {**_prf(tp, fp, fn), "by_kind": by_kind}


# ------------------------------------------------------------------------------------------- real videos


def real_videos(samples_dir: str | os.PathLike) -> list[DevVideo]:
    """The real footage with known cuts: bikes.mp4 (the package's list) and Megamind.avi.

    Megamind.avi's cuts (98, 154, 200) are the only three histogram-difference peaks far above the rest
    (0.13-0.24 vs. a median of 0.02) and a contact sheet of frames around them shows a change of camera
    angle at each; its frame 0 is a lone black frame, ignored.
    """
    from .. import samples

    d = Path(samples_dir)
    out = []
    if (d / "bikes.mp4").exists():
        out.append(
            DevVideo(
                d / "bikes.mp4", samples.BIKES_FRAMES, 25.0,
                [Transition("cut", c, c) for c in samples.BIKES_CUTS], 640, 272, "bikes",
            )
        )
    if (d / "Megamind.avi").exists():
        out.append(
            DevVideo(
                d / "Megamind.avi", 270, 23.976, [Transition("cut", c, c) for c in MEGAMIND_CUTS],
                720, 528, "megamind", ignore=[(0, 2)],
            )
        )
    return out


# ------------------------------------------------------------------------------------------- composites


def build_devset(
    out_dir: str | os.PathLike,
    samples_dir: str | os.PathLike,
    *,
    split: str = "dev",
    seed: int = 0,
    count: int | None = None,
) -> list[DevVideo]:
    """Write (or reuse) the composite videos of one split under out_dir/split; return them with truth.

    Each composite is an H.264 mp4 plus a JSON with its transitions (0-based frame spans, inclusive) and
    hard-negative events. A cached pair is reused when its JSON records the same spec version, split,
    seed and index; otherwise it is rebuilt.
    """
    if split not in ("dev", "test"):
        raise ValueError(f"split must be 'dev' or 'test', got {split!r}")
    samples_dir = Path(samples_dir)
    sources = _DEV_SOURCES if split == "dev" else _TEST_SOURCES
    sources = [s for s in sources if (samples_dir / s[0]).exists()]
    if len({_group(s) for s in sources}) < 3:
        raise FileNotFoundError(f"too few sample videos in {samples_dir} to build the {split} set")
    formats = _DEV_FORMATS if split == "dev" else _TEST_FORMATS
    if count is not None:
        formats = formats[:count]
    out = Path(out_dir) / split
    out.mkdir(parents=True, exist_ok=True)
    videos = []
    for idx, (w, h, fps) in enumerate(formats):
        spec = {"version": SPEC_VERSION, "split": split, "seed": seed, "index": idx, "size": [w, h], "fps": fps}
        name = f"{split}_{idx:02d}_{w}x{h}"
        mp4, meta = out / f"{name}.mp4", out / f"{name}.json"
        if mp4.exists() and meta.exists():
            data = json.loads(meta.read_text())
            if data.get("spec") == spec:
                videos.append(_from_json(data, mp4))
                continue
        rng = np.random.default_rng([seed, 0 if split == "dev" else 1, idx])
        truth: list[Transition] = []
        events: list[dict] = []
        frames = _composite(samples_dir, sources, w, h, rng, truth, events)
        n = write_mp4(frames, mp4, fps=fps, crf=20)
        data = {
            "spec": spec,
            "name": name,
            "num_frames": n,
            "fps": fps,
            "width": w,
            "height": h,
            "transitions": [[t.kind, t.start_frame, t.end_frame] for t in truth],
            "events": events,
        }
        meta.write_text(json.dumps(data, indent=1))
        log.info("devset: wrote %s (%d frames, %d transitions)", mp4, n, len(truth))
        videos.append(_from_json(data, mp4))
    return videos


def _from_json(data: dict, mp4: Path) -> DevVideo:
    return DevVideo(
        path=mp4,
        num_frames=data["num_frames"],
        fps=data["fps"],
        transitions=[Transition(k, s, e) for k, s, e in data["transitions"]],
        width=data["width"],
        height=data["height"],
        name=data["name"],
        events=data["events"],
    )


def _group(src: tuple[str, int, int]) -> str:
    # Files with real cuts contribute several distinct shots; others are one continuous scene.
    return f"{src[0]}#{src[1]}" if src[0] in ("bikes.mp4", "Megamind.avi") else src[0]


def _plan(sources, rng: np.random.Generator) -> tuple[list[_ShotPlan], list[tuple]]:
    """Shots (source piece, length, effect) and the joins between them, respecting frame budgets."""
    n_shots = int(rng.integers(7, 10))
    plans: list[_ShotPlan] = []
    prev_group = None
    for i in range(n_shots):
        closeup = i > 0 and rng.random() < _CLOSEUP_P
        if closeup:
            src = next(s for s in sources if _group(s) == prev_group)
        else:
            choices = [s for s in sources if _group(s) != prev_group]
            src = choices[int(rng.integers(len(choices)))]
        prev_group = _group(src)
        short = rng.random() < 0.14
        n = int(rng.integers(8, 21)) if short else int(rng.integers(34, 86))
        effect = "closeup" if closeup else "plain" if short else str(rng.choice(EFFECTS, p=_EFFECT_P))
        piece = src[2] - src[1] + 1
        first = src[1] + int(rng.integers(0, max(1, piece - n + 1)))
        plans.append(
            _ShotPlan(src[0], prev_group, first, src[2] - first + 1, n, effect, bool(rng.random() < 0.3),
                      int(rng.integers(1 << 30)))
        )
    # Joins: (kind, a, b, hold) where a = frames taken from the end of the left shot, b = from the start
    # of the right one (dissolve: a == b == its length; fade: fade-out a, black hold, fade-in b).
    joins = []
    used_left = [0] * n_shots  # frames of each shot already taken by its left join
    for i in range(n_shots - 1):
        room_a = plans[i].n - 10 - used_left[i]
        room_b = plans[i + 1].n - 10
        kind = str(rng.choice(["cut", "dissolve", "fade"], p=[0.4, 0.36, 0.24]))
        if kind == "dissolve":
            top = min(30, room_a, room_b)
            if top < 8:
                kind = "cut"
            else:
                L = int(rng.integers(8, top + 1))
                joins.append(("dissolve", L, L, 0))
                used_left[i + 1] = L
                continue
        if kind == "fade":
            if min(room_a, room_b) < 6:
                kind = "cut"
            else:
                a = int(rng.integers(6, min(20, room_a) + 1))
                b = int(rng.integers(6, min(20, room_b) + 1))
                hold = int(rng.integers(0, 5))
                joins.append(("fade", a, b, hold))
                used_left[i + 1] = b
                continue
        joins.append(("cut", 0, 0, 0))
    return plans, joins


def _windows(plan: _ShotPlan, rng: np.random.Generator) -> np.ndarray:
    """Per output frame crop (zoom z >= 1, offsets ox, oy in [-1, 1] of the free margin)."""
    n = plan.n
    t = np.linspace(0.0, 1.0, n)
    z = np.ones(n)
    ox = np.zeros(n)
    oy = np.zeros(n)
    kind = plan.effect.replace("still_", "")
    if kind == "closeup":
        z[:] = rng.uniform(1.8, 2.6)
        ox[:], oy[:] = rng.uniform(-1, 1, 2)
    elif kind == "pan":
        z[:] = rng.uniform(1.5, 2.2)
        d = rng.choice([-1.0, 1.0])
        ox = d * (2 * t - 1)
        oy = rng.uniform(-0.5, 0.5) * (2 * t - 1)
    elif kind == "zoom":
        z1 = rng.uniform(1.6, 2.5)
        z = 1 + (z1 - 1) * (t if rng.random() < 0.5 else 1 - t)
        ox[:], oy[:] = rng.uniform(-0.5, 0.5, 2)
    elif kind == "shake":
        # Handheld: a smoothed random walk with occasional jolts, inside a 1.25x crop.
        z[:] = 1.25
        steps = rng.normal(0, 0.22, (n, 2)) + (rng.random((n, 1)) < 0.08) * rng.normal(0, 0.6, (n, 2))
        walk = np.cumsum(steps, axis=0)
        walk = cv2.GaussianBlur(walk.astype(np.float64), (1, 3), 0)
        walk = np.clip(walk - walk.mean(axis=0), -1, 1)
        ox, oy = walk[:, 0], walk[:, 1]
    return np.stack([z, ox, oy], axis=1)


def _crop_resize(img: np.ndarray, w: int, h: int, z: float, ox: float, oy: float) -> np.ndarray:
    H, W = img.shape[:2]
    base_w = min(W, H * w / h)
    cw, ch = base_w / z, base_w / z * h / w
    cx = W / 2 + ox * (W - cw) / 2
    cy = H / 2 + oy * (H - ch) / 2
    x0 = int(round(np.clip(cx - cw / 2, 0, W - cw)))
    y0 = int(round(np.clip(cy - ch / 2, 0, H - ch)))
    crop = img[y0 : y0 + int(round(ch)), x0 : x0 + int(round(cw))]
    interp = cv2.INTER_AREA if crop.shape[1] > w else cv2.INTER_LINEAR
    return cv2.resize(crop, (w, h), interpolation=interp)


def _render_shot(samples_dir: Path, plan: _ShotPlan, w: int, h: int) -> list[np.ndarray]:
    rng = np.random.default_rng(plan.seed)
    win = _windows(plan, rng)
    if plan.effect.startswith("still") or plan.effect == "static":
        src_idx = np.full(plan.n, plan.first)
    elif plan.n <= plan.avail:
        src_idx = plan.first + np.arange(plan.n)
    else:  # slow motion: repeat source frames (short pieces such as bikes' last shots)
        src_idx = plan.first + (np.arange(plan.n) * plan.avail // plan.n)
    out: list[np.ndarray | None] = [None] * plan.n
    for idx, img in iter_frames(samples_dir / plan.file, start=int(src_idx[0]), end=int(src_idx[-1])):
        for j in np.nonzero(src_idx == idx)[0]:
            frame = _crop_resize(img, w, h, *win[j])
            out[j] = frame[:, ::-1] if plan.flip else frame
    last = None
    for j in range(plan.n):  # a source frame that failed to decode: hold the previous one
        if out[j] is None:
            out[j] = last if last is not None else np.zeros((h, w, 3), np.uint8)
        last = out[j]
    if plan.effect == "static":  # sensor noise on a still: real static scenes are never bit-identical
        out = [np.clip(f + rng.normal(0, 2.0, f.shape), 0, 255).astype(np.uint8) for f in out]
    return out  # type: ignore[return-value]


def _flash(frames: list[np.ndarray], at: int, rng: np.random.Generator) -> int:
    """Brighten 1-3 frames from `at` (camera flash); returns how many."""
    k = int(rng.integers(1, 4))
    profile = {1: [0.8], 2: [0.85, 0.45], 3: [0.5, 0.9, 0.4]}[k]
    for j, beta in enumerate(profile):
        f = frames[at + j].astype(np.float32)
        frames[at + j] = np.clip(f + (255 - f) * beta * rng.uniform(0.7, 1.0), 0, 255).astype(np.uint8)
    return k


def _composite(
    samples_dir: Path, sources, w: int, h: int, rng: np.random.Generator,
    truth: list[Transition], events: list[dict],
) -> Iterator[np.ndarray]:
    """Yield the frames of one composite; fills `truth` and `events` as it goes (complete at the end)."""
    plans, joins = _plan(sources, rng)
    pos = 0  # frames emitted so far
    pending: list[np.ndarray] = []
    for i, plan in enumerate(plans):
        frames = _render_shot(samples_dir, plan, w, h)
        left = joins[i - 1] if i > 0 else ("cut", 0, 0, 0)
        right = joins[i] if i < len(joins) else ("cut", 0, 0, 0)
        # Where this shot's frame 0 lands in the output.
        lead_in = len(pending) - (left[1] if left[0] == "dissolve" else 0) + (left[3] if left[0] == "fade" else 0)
        start_abs = pos + lead_in
        pure_lo, pure_hi = left[2], plan.n - right[1] - 1  # frames untouched by transitions
        if plan.effect == "flash" and pure_hi - pure_lo >= 16:
            at = int(rng.integers(pure_lo + 6, pure_hi - 8))
            k = _flash(frames, at, rng)
            events.append({"kind": "flash", "start": start_abs + at, "end": start_abs + at + k - 1})
        elif plan.effect not in ("plain", "flash", "closeup"):
            events.append({"kind": plan.effect, "start": start_abs, "end": start_abs + plan.n - 1})
        if i == 0:
            pending = frames
            continue
        kind, a, b, hold = left
        if kind == "cut":
            yield from pending
            pos += len(pending)
            truth.append(Transition("cut", pos, pos))
            pending = frames
        elif kind == "dissolve":
            yield from pending[:-a]
            pos += len(pending) - a
            for j in range(a):
                alpha = (j + 1) / (a + 1)
                mix = (1 - alpha) * pending[len(pending) - a + j].astype(np.float32) + alpha * frames[j]
                yield np.clip(mix + 0.5, 0, 255).astype(np.uint8)
            truth.append(Transition("dissolve", pos, pos + a - 1))
            pos += a
            pending = frames[a:]
        else:  # fade out, hold black, fade in
            yield from pending[:-a]
            pos += len(pending) - a
            for j in range(a):
                yield (pending[len(pending) - a + j] * (1 - (j + 1) / (a + 1))).astype(np.uint8)
            for _ in range(hold):
                yield np.zeros_like(frames[0])
            for j in range(b):
                yield (frames[j] * ((j + 1) / (b + 1))).astype(np.uint8)
            truth.append(Transition("fade", pos, pos + a + hold + b - 1))
            pos += a + hold + b
            pending = frames[b:]
    yield from pending
