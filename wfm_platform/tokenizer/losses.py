"""Training losses for the video tokenizer: L1 + SSIM + optional optical-flow consistency + pluggable
perceptual losses.

All losses take videos [B,3,T,H,W] in [-1,1] (reconstruction first, target second) and return a
scalar tensor. `TokenizerLoss` combines them with weights and returns (total, parts) so each part can
be logged.

Flow consistency (cheap, no flow network): the *input's* backward flow between consecutive frames
(OpenCV DIS, computed in data.py) warps frame t onto frame t+1; we ask the reconstruction to have the
same temporal residual as the input: |(rec[t+1] - warp(rec[t])) - (x[t+1] - warp(x[t]))|. Comparing
residuals rather than rec[t+1] to warp(rec[t]) means occlusions and flow errors, present in both terms,
do not push the model towards blurry or frozen output.
"""

from __future__ import annotations

import importlib
import logging
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from .metrics import gaussian_1d, ssim_map

log = logging.getLogger(__name__)


@runtime_checkable
class PerceptualLoss(Protocol):
    """A perceptual loss plugged in by the user (e.g. LPIPS with their own weights).

    Called with (reconstruction, target), both [B,3,T,H,W] in [-1,1]; returns a scalar tensor that is
    differentiable in the reconstruction. No weights ship here, so none is enabled by default.
    """

    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


class PerceptualSpec(BaseModel):
    model_config = {"extra": "forbid"}

    target: str = Field(..., description="'package.module:ClassOrFactory', called with **kwargs")
    weight: float = Field(0.1, ge=0)
    kwargs: dict = Field(default_factory=dict)


class LossConfig(BaseModel):
    model_config = {"extra": "forbid"}

    l1: float = Field(1.0, ge=0)
    ssim: float = Field(0.2, ge=0, description="weight of (1 - SSIM)")
    flow: float = Field(0.0, ge=0, description="optical-flow consistency weight (0: flow is not computed)")
    perceptual: list[PerceptualSpec] = Field(default_factory=list)


def load_perceptual(spec: PerceptualSpec) -> PerceptualLoss:
    """Import and build a perceptual loss from 'module:attr'; clear errors when it cannot be found."""
    mod_name, _, attr = spec.target.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"perceptual loss target {spec.target!r} must look like 'package.module:Class'")
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load perceptual loss {spec.target!r}: {e}") from e
    loss = obj(**spec.kwargs)
    if not callable(loss):
        raise TypeError(f"perceptual loss {spec.target!r} built a non-callable {type(loss).__name__}")
    return loss


def _frames(x: torch.Tensor) -> torch.Tensor:
    """[B,C,T,H,W] -> [B*T,C,H,W] (image losses see every frame)."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def l1_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (rec.float() - x.float()).abs().mean()


def ssim_map_mean(rec: torch.Tensor, x: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Differentiable mean SSIM over frames and channels (Gaussian window, data range 2 for [-1,1]).

    Same definition as metrics.ssim (TokenBench), in float32 torch; the window shrinks (odd) for
    frames smaller than 11 pixels so tiny training crops still work.
    """
    a, b = _frames(rec.float()), _frames(x.float())
    h, w = a.shape[-2:]
    win = min(window, h - (1 - h % 2), w - (1 - w % 2))
    if win < 3:
        raise ValueError(f"frames {h}x{w} are too small for SSIM (need at least 3x3)")
    return ssim_map(a, b, gaussian_1d(win, sigma, a.dtype, a.device), data_range=2.0).mean()


def ssim_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return 1.0 - ssim_map_mean(rec, x)


def warp(frames: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp frames [N,C,H,W] with flow [N,2,H,W] (pixels, (dx, dy)): out(p) = frames(p + flow(p))."""
    _, _, h, w = frames.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=frames.device, dtype=flow.dtype),
                            torch.arange(w, device=frames.device, dtype=flow.dtype), indexing="ij")
    gx = (xs + flow[:, 0]) / max(w - 1, 1) * 2 - 1
    gy = (ys + flow[:, 1]) / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(frames, grid.to(frames.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)


def flow_consistency_loss(rec: torch.Tensor, x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """rec, x [B,3,T,H,W]; flow [B,T-1,2,H,W]: backward flow of the input from frame t+1 to frame t."""
    b, c, t, h, w = x.shape
    if t < 2:
        return rec.new_zeros(())
    if flow.shape != (b, t - 1, 2, h, w):
        raise ValueError(f"flow must be [B, T-1, 2, H, W] = {(b, t - 1, 2, h, w)}, got {tuple(flow.shape)}")
    fl = flow.reshape(b * (t - 1), 2, h, w).float()

    def residual(v: torch.Tensor) -> torch.Tensor:
        v = v.float()
        prev = v[:, :, :-1].transpose(1, 2).reshape(b * (t - 1), c, h, w)
        nxt = v[:, :, 1:].transpose(1, 2).reshape(b * (t - 1), c, h, w)
        return nxt - warp(prev, fl)

    return (residual(rec) - residual(x).detach()).abs().mean()


class TokenizerLoss(torch.nn.Module):
    """Weighted sum of the configured losses. forward(out, x, flow=None) -> (total, {name: float})."""

    def __init__(self, cfg: LossConfig | None = None, perceptual: list[tuple[float, PerceptualLoss]] | None = None):
        super().__init__()
        self.cfg = cfg or LossConfig()
        self.perceptual = list(perceptual) if perceptual is not None else [
            (s.weight, load_perceptual(s)) for s in self.cfg.perceptual]
        for m in (p for _, p in self.perceptual if isinstance(p, torch.nn.Module)):
            m.requires_grad_(False)  # a frozen feature network; only the tokenizer trains

    @property
    def needs_flow(self) -> bool:
        return self.cfg.flow > 0

    def forward(self, rec: torch.Tensor, x: torch.Tensor, flow: torch.Tensor | None = None,
                aux: dict | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        parts: dict[str, torch.Tensor] = {}
        if self.cfg.l1 > 0:
            parts["l1"] = l1_loss(rec, x) * self.cfg.l1
        if self.cfg.ssim > 0:
            parts["ssim"] = ssim_loss(rec, x) * self.cfg.ssim
        if self.cfg.flow > 0:
            if flow is None:
                raise ValueError("flow loss is enabled (weight > 0) but the batch has no flow; "
                                 "build the data stream with flow=True")
            parts["flow"] = flow_consistency_loss(rec, x, flow) * self.cfg.flow
        for i, (w, fn) in enumerate(self.perceptual):
            if w > 0:
                parts[f"perceptual{i}"] = fn(rec, x).float() * w
        if not parts:
            raise ValueError("every loss weight is 0: nothing to train")
        total = torch.stack(list(parts.values())).sum()
        logged = {k: float(v.detach()) for k, v in parts.items()}
        for k, v in (aux or {}).items():  # DV: quantization error / codebook usage, for the log
            logged[k] = float(v)
        return total, logged
