"""Captioners: an OpenAI-compatible VLM adapter and an honest offline default.

Two implementations behind one small `Captioner` protocol:

- `SignalCaptioner` ("signals-v1"): NOT a learned captioner. It writes one or two factual sentences
  from measurable signals: duration, resolution, brightness, colours (pixels binned into named HSV
  regions), optical-flow motion and a global camera model (pan / tilt / zoom / shake / moving
  subjects), Haar-cascade faces and RapidOCR on-screen text. No VLM weights exist on our machines, so
  this is the default; its name says what it is.
- `OpenAIVLMCaptioner` ("vlm:<model>"): POSTs evenly sampled JPEG frames to `{base_url}/chat/completions`
  of an OpenAI-compatible server (vLLM serving Qwen2.5-VL, for example), with retries and readable
  errors.

Units of the motion signals (computed here, and expected in `hints` under the same keys):
(the same units as wfm_platform.curation.filters' scores, so its scores can be passed as hints)
  motion_mean      mean optical-flow speed, in frame diagonals per second
  camera_pan_x/_y  global translation of the image content, in frame diagonals per second
                   (positive = content moves right / down, i.e. the camera pans left / tilts up)
  camera_zoom      relative scale change per second (positive = content grows = zoom in)
  shakiness        change of that translation between consecutive ~0.1 s intervals (jitter), diagonals/s
  moving_area      share of the frame whose motion the camera model does not explain (moving subjects)
Motion hints are used only when all of MOTION_KEYS are present (the filters give no moving_area today).
  brightness_mean  mean luma 0..255 (a value <= 1.0 is read as a 0..1 fraction, as the filters give it)
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import requests

from ..video import VideoError, fit_size, iter_frames, probe, sample_frames
from ..video.thumbs import jpeg_bytes

log = logging.getLogger(__name__)

SIGNALS_NAME = "signals-v1"

DEFAULT_SYSTEM_PROMPT = (
    "You caption video clips for a video-generation training set. The images are frames sampled "
    "evenly from ONE clip, in temporal order."
)
DEFAULT_PROMPT = (
    "Describe this video clip in 2-4 sentences: the scene, the main subjects and what they do, how the "
    "camera moves, lighting and style. Describe only what is visible; do not guess names or intent."
)

# --- thresholds of the offline captioner (units in the module docstring) ---------------------------
ANALYSIS_SIDE = 640  # sampled RGB frames (OCR reads these): longer side in px
FACE_SIDE = 480  # Haar face detection
MOTION_SIDE = 256  # gray frames for optical flow
COLOUR_SIDE = 96  # frames for colour naming
MOTION_GAP_S = 0.1  # time between the two frames of a flow pair
MOTION_POSITIONS = 6  # where in the clip motion is measured (each: 3 frames -> 2 flow pairs)
PAN_MIN = 0.03  # |camera_pan_x/y| above this (diagonals / s) and consistent in sign -> "pans"
ZOOM_MIN = 0.03  # |camera_zoom| per second above this -> "zooms"
SHAKY_MIN = 0.10  # shakiness above this -> "handheld, shaky camera"
MOVING_AREA_MIN = 0.005  # moving_area above this -> "moving subjects"
RESIDUAL_SPEED = 0.03  # per-pixel unexplained speed (diagonals / s) that counts as "moving"
MOTION_LEVELS = [(0.005, "almost no motion"), (0.05, "little motion"), (0.15, "moderate motion")]
BRIGHTNESS_LEVELS = [(40, "dark"), (85, "dimly lit"), (170, "moderately lit"), (215, "bright")]
MOTION_KEYS = ("motion_mean", "camera_pan_x", "camera_pan_y", "camera_zoom", "shakiness", "moving_area")
OCR_MIN_SCORE = 0.8  # RapidOCR line confidence
OCR_MAX_CHARS = 100


class CaptionError(Exception):
    """A clip that cannot be captioned or an endpoint that failed; the message says what to check."""


@dataclass
class Caption:
    text: str
    captioner: str  # "signals-v1" or "vlm:<model>"
    frames_used: list[int]
    details: dict = field(default_factory=dict)  # signals used, token usage, latency_ms, ...

    def to_dict(self) -> dict:
        return {"text": self.text, "captioner": self.captioner, "frames_used": list(self.frames_used),
                "details": self.details}


PROMPT_NAME = "prompt"  # the "captioner" of a clip captioned by its upload's sidecar prompt


def prompt_caption(prompt: str) -> Caption:
    """The caption of a video that came with its prompt (a generated video's sidecar): the prompt itself.

    Why: the prompt is what the video was generated FROM, a better text pair than any offline caption."""
    text = " ".join(prompt.split())
    if not text:
        raise CaptionError("the sidecar prompt is empty; remove it or give the video a prompt")
    return Caption(text=text, captioner=PROMPT_NAME, frames_used=[], details={"source": "prompt"})


@runtime_checkable
class Captioner(Protocol):
    name: str

    def caption(self, path, start: int = 0, end: int | None = None, *, fps: float | None = None,
                hints: dict | None = None) -> Caption: ...


# --- shared helpers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Clip:
    path: str
    start: int
    end: int
    fps: float
    width: int
    height: int


def _resolve_clip(path, start: int, end: int | None, fps: float | None) -> _Clip:
    """Probe the file and validate the frame range; every failure becomes a readable CaptionError."""
    try:
        info = probe(path)
    except VideoError as e:
        raise CaptionError(f"cannot caption {path}: {e.reason}") from e
    last = info.num_frames - 1
    if end is None:
        end = last
    else:
        # Without an exact count the header estimate may be a frame or two off: allow that much.
        slack = 0 if info.frames_exact else 2 + info.num_frames // 100
        if end > last + slack:
            raise CaptionError(f"cannot caption {path}: end frame {end} is past the last frame {last}")
    if start < 0 or end < start:
        raise CaptionError(f"cannot caption {path}: empty or negative frame range {start}..{end}")
    rate = fps if fps and fps > 0 else info.fps
    if not rate or rate <= 0:
        raise CaptionError(f"cannot caption {path}: unknown frame rate; pass fps=")
    return _Clip(str(path), int(start), int(end), float(rate), info.width, info.height)


def _sample_rgb(clip: _Clip, n: int, max_side: int) -> list[tuple[int, np.ndarray]]:
    """n RGB frames spread evenly over the clip (first and last included), downscaled."""
    size = fit_size(clip.width, clip.height, max_side) if max(clip.width, clip.height) > max_side else None
    try:
        out = sample_frames(clip.path, clip.start, clip.end, n, size=size)
    except VideoError as e:
        raise CaptionError(f"cannot caption {clip.path}: {e.reason}") from e
    if not out:
        raise CaptionError(f"cannot caption {clip.path}: no decodable frames in {clip.start}..{clip.end}")
    return out


# --- offline signals ------------------------------------------------------------------------------

_ocr_lock = threading.Lock()
_ocr_engine = None
_face_cascades: tuple[cv2.CascadeClassifier, cv2.CascadeClassifier] | None = None


def _get_ocr():
    """One RapidOCR per process (it takes ~1 s to load its bundled PP-OCR ONNX models)."""
    global _ocr_engine
    with _ocr_lock:
        if _ocr_engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR

                _ocr_engine = RapidOCR()
            except Exception as e:  # import or model load: say what to do
                raise CaptionError(f"RapidOCR could not load ({e}); install rapidocr-onnxruntime or use "
                                   "SignalCaptioner(ocr=False)") from e
    return _ocr_engine


def _get_face_cascades() -> tuple[cv2.CascadeClassifier, cv2.CascadeClassifier]:
    """(detector, verifier): OpenCV's default frontal-face cascade finds faces, the alt2 cascade confirms."""
    global _face_cascades
    if _face_cascades is None:
        loaded = []
        for name in ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml"):
            cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
            if cascade.empty():
                raise CaptionError(f"Haar cascade {name} not loadable from {cv2.data.haarcascades}; needs "
                                   "opencv-contrib-python-headless 4.x "
                                   "(or SignalCaptioner(detect_faces=False))")
            loaded.append(cascade)
        _face_cascades = (loaded[0], loaded[1])
    return _face_cascades


def _brightness(frames: list[np.ndarray]) -> float:
    return float(np.mean([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).mean() for f in frames]))


# Hue ranges in degrees (OpenCV hue * 2) -> colour name; checked in order.
_HUES = [(15, "red"), (40, "orange"), (70, "yellow"), (160, "green"), (200, "cyan"), (260, "blue"),
         (290, "purple"), (345, "pink"), (360, "red")]


def _colour_shares(frames: list[np.ndarray]) -> dict[str, float]:
    """Share of pixels per colour name: every pixel is binned into a named region of HSV space
    (dark -> black, unsaturated -> grey/white, else by hue; dark oranges -> brown)."""
    hsv = []
    for f in frames:
        w, h = fit_size(f.shape[1], f.shape[0], COLOUR_SIDE)
        small = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
        hsv.append(cv2.cvtColor(small, cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3))
    px = np.concatenate(hsv).astype(np.float32)
    hue, sat, val = px[:, 0] * (360.0 / 256.0), px[:, 1], px[:, 2]
    names = np.full(len(px), "", dtype=object)
    black = val < 45
    achrom = ~black & (sat < 45)
    names[black] = "black"
    names[achrom & (val >= 200)] = "white"
    names[achrom & (val < 200)] = "grey"
    chrom = ~black & ~achrom
    lo = 0.0
    for hi, name in _HUES:
        names[chrom & (hue >= lo) & (hue < hi)] = name
        lo = hi
    # Brown is dark orange/red; people name it differently from bright orange.
    names[chrom & (hue < 40) & (val < 150) & (sat < 200)] = "brown"
    uniq, counts = np.unique(names.astype(str), return_counts=True)
    total = counts.sum()
    return {str(u): round(float(c) / total, 3) for u, c in sorted(zip(uniq, counts), key=lambda x: -x[1])}


def _faces(frames: list[np.ndarray]) -> tuple[int, list[int]]:
    """Faces in the sampled frames: (count, per-frame counts).

    The default cascade alone fires on texture (cockatoo feathers, 3 of 16 frames), so each detection is
    confirmed by the alt2 cascade run only inside that box (cheap), and a face counts only when found in
    at least half the frames: the count is the upper median of the per-frame counts.
    """
    detector, verifier = _get_face_cascades()
    counts = []
    for f in frames:
        w, h = fit_size(f.shape[1], f.shape[0], FACE_SIDE)
        small = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) if (w, h) != f.shape[1::-1] else f
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        n = 0
        found = detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=6, minSize=(24, 24))
        for x, y, bw, bh in found:
            m = bw // 4
            roi = gray[max(0, y - m): y + bh + m, max(0, x - m): x + bw + m]
            confirmed = verifier.detectMultiScale(roi, scaleFactor=1.05, minNeighbors=3,
                                                  minSize=(int(bw * 0.7), int(bh * 0.7)),
                                                  maxSize=(int(bw * 1.4) + 1, int(bh * 1.4) + 1))
            n += len(confirmed) > 0
        counts.append(n)
    return int(sorted(counts)[len(counts) // 2]), counts


def _ocr_text(frames: list[np.ndarray], engine) -> str:
    """Text lines RapidOCR reads with confidence, per frame in reading order; frames whose text is
    contained in another frame's text are dropped (the same overlay read twice)."""
    per_frame: list[str] = []
    for f in frames:
        result, _ = engine(f)
        lines = [str(r[1]).strip() for r in (result or []) if float(r[2]) >= OCR_MIN_SCORE]
        # Single characters are mostly texture read as letters.
        lines = [s for s in lines if sum(ch.isalnum() for ch in s) >= 2]
        if lines:
            per_frame.append(" ".join(lines))

    def key(s: str) -> str:
        return "".join(s.lower().split())

    kept: list[str] = []
    for s in sorted(dict.fromkeys(per_frame), key=len, reverse=True):
        if not any(key(s) in key(k) for k in kept):
            kept.append(s)
    text = " / ".join(sorted(kept, key=per_frame.index))
    return text[:OCR_MAX_CHARS].rstrip()


def _motion(clip: _Clip) -> tuple[dict[str, float], list[int]]:
    """Optical flow (DIS) on small gray frames, and a similarity model of the camera fitted with RANSAC.

    At MOTION_POSITIONS places in the clip, three frames MOTION_GAP_S apart give two flow fields. Per
    field: camera translation / zoom from the robust global model; `moving_area` = share of pixels whose
    flow the camera model does not explain (subjects moving); shakiness = how much the camera
    translation changes between the two consecutive fields (jitter).
    """
    gap = max(1, int(round(clip.fps * MOTION_GAP_S)))
    span = clip.end - clip.start
    if span < gap:
        return {}, []
    last_pos = clip.start + max(0, span - 2 * gap)
    positions = sorted({int(round(x)) for x in np.linspace(clip.start, last_pos, MOTION_POSITIONS)})
    wanted = {p + k * gap for p in positions for k in range(3) if p + k * gap <= clip.end}
    w, h = fit_size(clip.width, clip.height, MOTION_SIDE)
    frames: dict[int, np.ndarray] = {}
    try:
        # gray is iter_frames' fast path (no colour conversion); only the wanted frames are resized.
        for idx, gray in iter_frames(clip.path, start=clip.start, end=max(wanted), fmt="gray"):
            if idx in wanted:
                frames[idx] = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)
    except VideoError as e:
        raise CaptionError(f"cannot caption {clip.path}: {e.reason}") from e

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    ys, xs = np.mgrid[4:h:8, 4:w:8]
    grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    centre = np.array([w / 2.0, h / 2.0])
    diag = float(np.hypot(w, h))
    dt = gap / clip.fps
    fields: list[dict[str, float]] = []
    jitters: list[float] = []
    for p in positions:
        trans = []
        for a, b in ((p, p + gap), (p + gap, p + 2 * gap)):
            if a not in frames or b not in frames:
                continue
            flow = dis.calc(frames[a], frames[b], None)
            vec = flow[grid[:, 1].astype(int), grid[:, 0].astype(int)]
            model, _ = cv2.estimateAffinePartial2D(grid, grid + vec, method=cv2.RANSAC,
                                                   ransacReprojThreshold=1.0)
            if model is None:  # flat frames: no structure to fit; treat the camera as still
                model = np.array([[1.0, 0, 0], [0, 1.0, 0]])
            explained = grid @ model[:, :2].T + model[:, 2] - grid
            residual = np.linalg.norm(vec - explained, axis=1) / diag / dt
            shift = model[:, :2] @ centre + model[:, 2] - centre
            tx, ty = shift[0] / diag / dt, shift[1] / diag / dt
            trans.append((tx, ty))
            fields.append({
                "motion": float(np.linalg.norm(vec, axis=1).mean() / diag / dt),
                "pan_x": float(tx), "pan_y": float(ty),
                "zoom": float((np.hypot(model[0, 0], model[1, 0]) - 1.0) / dt),
                "moving_area": float((residual > RESIDUAL_SPEED).mean()),
            })
        if len(trans) == 2:
            jitters.append(float(np.hypot(trans[1][0] - trans[0][0], trans[1][1] - trans[0][1])))
    if not fields:
        return {}, sorted(frames)

    def consistent(key: str) -> float:
        """Median, or 0 when fewer than 2/3 of the fields agree in sign (back-and-forth is not a pan)."""
        vals = np.array([f[key] for f in fields])
        med = float(np.median(vals))
        agree = float(np.mean(np.sign(vals) == np.sign(med))) if med else 0.0
        return med if agree >= 2 / 3 else 0.0

    signals = {
        "motion_mean": float(np.mean([f["motion"] for f in fields])),
        "camera_pan_x": consistent("pan_x"),
        "camera_pan_y": consistent("pan_y"),
        "camera_zoom": consistent("zoom"),
        "shakiness": float(np.mean(jitters)) if jitters else 0.0,
        "moving_area": float(np.median([f["moving_area"] for f in fields])),
    }
    return {k: round(v, 4) for k, v in signals.items()}, sorted(frames)


# --- phrasing -------------------------------------------------------------------------------------

_NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
_VIDEO_TYPES = {"natural": "live-action", "animation": "animated", "screen_recording": "screen-recording",
                "static_slideshow": "slideshow"}


def _level(value: float, levels: list[tuple[float, str]], top: str) -> str:
    for limit, word in levels:
        if value < limit:
            return word
    return top


def _orientation(w: int, h: int) -> str:
    if abs(w - h) <= 0.05 * max(w, h):
        return "square"
    return "landscape" if w > h else "portrait"


def _colour_phrase(shares: dict[str, float]) -> str:
    main = [name for name, share in shares.items() if share >= 0.2][:2]
    if not main:
        return "with mixed colours"
    if shares[main[0]] >= 0.6:
        main = main[:1]
    return "mostly " + " and ".join(main)


def _camera_phrase(s: dict) -> str:
    """Camera movement and motion level from the motion signals (units: module docstring)."""
    motion = _level(s["motion_mean"], MOTION_LEVELS, "strong motion")
    moves = []
    pan_x, pan_y, zoom = s.get("camera_pan_x", 0.0), s.get("camera_pan_y", 0.0), s.get("camera_zoom", 0.0)
    # Content moving left means the camera turns right (and content moving down: the camera tilts up).
    if abs(pan_x) >= PAN_MIN:
        moves.append("pans right" if pan_x < 0 else "pans left")
    if abs(pan_y) >= PAN_MIN:
        moves.append("tilts down" if pan_y < 0 else "tilts up")
    if abs(zoom) >= ZOOM_MIN:
        moves.append("zooms in" if zoom > 0 else "zooms out")
    if s.get("shakiness", 0.0) >= SHAKY_MIN:
        return "handheld, shaky camera" + (" that " + " and ".join(moves) if moves else "") + f", {motion}"
    if moves:
        return "camera " + " and ".join(moves) + f", {motion}"
    # Still camera: whatever moves is the subjects. moving_area says how much of the frame that is.
    moving = float(s.get("moving_area", 0.0))
    if moving >= MOVING_AREA_MIN:
        return f"static camera with moving subjects (about {moving:.0%} of the frame in motion)"
    return "static camera, no visible motion" if s["motion_mean"] < MOTION_LEVELS[0][0] else \
        f"static camera, {motion}"


def _face_phrase(n: int) -> str:
    if n <= 0:
        return ""
    if n == 1:
        return "one face visible"
    # Haar counts beyond a few are approximate (overlaps, partial faces): say so.
    return f"{_NUMBER_WORDS[n]} faces visible" if n in _NUMBER_WORDS else f"about {n} faces visible"


def compose_caption(s: dict) -> str:
    """The signals sentence(s). Pure function of the signals dict, so the same signals give the same text."""
    light = _level(s["brightness_mean"], BRIGHTNESS_LEVELS, "very bright")
    kind = _VIDEO_TYPES.get(str(s.get("video_type") or ""), "")
    dims = f"{s['width']}x{s['height']}"
    seconds = float(s["duration_s"])
    first = (f"A {seconds:.1f}-second " if seconds >= 1 else f"A {seconds:.2f}-second ")
    first += (f"{_orientation(s['width'], s['height'])} {dims} "
             f"{kind + ' ' if kind else ''}clip, {light}, {_colour_phrase(s['colours'])}.")
    parts = []
    if "motion_mean" in s:
        parts.append(_camera_phrase(s))
    elif s.get("num_frames_in_clip", 2) <= 1:
        parts.append("a single frame")
    elif s.get("motion_source") == "too short":
        parts.append("too short to measure motion")
    face = _face_phrase(int(s.get("faces", 0) or 0))
    if face:
        parts.append(face)
    if s.get("ocr_text"):
        text = str(s["ocr_text"]).replace('"', "'")
        parts.append(f'on-screen text reads "{text}"')
    if not parts:
        return first
    second = "; ".join(parts)
    return f"{first} {second[0].upper()}{second[1:]}."


def _hint(hints: dict, key: str):
    v = hints.get(key)
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v


class SignalCaptioner:
    """Offline default: a factual caption from measured signals ("signals-v1"). Not AI captioning.

    Every number behind the text is returned in `Caption.details["signals"]`, with
    `details["from_hints"]` naming the ones taken from upstream scores instead of measured here.
    """

    name = SIGNALS_NAME

    def __init__(self, n_frames: int = 4, detect_faces: bool = True, ocr: bool = True,
                 *, ocr_frames: int = 2, ocr_engine: Any = None):
        if n_frames < 1:
            raise ValueError("n_frames must be >= 1")
        self.n_frames = n_frames
        self.detect_faces = detect_faces
        self.ocr = ocr
        self.ocr_frames = ocr_frames  # OCR is the slow part (~0.3-1 s per 640 px frame on a CPU core)
        self._ocr_engine = ocr_engine  # a shared RapidOCR instance (e.g. the filters'), else our own

    def measure(self, path, start: int = 0, end: int | None = None, *, fps: float | None = None,
                hints: dict | None = None) -> tuple[dict, list[int], list[str]]:
        """(signals, frames_used, keys taken from hints)."""
        hints = dict(hints or {})
        clip = _resolve_clip(path, start, end, fps)
        t0 = time.perf_counter()
        sampled = _sample_rgb(clip, self.n_frames, ANALYSIS_SIDE)
        frames = [img for _, img in sampled]
        used = {i for i, _ in sampled}
        from_hints: list[str] = []
        s: dict[str, Any] = {"width": clip.width, "height": clip.height,
                             "num_frames_in_clip": clip.end - clip.start + 1}

        def take(key: str) -> bool:
            v = _hint(hints, key)
            if v is None:
                return False
            s[key] = v
            from_hints.append(key)
            return True

        if not take("duration_s"):
            s["duration_s"] = (clip.end - clip.start + 1) / clip.fps
        if take("brightness_mean"):
            if float(s["brightness_mean"]) <= 1.0:  # a 0..1 fraction upstream
                s["brightness_mean"] = float(s["brightness_mean"]) * 255.0
        else:
            s["brightness_mean"] = _brightness(frames)
        s["colours"] = _colour_shares(frames)
        take("video_type")

        # Motion is one group: the camera phrase needs pan, zoom and the residual (moving_area) from the
        # same camera model. Mixing estimators misleads (a whole-flow divergence "zoom" rises when a car
        # drives past a still camera), so hints are used only when they hold the whole group.
        missing = [k for k in MOTION_KEYS if _hint(hints, k) is None]
        if not missing:
            for key in MOTION_KEYS:
                take(key)
            s["motion_source"] = "hints"
        else:
            if len(missing) < len(MOTION_KEYS):
                log.debug("motion hints lack %s: measuring the motion group here", missing)
            measured, motion_frames = _motion(clip)
            s.update(measured)
            s["motion_source"] = "measured" if measured else "too short"
            used.update(motion_frames)

        if not take("faces") and self.detect_faces:
            s["faces"], s["faces_per_frame"] = _faces(frames)

        if not take("ocr_text"):
            area = _hint(hints, "text_area_ratio")
            if area is not None and float(area) <= 0.0:
                s["ocr_text"] = ""  # upstream OCR found no text: nothing to read
                from_hints.append("text_area_ratio")
            elif self.ocr:
                engine = self._ocr_engine or _get_ocr()
                pick = np.linspace(0, len(frames) - 1, min(self.ocr_frames, len(frames))).round().astype(int)
                s["ocr_text"] = _ocr_text([frames[i] for i in sorted(set(pick))], engine)
        s["measure_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return s, sorted(used), from_hints

    def caption(self, path, start: int = 0, end: int | None = None, *, fps: float | None = None,
                hints: dict | None = None) -> Caption:
        signals, used, from_hints = self.measure(path, start, end, fps=fps, hints=hints)
        text = compose_caption(signals)
        log.debug("signals caption for %s [%s..%s]: %s", path, start, end, text)
        return Caption(text=text, captioner=self.name, frames_used=used,
                       details={"signals": signals, "from_hints": from_hints})


# --- OpenAI-compatible VLM endpoint ----------------------------------------------------------------

class OpenAIVLMCaptioner:
    """Captions with a VLM behind an OpenAI-compatible `/chat/completions` endpoint (vLLM, SGLang, ...).

    Sends `n_frames` frames sampled evenly across the clip, resized so the longer side is `max_side`, as
    JPEG data URLs in one user message. With `include_signals`, the offline signals caption (faces,
    motion, camera; OCR only from hints) goes into the prompt as measured context.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, n_frames: int = 8,
                 max_side: int = 448, prompt: str = DEFAULT_PROMPT, max_tokens: int = 256,
                 temperature: float = 0.2, timeout_s: float = 60, retries: int = 3,
                 include_signals: bool = True, *, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                 backoff_s: float = 1.0, jpeg_quality: int = 90):
        if not base_url:
            raise ValueError("base_url is required, e.g. http://localhost:8000/v1")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("WFM_VLM_API_KEY")
        self.n_frames = n_frames
        self.max_side = max_side
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.retries = retries
        self.include_signals = include_signals
        self.backoff_s = backoff_s
        self.jpeg_quality = jpeg_quality
        self.name = f"vlm:{model}"

    def build_request(self, path, start: int = 0, end: int | None = None, *, fps: float | None = None,
                      hints: dict | None = None) -> tuple[dict, list[int], dict]:
        """(JSON body, frames sent, signals details or {})."""
        clip = _resolve_clip(path, start, end, fps)
        sampled = _sample_rgb(clip, self.n_frames, self.max_side)
        text = self.prompt
        signals: dict = {}
        if self.include_signals:
            # OCR only from hints: the VLM reads text itself and OCR is the slowest signal.
            sig = SignalCaptioner(n_frames=4, detect_faces=True, ocr=False)
            signal_caption = sig.caption(path, start, end, fps=fps, hints=hints)
            signals = {"text": signal_caption.text, **signal_caption.details}
            text += ("\n\nMeasured with classical computer vision (may be incomplete; trust the images): "
                     + signal_caption.text)
        content: list[dict] = [{"type": "text", "text": text}]
        for _, img in sampled:
            b64 = base64.b64encode(jpeg_bytes(img, quality=self.jpeg_quality)).decode("ascii")
            content.append({"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64}"}})
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": self.system_prompt},
                         {"role": "user", "content": content}],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        return body, [i for i, _ in sampled], signals

    def _post(self, body: dict) -> tuple[dict, int, float]:
        """POST, retrying connection errors, timeouts, 408, 429 and 5xx. Returns (json, attempts, ms)."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last, wait = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(wait)
            t0 = time.perf_counter()
            wait = self.backoff_s * 2**attempt
            try:
                resp = requests.post(self.url, json=body, headers=headers, timeout=self.timeout_s)
            except requests.Timeout:
                last = f"no answer within {self.timeout_s:g} s (raise timeout_s or check the server's load)"
                log.warning("VLM %s: %s (attempt %d)", self.url, last, attempt + 1)
                continue
            except requests.ConnectionError as e:
                last = f"cannot connect ({e.__class__.__name__}); is the server running at {self.base_url}?"
                log.warning("VLM %s: %s (attempt %d)", self.url, last, attempt + 1)
                continue
            ms = (time.perf_counter() - t0) * 1000
            status = resp.status_code
            if status == 429 or status == 408 or status >= 500:
                last = f"HTTP {status}: {_snippet(resp)}"
                retry_after = resp.headers.get("Retry-After", "")
                if retry_after.replace(".", "", 1).isdigit():
                    wait = min(float(retry_after), 30.0)
                log.warning("VLM %s: %s (attempt %d)", self.url, last, attempt + 1)
                continue
            if status >= 400:
                raise CaptionError(f"VLM endpoint {self.url} answered HTTP {status}: {_snippet(resp)}; "
                                   f"{_advice(status, self.model)}")
            try:
                return resp.json(), attempt + 1, ms
            except ValueError as e:
                raise CaptionError(f"VLM endpoint {self.url} answered HTTP {status} with malformed JSON "
                                   f"({_snippet(resp)}); is base_url an OpenAI-compatible /v1 root?") from e
        raise CaptionError(f"VLM endpoint {self.url} failed after {self.retries + 1} attempts: {last}")

    def caption(self, path, start: int = 0, end: int | None = None, *, fps: float | None = None,
                hints: dict | None = None) -> Caption:
        body, frames, signals = self.build_request(path, start, end, fps=fps, hints=hints)
        data, attempts, ms = self._post(body)
        text = _completion_text(data, self.url)
        details: dict[str, Any] = {
            "model": data.get("model", self.model) if isinstance(data, dict) else self.model,
            "usage": data.get("usage") if isinstance(data, dict) else None,
            "finish_reason": (data["choices"][0].get("finish_reason")),
            "latency_ms": round(ms, 1),
            "attempts": attempts,
            "endpoint": self.url,
        }
        if signals:
            details["signals"] = signals
        return Caption(text=text, captioner=self.name, frames_used=frames, details=details)


def _snippet(resp: requests.Response, limit: int = 200) -> str:
    body = (resp.text or "").strip().replace("\n", " ")
    return (body[:limit] + "...") if len(body) > limit else (body or "<empty body>")


def _advice(status: int, model: str) -> str:
    if status in (401, 403):
        return "check the API key (api_key= or the WFM_VLM_API_KEY environment variable)"
    if status == 404:
        return f"check base_url (it should end in /v1) and that the server serves model {model!r}"
    if status in (400, 413, 422):
        return (f"the server rejected the request: check that {model!r} accepts images, and n_frames / "
                "max_side against its limits (vLLM: --limit-mm-per-prompt, --max-model-len)")
    return "check the request and the server logs"


def _completion_text(data: Any, url: str) -> str:
    """choices[0].message.content as text; a CaptionError naming what is missing otherwise."""
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise CaptionError(f"VLM endpoint {url} answered without choices[0].message.content "
                           f"(got {str(data)[:200]!r}); is it an OpenAI-compatible chat endpoint?") from e
    if isinstance(content, list):  # some servers return content parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    text = (content or "").strip() if isinstance(content, str) else ""
    if not text:
        reason = data["choices"][0].get("finish_reason")
        raise CaptionError(f"VLM endpoint {url} returned an empty caption (finish_reason={reason!r}); "
                           "check max_tokens and the prompt")
    return text


def make_captioner(kind: str, **kwargs) -> Captioner:
    """"signals" -> SignalCaptioner(**kwargs); "openai" (alias "vlm") -> OpenAIVLMCaptioner(**kwargs)."""
    key = kind.strip().lower()
    if key in ("signals", SIGNALS_NAME):
        return SignalCaptioner(**kwargs)
    if key in ("openai", "vlm"):
        return OpenAIVLMCaptioner(**kwargs)
    raise ValueError(f"unknown captioner kind {kind!r}; use 'signals' (offline) or 'openai' (VLM endpoint)")


__all__ = [
    "Caption",
    "CaptionError",
    "Captioner",
    "DEFAULT_PROMPT",
    "OpenAIVLMCaptioner",
    "SignalCaptioner",
    "compose_caption",
    "make_captioner",
]
