"""Building blocks of the causal video tokenizer (after the public design of NVIDIA's Cosmos tokenizer).

Tensors are [B, C, T, H, W]. Every block is causal in time: output frame i depends on input frames <= i
only. Norms are per position over channels (not GroupNorm over T or H, W), so neither future frames nor
the rest of a spatial tile leak in: causality is exact and tiling only differs by receptive-field edges
and spatial attention. Everything here is TorchScript-scriptable (see jit.py).
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn


def _haar_split(x: torch.Tensor, dim: int) -> torch.Tensor:
    """One Haar step along `dim`: (even+odd)/2 and (even-odd)/2, stacked on the channel axis."""
    shape = x.shape
    new: List[int] = list(shape[:dim]) + [shape[dim] // 2, 2] + list(shape[dim + 1 :])
    y = x.reshape(new)
    a = y.select(dim + 1, 0)
    b = y.select(dim + 1, 1)
    return torch.cat([(a + b) * 0.5, (a - b) * 0.5], dim=1)


def _haar_merge(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Exact inverse of _haar_split."""
    c = x.shape[1] // 2
    lo = x[:, :c]
    hi = x[:, c:]
    y = torch.stack([lo + hi, lo - hi], dim=dim + 1)
    shape = lo.shape
    new: List[int] = list(shape[:dim]) + [shape[dim] * 2] + list(shape[dim + 1 :])
    return y.reshape(new)


class HaarPatcher(nn.Module):
    """`levels`-level Haar wavelet packet: /2^levels in H, W (and T), x8^levels (x4^levels) channels.

    Frame 0 is repeated 2^levels times first (as Cosmos does), so 1+T frames give 1+T/2^levels frames
    and patched frame 0 depends on input frame 0 alone.
    """

    def __init__(self, levels: int = 2, temporal: bool = True):
        super().__init__()
        self.levels = levels
        self.temporal = temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal:
            p = 1 << self.levels
            x = torch.cat([x[:, :, :1].expand(-1, -1, p, -1, -1), x[:, :, 1:]], dim=2)
        for _ in range(self.levels):
            if self.temporal:
                x = _haar_split(x, 2)
            x = _haar_split(x, 3)
            x = _haar_split(x, 4)
        return x


class HaarUnpatcher(nn.Module):
    """Inverse of HaarPatcher (drops the 2^levels - 1 repeated copies of frame 0)."""

    def __init__(self, levels: int = 2, temporal: bool = True):
        super().__init__()
        self.levels = levels
        self.temporal = temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.levels):
            x = _haar_merge(x, 4)
            x = _haar_merge(x, 3)
            if self.temporal:
                x = _haar_merge(x, 2)
        if self.temporal:
            x = x[:, :, (1 << self.levels) - 1 :]
        return x


class ChannelNorm(nn.Module):
    """LayerNorm over channels at every (t, h, w): local, so causal and tiling-friendly."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class CausalConv3d(nn.Module):
    """Conv3d padded in time on the past only (with copies of frame 0), 'same' zero padding in space."""

    def __init__(self, cin: int, cout: int, kernel: List[int], stride: List[int] = [1, 1, 1]):  # noqa: B006
        super().__init__()
        kt, kh, kw = kernel
        self.time_pad = kt - 1
        self.conv = nn.Conv3d(cin, cout, (kt, kh, kw), stride=(stride[0], stride[1], stride[2]),
                              padding=(0, kh // 2, kw // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad > 0:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        return self.conv(x)


class FactorizedConv(nn.Module):
    """A 1x3x3 spatial conv, then a 3x1x1 causal temporal conv (none for image tokenizers)."""

    def __init__(self, cin: int, cout: int, temporal: bool = True):
        super().__init__()
        self.spatial = CausalConv3d(cin, cout, [1, 3, 3])
        self.temporal = CausalConv3d(cout, cout, [3, 1, 1]) if temporal else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.spatial(x))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temporal: bool = True):
        super().__init__()
        self.norm1 = ChannelNorm(cin)
        self.conv1 = FactorizedConv(cin, cout, temporal)
        self.norm2 = ChannelNorm(cout)
        self.conv2 = FactorizedConv(cout, cout, temporal)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class _SingleHeadAttention(nn.Module):
    """Norm, fused q/k/v and output projection; subclasses choose the axis attended over."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = ChannelNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)


class SpatialAttention(_SingleHeadAttention):
    """Single-head self-attention over the H*W positions of each frame separately."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x).permute(0, 2, 3, 4, 1).reshape(b * t, 1, h * w, c)
        q, k, v = self.qkv(y).chunk(3, dim=-1)
        o = self.proj(F.scaled_dot_product_attention(q, k, v))
        return x + o.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)


class CausalTemporalAttention(_SingleHeadAttention):
    """Single-head self-attention over time at each spatial position, masked to the past."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, 1, t, c)
        q, k, v = self.qkv(y).chunk(3, dim=-1)
        o = self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        return x + o.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2)


class Downsample(nn.Module):
    """/2 in space (stride-2 conv) and/or /2 in time (causal stride-2 conv: 1+T -> 1+T/2)."""

    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.spatial = spatial
        self.temporal = temporal
        self.sconv = nn.Conv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2)) if spatial else nn.Identity()
        # kernel 3, stride 2, 2 frames of past padding: output j sees input frames 2j-2..2j
        self.tconv = CausalConv3d(channels, channels, [3, 1, 1], [2, 1, 1]) if temporal else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial:
            x = self.sconv(F.pad(x, (0, 1, 0, 1, 0, 0)))
        if self.temporal:
            x = self.tconv(x)
        return x


class Upsample(nn.Module):
    """x2 in space (nearest + conv) and/or x2 in time (repeat, drop the first copy: 1+T -> 1+2T)."""

    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.spatial = spatial
        self.temporal = temporal
        self.sconv = CausalConv3d(channels, channels, [1, 3, 3]) if spatial else nn.Identity()
        self.tconv = CausalConv3d(channels, channels, [3, 1, 1]) if temporal else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial:
            x = self.sconv(x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4))
        if self.temporal:
            x = self.tconv(x.repeat_interleave(2, dim=2)[:, :, 1:])
        return x
