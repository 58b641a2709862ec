"""Reconstruction metrics as TokenBench computes them (no scikit-image needed).

PSNR: one MSE over the whole video in [0, 255] (not a mean of per-frame PSNRs).
SSIM: per frame, data range 255, Gaussian window (sigma 1.5, 11x11, K1=0.01, K2=0.03, Wang et al. 2004),
averaged over the valid region and the colour channels, then over frames.
Inputs: uint8 (or float in [0, 255]) arrays [T, H, W, 3] (or [T, H, W] gray); use
`tensor_to_frames` to turn [-1, 1] tensors into uint8 frames first (TokenBench compares uint8 videos).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

DATA_RANGE = 255.0


def _as_video(a: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if a.ndim not in (3, 4):
        raise ValueError(f"{name}: expected frames [T, H, W(, C)], got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "f":
        if a.size and (np.nanmin(a) < -1e-3 or np.nanmax(a) > 255.001 or not np.isfinite(a).all()):
            raise ValueError(f"{name}: float frames must be finite and in [0, 255]")
        return a
    raise ValueError(f"{name}: expected uint8 or float frames in [0, 255], got {a.dtype}")


def _pair(ref, rec) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_video(ref, "reference"), _as_video(rec, "reconstruction")
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: reference {a.shape} vs reconstruction {b.shape}")
    if a.size == 0:
        raise ValueError("empty video")
    return a, b


def psnr(ref, rec) -> float:
    """PSNR in dB from a single MSE over every pixel of the video; inf for identical videos."""
    a, b = _pair(ref, rec)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(DATA_RANGE**2 / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The 2-D Gaussian window as two 1-D passes (valid region): the same numbers as one 11x11 conv (to
    1e-14), but float64 conv2d on CPU has no fast path and an 11x11 one unfolds 121 copies of the frame;
    two 1-D passes unfold 11 (one 640x360 frame pair: 3.05 s -> 0.43 s on the 2-core VM, busy)."""
    n = g.numel()
    return F.conv2d(F.conv2d(x, g.view(1, 1, n, 1)), g.view(1, 1, 1, n))


def ssim_frame(ref, rec) -> float:
    """SSIM of one frame [H, W(, C)] with a Gaussian window; mean over the valid map and channels."""
    a = torch.as_tensor(np.asarray(ref, dtype=np.float64))
    b = torch.as_tensor(np.asarray(rec, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() == 2:
        a, b = a[..., None], b[..., None]
    g = _gaussian_1d()
    if min(a.shape[0], a.shape[1]) < g.numel():
        raise ValueError(f"frame {tuple(a.shape[:2])} smaller than the 11x11 SSIM window")
    x = a.permute(2, 0, 1)[:, None]  # [C,1,H,W]: channels as a batch
    y = b.permute(2, 0, 1)[:, None]
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    sxx = _blur(x * x, g) - mu_x**2
    syy = _blur(y * y, g) - mu_y**2
    sxy = _blur(x * y, g) - mu_x * mu_y
    m = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(m.mean())


def ssim(ref, rec) -> float:
    """Mean over frames of per-frame SSIM."""
    a, b = _pair(ref, rec)
    return float(np.mean([ssim_frame(a[i], b[i]) for i in range(a.shape[0])]))


def video_metrics(ref, rec) -> dict[str, float]:
    return {"psnr": psnr(ref, rec), "ssim": ssim(ref, rec)}
