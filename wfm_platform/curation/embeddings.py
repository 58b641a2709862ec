"""Clip embeddings: one L2-normalised float32 vector per clip, for dedup and similarity search.

Two embedders behind one small interface (`Embedder`):

- `VisualSignatureEmbedder` ("visual-signature-v1"): the offline default. Hand-made, no weights. It finds
  near-duplicates (re-encodes, resizes, small crops, brightness tweaks of the same footage) and groups
  visually similar footage. It does NOT understand semantics: two different videos of "a dog on a beach"
  are not close unless they also look alike.
- `TorchScriptEmbedder`: an adapter for a user's own image encoder (e.g. a CLIP / SigLIP vision tower they
  exported to TorchScript). That is where semantic dedup comes from; no such weights ship with this project.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import av
import cv2
import numpy as np

from ..video import VideoError, iter_frames

log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    def embed_frames(self, frames: list[np.ndarray]) -> np.ndarray:
        """RGB uint8 frames (h, w, 3) of one clip -> (dim,) float32, L2-normalised."""
        ...

    def embed_clip(self, path: str | os.PathLike, start: int = 0, end: int | None = None) -> np.ndarray:
        """Sample frames of path[start..end] (inclusive) itself and embed them."""
        ...


def _l2(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)


def _frame_count(path: str | os.PathLike) -> int:
    """Frames in the first video stream: the header's count, else a packet count (no decoding).

    Cheaper than video.probe, which decodes the first frames; embedding must stay near decode speed.
    """
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            if not c.streams.video:
                raise VideoError("no video stream", path)
            stream = c.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for p in c.demux(stream) if p.size > 0)
    except av.error.FFmpegError as e:
        raise VideoError(f"cannot open: {e}", path) from e


def _sample_clip_frames(
    path: str | os.PathLike, start: int, end: int | None, n: int, size: tuple[int, int] | None
) -> list[np.ndarray]:
    """~n frames spread evenly over [start, end], decoding only the frames kept (step), downscaled."""
    if end is None:
        end = _frame_count(path) - 1
    if end < start:
        raise ValueError(f"{path}: empty frame range {start}..{end}")
    length = end - start + 1
    # A fixed step lets iter_frames skip the colour conversion and resize of every frame not kept.
    step = max(1, length // n) if n > 1 else length
    first = start + (length - 1 - step * (min(n, length) - 1)) // 2  # centre the samples in the range
    frames = [img for _, img in iter_frames(path, start=max(start, first), end=end, step=step, size=size)]
    if not frames:
        raise VideoError(f"no decodable frames in {start}..{end}", path)
    return frames[:n]


class VisualSignatureEmbedder:
    """Offline near-duplicate / visual-similarity signature ("visual-signature-v1"), no model weights.

    Per sampled frame (downscaled to `thumb` x `thumb`), four blocks, each L2-normalised and weighted so
    the cosine of two signatures is the weighted mean of the per-block cosines:

    - layout: low-frequency 2-D DCT of the luma (8x8 coefficients without DC). Captures where light and
      dark masses are; drops absolute brightness (DC) and, after normalisation, contrast.
    - colour: HSV histogram, hue x saturation for coloured pixels plus a few grey levels for unsaturated
      ones; square-rooted (Hellinger) so large flat areas do not dominate.
    - edges: unsigned gradient-orientation histogram on a 2x2 grid (texture / structure direction).
    - change: where and how much the picture changes between sampled frames (4x4 grid of mean absolute
      luma differences), plus a "static" component, so a still shot and a busy one differ.

    Frame blocks are averaged over `n_frames` frames sampled evenly over the clip.

    What it captures: the same footage after re-encoding, resizing, small crops and mild brightness
    changes stays at cosine ~0.97+; different scenes fall clearly lower. What it does not capture:
    meaning. It is not a CLIP-style semantic embedding; content that is semantically the same but looks
    different is not close, and very different content with the same colours and layout (e.g. two shots
    of the same static camera) can be close. Mirrored or heavily cropped copies are not recognised.
    """

    name = "visual-signature-v1"
    _DCT = 8  # keep DCT coefficients [0:8, 0:8] of a 32x32 luma
    _HUE_BINS, _SAT_BINS, _GREY_BINS = 16, 3, 4
    _SAT_MIN = 40  # below this saturation (0..255) the hue is noise: count the pixel as grey
    _ORIENT_BINS, _GRID = 8, 2
    _CHANGE_GRID = 4
    _CHANGE_SCALE = 12.0  # mean abs luma difference (0..255) at which a clip counts as clearly moving

    def __init__(
        self,
        n_frames: int = 4,
        thumb: int = 64,
        weights: tuple[float, float, float, float] = (0.35, 0.25, 0.25, 0.15),
    ):
        if n_frames < 1:
            raise ValueError("n_frames must be >= 1")
        self.n_frames = n_frames
        self.thumb = thumb
        w = np.asarray(weights, np.float64)
        if w.shape != (4,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights: four non-negative numbers (layout, colour, edges, change)")
        self._block_scale = np.sqrt(w / w.sum())
        self._sizes = (
            self._DCT * self._DCT - 1,
            self._HUE_BINS * self._SAT_BINS + self._GREY_BINS,
            self._ORIENT_BINS * self._GRID * self._GRID,
            self._CHANGE_GRID * self._CHANGE_GRID + 1,
        )
        self.dim = int(sum(self._sizes))

    # -- per-frame blocks -------------------------------------------------------------------------------
    def _layout(self, gray: np.ndarray) -> np.ndarray:
        small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        coeffs = cv2.dct(small)[: self._DCT, : self._DCT].ravel()[1:]  # [1:] drops DC = mean brightness
        return _l2(coeffs)

    def _colour(self, rgb: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        h, s, v = (hsv[..., i].ravel().astype(np.int32) for i in range(3))
        coloured = s >= self._SAT_MIN
        hue_bin = np.minimum(h * self._HUE_BINS // 180, self._HUE_BINS - 1)
        sat_bin = np.minimum(
            (s - self._SAT_MIN) * self._SAT_BINS // (256 - self._SAT_MIN), self._SAT_BINS - 1
        )
        chroma = np.bincount(
            (hue_bin * self._SAT_BINS + sat_bin)[coloured], minlength=self._HUE_BINS * self._SAT_BINS
        )
        grey = np.bincount((v[~coloured] * self._GREY_BINS) // 256, minlength=self._GREY_BINS)
        hist = np.concatenate([chroma, grey]).astype(np.float32)
        return _l2(np.sqrt(hist / max(1.0, hist.sum())))

    def _edges(self, gray: np.ndarray) -> np.ndarray:
        g = gray.astype(np.float32)
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
        mag = np.sqrt(gx * gx + gy * gy)
        ang = (np.arctan2(gy, gx) % np.pi) / np.pi  # unsigned orientation in [0, 1)
        obin = np.minimum((ang * self._ORIENT_BINS).astype(np.int32), self._ORIENT_BINS - 1)
        hh, ww = gray.shape
        rows = np.minimum(np.arange(hh) * self._GRID // hh, self._GRID - 1)
        cols = np.minimum(np.arange(ww) * self._GRID // ww, self._GRID - 1)
        cell = rows[:, None] * self._GRID + cols[None, :]
        idx = (cell * self._ORIENT_BINS + obin).ravel()
        hist = np.bincount(idx, weights=mag.ravel(), minlength=self._ORIENT_BINS * self._GRID**2)
        return _l2(np.sqrt(hist.astype(np.float32)))

    def _change(self, grays: list[np.ndarray]) -> np.ndarray:
        g = self._CHANGE_GRID
        out = np.zeros(g * g + 1, np.float32)
        if len(grays) < 2:
            out[-1] = 1.0  # a single frame: no evidence of change, treat as static
            return out
        small = [cv2.resize(x, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32) for x in grays]
        diff = np.mean([np.abs(b - a) for a, b in itertools.pairwise(small)], axis=0)
        pattern = cv2.resize(diff, (g, g), interpolation=cv2.INTER_AREA).ravel()
        # Amount of change decides the angle between "static" and "moving in this pattern": the block
        # stays unit-norm and a tiny re-encoding jitter on a still shot barely moves it.
        amount = float(np.tanh(diff.mean() / self._CHANGE_SCALE))
        out[:-1] = _l2(pattern) * amount
        out[-1] = np.sqrt(max(0.0, 1.0 - amount * amount))
        return out

    # -- public ------------------------------------------------------------------------------------------
    def embed_frames(self, frames: list[np.ndarray]) -> np.ndarray:
        if not frames:
            raise ValueError("embed_frames needs at least one frame")
        layouts, colours, edges, grays = [], [], [], []
        for img in frames:
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"expected RGB uint8 frames (h, w, 3), got {img.dtype} {img.shape}")
            if img.shape[:2] != (self.thumb, self.thumb):
                img = cv2.resize(img, (self.thumb, self.thumb), interpolation=cv2.INTER_AREA)
            gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            layouts.append(self._layout(gray))
            colours.append(self._colour(img))
            edges.append(self._edges(gray))
            grays.append(gray)
        blocks = [
            _l2(np.mean(layouts, axis=0)),
            _l2(np.mean(colours, axis=0)),
            _l2(np.mean(edges, axis=0)),
            self._change(grays),
        ]
        vec = np.concatenate([b * s for b, s in zip(blocks, self._block_scale)]).astype(np.float32)
        return _l2(vec)

    def embed_clip(self, path: str | os.PathLike, start: int = 0, end: int | None = None) -> np.ndarray:
        frames = _sample_clip_frames(path, start, end, self.n_frames, (self.thumb, self.thumb))
        return self.embed_frames(frames)


_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class TorchScriptEmbedder:
    """Adapter for your own image encoder exported to TorchScript (e.g. a CLIP / SigLIP vision tower).

    The model takes a float batch (N, 3, H, W), normalised with `mean`/`std` (CLIP's by default), and
    returns (N, D) features (a tuple/list output: its first element). Frames are resized on the short
    side and centre-cropped to `size`; frame features are L2-normalised, averaged, normalised again.
    Export e.g. with `torch.jit.trace(model.vision_model, example).save("encoder.pt")`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        size: int | tuple[int, int] = 224,
        mean: tuple[float, float, float] = _CLIP_MEAN,
        std: tuple[float, float, float] = _CLIP_STD,
        n_frames: int = 4,
        device: str = "cpu",
        name: str | None = None,
    ):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                "TorchScriptEmbedder needs PyTorch: `pip install torch` (CPU build: "
                "`pip install torch --index-url https://download.pytorch.org/whl/cpu`)"
            ) from e
        self._torch = torch
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TorchScript model not found: {path}")
        try:
            self._model = torch.jit.load(str(path), map_location=device).eval()
        except Exception as e:  # torch raises RuntimeError / ValueError variants for non-TorchScript files
            raise ValueError(f"{path}: not a loadable TorchScript model ({e})") from e
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))  # (w, h)
        self.n_frames = n_frames
        self.device = device
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.name = name or f"torchscript:{path.stem}"
        # One dummy forward tells the output width, so the catalog knows the vector size up front.
        probe_frame = np.zeros((self.size[1], self.size[0], 3), np.uint8)
        self.dim = int(self._features([probe_frame]).shape[1])
        log.info("loaded TorchScript embedder %s (dim %d) on %s", path, self.dim, device)

    def _prepare(self, img: np.ndarray) -> np.ndarray:
        w, h = self.size
        s = max(w / img.shape[1], h / img.shape[0])
        rw, rh = max(w, round(img.shape[1] * s)), max(h, round(img.shape[0] * s))
        img = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        x0, y0 = (rw - w) // 2, (rh - h) // 2
        return img[y0 : y0 + h, x0 : x0 + w]

    def _features(self, frames: list[np.ndarray]) -> Any:
        torch = self._torch
        batch = np.stack([self._prepare(f) for f in frames])  # (N, h, w, 3) uint8
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self._mean) / self._std
        with torch.inference_mode():
            out = self._model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            raise TypeError("the TorchScript model returned a dict; export a module that returns a tensor")
        return out.reshape(out.shape[0], -1).float()

    def embed_frames(self, frames: list[np.ndarray]) -> np.ndarray:
        if not frames:
            raise ValueError("embed_frames needs at least one frame")
        feats = self._torch.nn.functional.normalize(self._features(frames), dim=1)
        return _l2(feats.mean(dim=0).cpu().numpy())

    def embed_clip(self, path: str | os.PathLike, start: int = 0, end: int | None = None) -> np.ndarray:
        return self.embed_frames(_sample_clip_frames(path, start, end, self.n_frames, None))


def make_embedder(kind: str, **kwargs: Any) -> Embedder:
    """ "visual-signature" (offline default) or "torchscript" (kwargs: path, size, mean, std, device, ...)."""
    kinds = {
        "visual-signature": VisualSignatureEmbedder,
        VisualSignatureEmbedder.name: VisualSignatureEmbedder,
        "torchscript": TorchScriptEmbedder,
    }
    if kind not in kinds:
        raise ValueError(f"unknown embedder {kind!r}; choose one of: visual-signature, torchscript")
    return kinds[kind](**kwargs)
