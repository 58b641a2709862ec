"""Face anonymisation for the video post-guard: detect, track, blur every frame, streaming.

Detector (picked by measurement, bench/guardrails_faces.py): the union of OpenCV's Haar frontal alt2
cascade (20x20 window: a 20 px face is found at detection scale 1.0; on LFW crops it finds 68% of 20 px
and 94-98% of >= 32 px faces) and dlib's HOG (80x80 window, no upsampling: fast, and it keeps finding
the carphone face on frames where it turns and Haar loses it: Haar misses 42/120 frames there, HOG 2).
Both ship inside their wheels. NudeNet's CNN face classes are the INDEPENDENT checker in tests/bench.

Tracking: a face missed on a frame must still be covered. Detection runs every `detect_every`-th frame;
an IoU tracker keeps tracks alive `max_missed` frames after their last hit (predicted with a smoothed
velocity), frames between detections get boxes interpolated between the two detection steps, and a
newly born track is also painted `backfill` frames back (frames wait in a small delay buffer, so memory
is bounded: backfill + detect_every frames).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import cv2
import numpy as np
from pydantic import BaseModel, Field

from .verdict import GuardError

log = logging.getLogger(__name__)


class FaceBlurConfig(BaseModel):
    """Settings of the face stage (YAML: post.faces)."""

    enabled: bool = True
    # "haar+dlib_hog": union of both (Haar finds the small faces, HOG the turned/low-contrast ones)
    detector: Literal["haar+dlib_hog", "haar", "dlib_hog"] = "haar+dlib_hog"
    min_face: int = Field(20, ge=8, description="smallest face side in source pixels to look for")
    max_det_side: int = Field(
        1280,
        ge=160,
        description="detection runs on a frame downscaled to this long side (speed); "
        "faces below min_face * long_side / max_det_side px are then not guaranteed",
    )
    detect_every: int = Field(3, ge=1, description="run the detector on every k-th frame, track in between")
    small_face_every: int = Field(
        1,
        ge=1,
        description="Haar's fine pass for faces below large_face px (the costly part: most of "
        "the cascade's windows are small) runs on every n-th detector run; 1 = every run. 2 cuts Haar's "
        "cost ~30% but finds marginal 20 px faces less often (see bench/guardrails_faces.py)",
    )
    large_face: int = Field(
        48,
        ge=8,
        description="faces at least this big (source px) are searched on EVERY detector run, "
        "on a frame downscaled so they appear at the cascade's 20 px window",
    )
    small_face_side: int = Field(
        1280,
        ge=160,
        description="the fine (small-face) pass runs on a frame of this long side at most: "
        "1920 searches 1080p at full resolution for 20-30 px faces (the 1280 px detection frame misses them) "
        "at ~1.5x Haar's cost on those runs",
    )
    hog_every: int = Field(
        2,
        ge=1,
        description="dlib HOG runs on every n-th detector run (the tracker "
        "carries its faces between runs); 1 = every run",
    )
    profile: bool = False  # Haar profile cascade, both directions: ~4x the Haar time (see bench)
    scale_factor: float = Field(1.2, gt=1.0)
    min_neighbors: int = Field(3, ge=1)
    # Faces below large_face px need fewer overlapping hits: 2 instead of 3 covers moving 20 px faces on 71%
    # of frames instead of 37%; for ALL sizes 2 also took a cockatoo's head for a face (15% of its non-face
    # pixels blurred instead of 2%), so large faces keep min_neighbors (bench/guardrails_faces.py)
    small_face_min_neighbors: int = Field(2, ge=1)
    expand: float = Field(0.3, ge=0.0, description="box grows by this share of its size on each side")
    max_missed: int = Field(8, ge=0, description="frames a track survives without a detection")
    backfill: int = Field(4, ge=0, description="frames before a track's first hit that are covered too")
    iou_match: float = Field(0.15, gt=0.0, le=1.0)
    smooth: float = Field(0.6, gt=0.0, le=1.0, description="EMA weight of a new detection on the box")
    method: Literal["blur", "pixelate"] = "blur"


Boxes = np.ndarray  # (n, 4) float or int: x0, y0, x1, y1 in frame pixels (x1, y1 exclusive)


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in an RGB frame (h, w, 3) uint8 and returns (n, 4) x0,y0,x1,y1 boxes."""

    name: str

    def detect(self, rgb: np.ndarray) -> Boxes: ...


def _det_scale(h: int, w: int, max_side: int) -> float:
    return min(1.0, max_side / max(h, w))


def merge_boxes(boxes: Boxes, iou: float = 0.3) -> Boxes:
    """Merge overlapping boxes into their union (frontal and profile often fire on the same face)."""
    boxes = [np.asarray(b, np.float64) for b in boxes]
    merged = True
    while merged and len(boxes) > 1:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if (
                    box_iou(boxes[i], boxes[j]) > iou
                    or _contains(boxes[i], boxes[j])
                    or _contains(boxes[j], boxes[i])
                ):
                    a, b = boxes[i], boxes[j]
                    boxes[i] = np.array([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])])
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return np.array(boxes, np.float64).reshape(-1, 4)


def _contains(a: np.ndarray, b: np.ndarray) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and a[2] >= b[2] and a[3] >= b[3]


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class HaarFaceDetector:
    """OpenCV Haar cascades: frontal (alt2), optionally + profile both ways, on a downscaled gray frame."""

    name = "haar"

    def __init__(
        self,
        *,
        min_face: int = 20,
        max_det_side: int = 1280,
        scale_factor: float = 1.2,
        min_neighbors: int = 3,
        small_min_neighbors: int | None = None,
        small_below: int = 48,
        profile: bool = False,
        frontal_file: str = "haarcascade_frontalface_alt2.xml",
        profile_file: str = "haarcascade_profileface.xml",
        cascade_dir: str | None = None,
    ):
        base = cascade_dir or cv2.data.haarcascades
        self.cascades: list[tuple[str, cv2.CascadeClassifier]] = [("frontal", self._load(base, frontal_file))]
        if profile:
            self.cascades.append(("profile", self._load(base, profile_file)))
        self.min_face, self.max_det_side = min_face, max_det_side
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        # faces below small_below source px: small_min_neighbors (default: min_neighbors)
        self.small_min_neighbors = small_min_neighbors or min_neighbors
        self.small_below = small_below

    @staticmethod
    def _load(base: str, file: str) -> cv2.CascadeClassifier:
        import os

        path = os.path.join(base, file)
        c = cv2.CascadeClassifier(path)
        if c.empty():  # OpenCV returns an empty classifier instead of raising: fail closed here
            raise GuardError(
                f"faces: cannot load Haar cascade {path}; install opencv-contrib-python-headless<5 "
                "(cv2.data.haarcascades) or set post.faces.cascade_dir"
            )
        return c

    def detect(self, rgb: np.ndarray) -> Boxes:
        """Every face >= min_face (after the max_det_side downscale)."""
        return self.detect_scaled(rgb, small=True)

    def detect_scaled(
        self,
        rgb: np.ndarray,
        small: bool = True,
        large_face: int | None = None,
        small_side: int | None = None,
    ) -> Boxes:
        """Two passes (sizes in SOURCE pixels): a coarse one for faces >= large_face on a frame downscaled
        so such a face fills the cascade's 20 px window (cheap: cost ~ pixels scanned), and, if `small`,
        a fine one for faces min_face..large_face on a frame of long side <= small_side (default
        max_det_side; the full 1080p frame finds the 20-30 px faces the 1280 px detection frame cannot).
        large_face=None: the single pass of `detect`."""
        gray = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        s = _det_scale(h, w, self.max_det_side)
        if large_face is None:
            img, mn = self._prep(gray, s), max(20, round(self.min_face * s))  # cascades' own window is 20x20
            big = round(self.small_below * s)
            if self.small_min_neighbors == self.min_neighbors or big <= mn:
                found = self._run(img, s, mn)
            else:  # small faces with their own min_neighbors; the two size ranges overlap a little
                found = self._run(img, s, mn, int(big * 1.2) + 1, self.small_min_neighbors) + self._run(img, s, big)
            return merge_boxes(np.array(found).reshape(-1, 4))
        sc = min(s, 20 / large_face)  # coarse: a large_face px face is 20 px here
        found = self._run(self._prep(gray, sc), sc, 20)
        if small:
            sf = _det_scale(h, w, small_side or self.max_det_side)
            mn, big = max(20, round(self.min_face * sf)), round(large_face * sf)
            if big > mn:  # windows up to just past large_face: the passes overlap a little
                found += self._run(self._prep(gray, sf), sf, mn, int(big * 1.2) + 1, self.small_min_neighbors)
        return merge_boxes(np.array(found).reshape(-1, 4))

    @staticmethod
    def _prep(gray: np.ndarray, s: float) -> np.ndarray:
        h, w = gray.shape
        small = (
            cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            if s < 1
            else gray
        )
        return cv2.equalizeHist(small)  # dim and low-contrast faces: what the cascades were trained on

    def _run(self, img0: np.ndarray, s: float, mn: int, max_size: int | None = None,
             min_neighbors: int | None = None) -> list[np.ndarray]:
        found: list[np.ndarray] = []
        mx = (max_size, max_size) if max_size else None
        for kind, c in self.cascades:
            flips = (False, True) if kind == "profile" else (False,)  # profile cascade is one-sided
            for flip in flips:
                img = cv2.flip(img0, 1) if flip else img0
                kw = {"maxSize": mx} if mx else {}
                r = c.detectMultiScale(
                    img,
                    scaleFactor=self.scale_factor,
                    minNeighbors=min_neighbors or self.min_neighbors,
                    minSize=(mn, mn),
                    **kw,
                )
                for x, y, bw, bh in np.asarray(r).reshape(-1, 4):
                    if flip:
                        x = img.shape[1] - x - bw
                    found.append(np.array([x, y, x + bw, y + bh], np.float64) / s)
        return found


class DlibHogFaceDetector:
    """dlib's HOG + linear SVM frontal detector (80x80 window; `upsample` halves the smallest face)."""

    name = "dlib_hog"

    def __init__(
        self, *, upsample: int | None = None, max_det_side: int = 1280, auto_upsample_below: int = 720
    ):
        try:
            import dlib
        except ImportError as e:
            raise GuardError("faces: dlib is not installed (pip install dlib-bin)") from e
        self._det = dlib.get_frontal_face_detector()
        self.upsample, self.max_det_side, self.auto_below = upsample, max_det_side, auto_upsample_below

    def detect(self, rgb: np.ndarray) -> Boxes:
        h, w = rgb.shape[:2]
        s = _det_scale(h, w, self.max_det_side)
        img = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else rgb
        up = self.upsample
        if up is None:  # auto: small frames have small faces; upsampling once finds 40 px ones (4x the cost)
            up = 1 if max(img.shape[:2]) <= self.auto_below else 0
        rects = self._det(np.ascontiguousarray(img), up)
        return (
            np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float64).reshape(-1, 4)
            / s
        )


class UnionFaceDetector:
    """Several detectors on the same frame; boxes merged. Misses only what all of them miss.

    `detect_at(rgb, run)` is the cadenced form FaceBlurrer uses: detector i runs only when
    run % every[i] == 0, and Haar does its costly small-face pass every `small_every`-th run."""

    def __init__(
        self,
        detectors: list[FaceDetector],
        every: list[int] | None = None,
        small_every: int = 1,
        large_face: int | None = None,
        small_side: int | None = None,
    ):
        self.detectors = detectors
        self.every = every or [1] * len(detectors)
        if len(self.every) != len(detectors) or min(self.every) < 1:
            raise ValueError("UnionFaceDetector: `every` needs one cadence >= 1 per detector")
        self.small_every, self.large_face, self.small_side = small_every, large_face, small_side
        self.name = "+".join(d.name for d in detectors)

    def detect(self, rgb: np.ndarray) -> Boxes:
        return merge_boxes(np.concatenate([d.detect(rgb) for d in self.detectors]).reshape(-1, 4))

    def detect_at(self, rgb: np.ndarray, run: int) -> Boxes:
        out = []
        for d, n in zip(self.detectors, self.every):
            if run % n:
                continue
            if isinstance(d, HaarFaceDetector) and self.large_face is not None:
                out.append(
                    d.detect_scaled(
                        rgb,
                        small=run % self.small_every == 0,
                        large_face=self.large_face,
                        small_side=self.small_side,
                    )
                )
            else:
                out.append(d.detect(rgb))
        return merge_boxes(np.concatenate(out).reshape(-1, 4)) if out else np.zeros((0, 4))

    @property
    def period(self) -> int:
        """Detector runs until every pass has run once: a new face may be found this many runs late."""
        return int(np.lcm.reduce([*self.every, self.small_every if self.large_face is not None else 1]))


class NudeNetFaceDetector:
    """NudeNet's ONNX YOLO (FACE_FEMALE / FACE_MALE classes) as a face detector: a CNN, independent of
    Haar and HOG, used to CHECK the blur (tests, bench). Input is resized to 320 px: small faces are lost."""

    name = "nudenet_face"

    def __init__(self, min_score: float = 0.3):
        try:
            from nudenet import NudeDetector
        except ImportError as e:
            raise GuardError("faces: nudenet is not installed (pip install --no-deps nudenet==3.4.2)") from e
        self._det, self.min_score = NudeDetector(), min_score

    def detect(self, rgb: np.ndarray) -> Boxes:
        dets = self._det.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        b = [
            [x, y, x + w, y + h]
            for d in dets
            if d["class"].startswith("FACE_") and d["score"] >= self.min_score
            for x, y, w, h in [d["box"]]
        ]
        return np.array(b, np.float64).reshape(-1, 4)


def make_detector(cfg: FaceBlurConfig) -> FaceDetector:
    haar = lambda: HaarFaceDetector(
        min_face=cfg.min_face,
        max_det_side=cfg.max_det_side,
        scale_factor=cfg.scale_factor,
        min_neighbors=cfg.min_neighbors,
        small_min_neighbors=cfg.small_face_min_neighbors,
        small_below=cfg.large_face,
        profile=cfg.profile,
    )
    # two-pass Haar (coarse every run, fine every small_face_every-th) unless configured as one pass
    two = cfg.large_face > cfg.min_face and (
        cfg.small_face_every > 1 or cfg.small_face_side != cfg.max_det_side
    )
    large = cfg.large_face if two else None
    if cfg.detector == "haar":
        return UnionFaceDetector(
            [haar()], small_every=cfg.small_face_every, large_face=large, small_side=cfg.small_face_side
        )
    if cfg.detector == "dlib_hog":
        return UnionFaceDetector([DlibHogFaceDetector(max_det_side=cfg.max_det_side)], every=[cfg.hog_every])
    # HOG (80 px window; upsampled once on frames <= 720 px) for turned/low-contrast faces, Haar (20 px) for
    # small ones. Speed: Haar's large faces every run, its small faces and HOG every few runs (the tracker
    # covers a face between the runs that see it).
    return UnionFaceDetector(
        [haar(), DlibHogFaceDetector(max_det_side=cfg.max_det_side)],
        every=[1, cfg.hog_every],
        small_every=cfg.small_face_every,
        large_face=large,
        small_side=cfg.small_face_side,
    )


@dataclass
class _Track:
    id: int
    box: np.ndarray  # smoothed box at the last detection step (observed or predicted)
    last_seen: int  # frame index of the last real detection
    vel: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box change per frame
    hits: int = 1


class FaceTracker:
    """Greedy IoU tracker over detection steps, with persistence, velocity and box smoothing.

    step(t, dets) returns [(box_before, box_now, born)] for every live track: box_before is the track's
    box at the previous step (None when born now); box_now is the smoothed detection (never smaller than
    the raw one) or, for a track missed at t, its prediction.
    """

    def __init__(self, *, max_missed: int = 8, iou_match: float = 0.15, smooth: float = 0.6):
        self.max_missed, self.iou_match, self.smooth = max_missed, iou_match, smooth
        self.tracks: list[_Track] = []
        self._next = 0
        self._last_t: int | None = None

    def _affinity(self, tr: _Track, pred: np.ndarray, det: np.ndarray) -> float:
        iou = box_iou(pred, det)
        if iou >= self.iou_match:
            return iou
        # fast motion between sparse detections: accept a near centre of similar size
        c1, c2 = (pred[:2] + pred[2:]) / 2, (det[:2] + det[2:]) / 2
        size = max(pred[2] - pred[0], det[2] - det[0], 1.0)
        ratio = (det[2] - det[0]) / max(pred[2] - pred[0], 1.0)
        if np.linalg.norm(c1 - c2) < 0.6 * size and 0.5 < ratio < 2.0:
            return self.iou_match * 0.5
        return 0.0

    def step(self, t: int, dets: Boxes) -> list[tuple[np.ndarray | None, np.ndarray, bool]]:
        dt = t - self._last_t if self._last_t is not None else 1
        preds = [tr.box + tr.vel * dt for tr in self.tracks]
        pairs = sorted(
            (
                (self._affinity(tr, preds[i], d), i, j)
                for i, tr in enumerate(self.tracks)
                for j, d in enumerate(dets)
            ),
            reverse=True,
        )
        used_t, used_d, out = set(), set(), []
        for a, i, j in pairs:
            if a <= 0 or i in used_t or j in used_d:
                continue
            used_t.add(i)
            used_d.add(j)
            tr, det = self.tracks[i], np.asarray(dets[j], np.float64)
            before = tr.box.copy()
            sm = self.smooth * det + (1 - self.smooth) * preds[i]
            now = np.array([min(sm[0], det[0]), min(sm[1], det[1]), max(sm[2], det[2]), max(sm[3], det[3])])
            gap = max(1, t - tr.last_seen)
            tr.vel = 0.5 * tr.vel + 0.5 * (now - before) / max(1, dt) if tr.hits > 1 else (now - before) / gap
            tr.box, tr.last_seen, tr.hits = now, t, tr.hits + 1
            out.append((before, now, False))
        alive: list[_Track] = []
        for i, tr in enumerate(self.tracks):
            if i in used_t:
                alive.append(tr)
            elif t - tr.last_seen <= self.max_missed:  # missed: keep covering the predicted place
                before = tr.box.copy()
                tr.box = preds[i]
                alive.append(tr)
                # the longer unseen, the less sure where it is: grow the painted box 6% a side per frame
                g = min(0.5, 0.06 * (t - tr.last_seen)) * (tr.box[2:] - tr.box[:2])
                out.append((before, np.concatenate([tr.box[:2] - g, tr.box[2:] + g]), False))
        for j, d in enumerate(dets):
            if j not in used_d:
                tr = _Track(self._next, np.asarray(d, np.float64).copy(), t)
                self._next += 1
                alive.append(tr)
                out.append((None, tr.box.copy(), True))
        self.tracks = alive
        self._last_t = t
        return out


def expand_box(box: np.ndarray, frac: float, w: int, h: int) -> tuple[int, int, int, int]:
    bw, bh = box[2] - box[0], box[3] - box[1]
    x0 = int(np.floor(max(0, box[0] - frac * bw)))
    y0 = int(np.floor(max(0, box[1] - frac * bh * 1.3)))  # more room above: forehead and hair
    x1 = int(np.ceil(min(w, box[2] + frac * bw)))
    y1 = int(np.ceil(min(h, box[3] + frac * bh)))
    return x0, y0, x1, y1


def anonymise(img: np.ndarray, rects: list[tuple[int, int, int, int]], method: str = "blur") -> np.ndarray:
    """Return a copy of img with every rect blurred (strong Gaussian) or pixelated; img is not touched."""
    if not rects:
        return img
    out = img.copy()
    for x0, y0, x1, y1 in rects:
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        roi = out[y0:y1, x0:x1]
        side = max(x1 - x0, y1 - y0)
        if method == "pixelate":
            # ~6 blocks across: too coarse for features, still a face-shaped blob of the right colour
            n = max(1, side // max(4, side // 6))
            small = cv2.resize(
                roi,
                (max(1, (x1 - x0) * n // side), max(1, (y1 - y0) * n // side)),
                interpolation=cv2.INTER_AREA,
            )
            out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        else:
            # sigma ~ side/6 wipes eyes/nose/mouth structure; two passes (down-up + gaussian) keep it cheap
            small = cv2.resize(
                roi, (max(1, (x1 - x0) // 8), max(1, (y1 - y0) // 8)), interpolation=cv2.INTER_AREA
            )
            up = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
            k = max(3, (side // 4) | 1)
            out[y0:y1, x0:x1] = cv2.GaussianBlur(up, (k, k), 0)
    return out


@dataclass
class _Pending:
    idx: int
    frame: np.ndarray
    boxes: list[np.ndarray] = field(default_factory=list)


@dataclass
class FaceBlurStats:
    frames: int = 0
    detector_runs: int = 0
    detections: int = 0
    tracks: int = 0
    frames_blurred: int = 0
    blurred_area_share: float = 0.0  # mean over frames of blurred pixels / frame pixels
    det_ms: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class FaceBlurrer:
    """Streaming face anonymiser: frames in, blurred frames out, same order and count."""

    def __init__(self, cfg: FaceBlurConfig | None = None, detector: FaceDetector | None = None):
        self.cfg = cfg or FaceBlurConfig()
        self.detector = detector if detector is not None else make_detector(self.cfg)
        self.stats = FaceBlurStats()
        self.frame_rects: dict[int, list[tuple[int, int, int, int]]] | None = None  # set {} to record

    def process(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        import time

        cfg, k = self.cfg, self.cfg.detect_every
        tracker = FaceTracker(max_missed=cfg.max_missed, iou_match=cfg.iou_match, smooth=cfg.smooth)
        # a face that only a sparse pass (small faces, HOG) can see is found up to period*k - 1 frames
        # late: back-fill that far, and let tracks outlive the gap between the runs that see them
        period = int(getattr(self.detector, "period", 1))
        backfill = max(cfg.backfill, k * period - 1)
        tracker.max_missed = max(cfg.max_missed, k * period + k)
        buf: deque[_Pending] = deque()
        last_det: int | None = None
        area_sum = 0.0
        detect_at = getattr(self.detector, "detect_at", None)

        def detect_step(p: _Pending) -> None:
            nonlocal last_det
            t0 = time.perf_counter()
            run = self.stats.detector_runs
            dets = detect_at(p.frame, run) if detect_at is not None else self.detector.detect(p.frame)
            self.stats.det_ms += (time.perf_counter() - t0) * 1000
            self.stats.detector_runs += 1
            self.stats.detections += len(dets)
            prev = last_det
            for before, now, born in tracker.step(p.idx, dets):
                self.stats.tracks += int(born)
                for q in buf:
                    if q.idx == p.idx:
                        q.boxes.append(now)
                    elif born and p.idx - backfill <= q.idx < p.idx:
                        q.boxes.append(now)  # a face found late was there before: cover it back
                    elif before is not None and prev is not None and prev < q.idx < p.idx:
                        a = (q.idx - prev) / (p.idx - prev)
                        q.boxes.append((1 - a) * before + a * now)  # between detections: interpolate
            last_det = p.idx

        def emit(p: _Pending) -> np.ndarray:
            nonlocal area_sum
            h, w = p.frame.shape[:2]
            rects = [expand_box(b, cfg.expand, w, h) for b in p.boxes]
            rects = [r for r in rects if r[2] > r[0] and r[3] > r[1]]
            if self.frame_rects is not None:
                self.frame_rects[p.idx] = rects
            self.stats.frames += 1
            if rects:
                self.stats.frames_blurred += 1
                mask = np.zeros((h, w), bool)
                for x0, y0, x1, y1 in rects:
                    mask[y0:y1, x0:x1] = True
                area_sum += mask.mean()
                self.stats.blurred_area_share = area_sum / self.stats.frames
            return anonymise(p.frame, rects, cfg.method)

        for idx, frame in enumerate(frames):
            if (
                not isinstance(frame, np.ndarray)
                or frame.ndim != 3
                or frame.shape[2] != 3
                or frame.dtype != np.uint8
            ):
                raise ValueError(
                    f"frame {idx}: expected an RGB uint8 array (h, w, 3), got {getattr(frame, 'shape', type(frame))}"
                )
            p = _Pending(idx, frame)
            buf.append(p)
            if idx % k == 0:
                detect_step(p)
                while buf and buf[0].idx <= idx - backfill:
                    yield emit(buf.popleft())
        if buf and last_det != buf[-1].idx:  # close the last interval so its frames get interpolated boxes
            detect_step(buf[-1])
        while buf:
            yield emit(buf.popleft())
        self.stats.blurred_area_share = area_sum / max(1, self.stats.frames)
