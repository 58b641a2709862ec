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


def gaussian_1d(size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=dtype, device=device) - size // 2) ** 2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, data_range: float) -> torch.Tensor:
    """SSIM map of image batches [N, C, H, W] with the separable Gaussian window g (1-D), valid region, per
    channel. The one SSIM body: ssim_frame (float64, range 255) and the training loss (float32, range 2).
    Two 1-D passes give the numbers of one 2-D conv (to 1e-14), but float64 conv2d on CPU has no fast path
    and an 11x11 one unfolds 121 copies of the frame where two 1-D ones unfold 11 (one 640x360 frame pair:
    3.05 s -> 0.43 s on the 2-core VM, busy)."""
    c, n = x.shape[1], g.numel()
    kx = g.view(1, 1, 1, n).expand(c, 1, 1, n)
    ky = g.view(1, 1, n, 1).expand(c, 1, n, 1)

    def blur(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(v, kx, groups=c), ky, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def ssim_frame(ref, rec) -> float:
    """SSIM of one frame [H, W(, C)] with a Gaussian window; mean over the valid map and channels."""
    a = torch.as_tensor(np.asarray(ref, dtype=np.float64))
    b = torch.as_tensor(np.asarray(rec, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() == 2:
        a, b = a[..., None], b[..., None]
    g = gaussian_1d()
    if min(a.shape[0], a.shape[1]) < g.numel():
        raise ValueError(f"frame {tuple(a.shape[:2])} smaller than the 11x11 SSIM window")
    return float(ssim_map(a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None], g, DATA_RANGE).mean())


def ssim(ref, rec) -> float:
    """Mean over frames of per-frame SSIM."""
    a, b = _pair(ref, rec)
    return float(np.mean([ssim_frame(a[i], b[i]) for i in range(a.shape[0])]))


def video_metrics(ref, rec) -> dict[str, float]:
    return {"psnr": psnr(ref, rec), "ssim": ssim(ref, rec)}
