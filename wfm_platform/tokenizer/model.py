"""Causal video tokenizers: continuous (CV, 16-channel autoencoder) and discrete (DV, FSQ 64,000 codes).

Layout follows the public Cosmos tokenizer design, in our own code:
  x [B,3,1+T,H,W] in [-1,1] -> Haar patcher (/4 T,H,W) -> conv_in -> levels of factorized causal
  res blocks (+ stride-2 downsampling) -> mid (res, spatial attn, causal temporal attn, res) -> conv_out
  -> latent [B,16,1+T/t,H/s,W/s]   (DV: 1x1 conv to 6 channels -> FSQ -> indices [B,1+T/t,H/s,W/s])
and the mirror image to decode. Frame 0 is encoded on its own; every later latent frame covers t frames.

`TokenizerAPI` holds what any backend shares (checks, padding to 1+t*n frames and multiples of s,
cropping back); `VideoTokenizer` is our trainable model; jit.py's `JitTokenizer` wraps TorchScript files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np
import torch
from torch import nn

from .modules import (
    CausalTemporalAttention,
    ChannelNorm,
    Downsample,
    FactorizedConv,
    HaarPatcher,
    HaarUnpatcher,
    ResBlock,
    SpatialAttention,
    Upsample,
)
from .registry import TokenizerConfig

log = logging.getLogger(__name__)


class TokenizerInputError(ValueError):
    """Input a tokenizer cannot take; the message names the problem and what to do."""


# ---------------------------------------------------------------- FSQ
class FSQ(nn.Module):
    """Finite scalar quantization (Mentzer et al. 2023): each channel rounded to one of L_i levels.

    Codes are in [-1, 1]; index = mixed-radix number of the per-channel level, in [0, prod(levels)).
    """

    def __init__(self, levels: List[int]):
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.int64)
        self.register_buffer("levels", lv, persistent=False)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.int64), dim=0)
        self.register_buffer("basis", basis, persistent=False)
        self.dim = len(levels)
        self.codebook_size = int(np.prod(levels))

    def _view(self, v: torch.Tensor, ndim: int) -> torch.Tensor:
        # [D] -> [1, D, 1, 1, ...] to broadcast over [B, D, T, H, W]
        shape: List[int] = [1, self.dim] + [1] * (ndim - 2)
        return v.reshape(shape)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        eps = 1e-3
        lv = self._view(self.levels, z.dim()).to(z.dtype)
        half_l = (lv - 1) * (1 + eps) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """z [B,D,...] float -> (codes [B,D,...] in [-1,1] with straight-through gradient, indices [B,...])."""
        zb = self.bound(z.float())
        q = zb + (torch.round(zb) - zb).detach()  # straight-through estimator
        half = self._view(self.levels // 2, z.dim()).to(q.dtype)
        codes = q / half
        return codes, self.codes_to_indices(codes)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        half = self._view(self.levels // 2, codes.dim()).to(codes.dtype)
        digits = torch.round(codes * half + half).long()
        return (digits * self._view(self.basis, codes.dim())).sum(dim=1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        idx = indices.long().unsqueeze(1)
        digits = (idx // self._view(self.basis, idx.dim())) % self._view(self.levels, idx.dim())
        half = self._view(self.levels // 2, idx.dim())
        return (digits - half).float() / half.float()


# ---------------------------------------------------------------- encoder / decoder
def _res_blocks(cin: int, cout: int, n: int, attention: bool, temporal: bool) -> list[nn.Module]:
    """n residual blocks from cin to cout channels (the first one changes the width), each followed by
    attention (space, then causal time) when `attention`: one level of the Encoder or the Decoder."""
    blocks: list[nn.Module] = []
    for _ in range(n):
        blocks.append(ResBlock(cin, cout, temporal))
        cin = cout
        if attention:
            blocks.append(SpatialAttention(cout))
            if temporal:
                blocks.append(CausalTemporalAttention(cout))
    return blocks


def _mid_block(channels: int, temporal: bool) -> nn.Sequential:
    """The bottleneck both Encoder and Decoder have: res block, attention (space, then causal time), res block."""
    mid: list[nn.Module] = [ResBlock(channels, channels, temporal), SpatialAttention(channels)]
    if temporal:
        mid.append(CausalTemporalAttention(channels))
    mid.append(ResBlock(channels, channels, temporal))
    return nn.Sequential(*mid)


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        temporal = cfg.temporal_compression > 1
        self.patcher = HaarPatcher(cfg.patch_levels, temporal)
        cin = 3 * (8 if temporal else 4) ** cfg.patch_levels
        widths = [cfg.channels * m for m in cfg.channels_mult]
        n = len(widths)
        self.conv_in = FactorizedConv(cin, cfg.channels, temporal)
        stages = []
        prev = cfg.channels
        for i, w in enumerate(widths):
            blocks = _res_blocks(prev, w, cfg.num_res_blocks, cfg.attention_last_level and i == n - 1, temporal)
            prev = w  # num_res_blocks >= 1: the stage always ends at width w
            sd, td = i < cfg.extra_spatial_downs, i < cfg.extra_temporal_downs
            if sd or td:
                blocks.append(Downsample(w, sd, td))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.mid = _mid_block(prev, temporal)
        self.norm_out = ChannelNorm(prev)
        self.conv_out = FactorizedConv(prev, cfg.z_channels, temporal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self.patcher(x))
        for stage in self.stages:
            h = stage(h)
        h = self.mid(h)
        return self.conv_out(torch.nn.functional.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        temporal = cfg.temporal_compression > 1
        cout = 3 * (8 if temporal else 4) ** cfg.patch_levels
        widths = [cfg.channels * m for m in cfg.channels_mult]
        n = len(widths)
        prev = widths[-1]
        self.conv_in = FactorizedConv(cfg.z_channels, prev, temporal)
        self.mid = _mid_block(prev, temporal)
        stages = []
        for i in reversed(range(n)):
            w = widths[i]
            blocks = _res_blocks(prev, w, cfg.num_res_blocks + 1, cfg.attention_last_level and i == n - 1, temporal)
            prev = w
            if i > 0:
                su, tu = (i - 1) < cfg.extra_spatial_downs, (i - 1) < cfg.extra_temporal_downs
                if su or tu:
                    blocks.append(Upsample(w, su, tu))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.norm_out = ChannelNorm(prev)
        self.conv_out = FactorizedConv(prev, cout, temporal)
        self.unpatcher = HaarUnpatcher(cfg.patch_levels, temporal)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in self.stages:
            h = stage(h)
        return self.unpatcher(self.conv_out(torch.nn.functional.silu(self.norm_out(h))))


# ---------------------------------------------------------------- input checks and padding
def _reflect_index(n: int, total: int) -> torch.Tensor:
    """Indices 0..total-1 mirrored back into 0..n-1 (reflect without repeating the edge, any length)."""
    i = torch.arange(total)
    if n == 1:
        return torch.zeros(total, dtype=torch.long)
    period = 2 * (n - 1)
    j = i % period
    return torch.where(j < n, j, period - j)


def pad_video(x: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """Reflect-pad [B,C,T,H,W] at the end of T to 1+t*n frames and at the bottom/right of H, W to multiples of s."""
    _, _, T, H, W = x.shape
    T2 = T if t == 1 else 1 + t * -(-(T - 1) // t)
    H2, W2 = -(-H // s) * s, -(-W // s) * s
    if T2 != T:
        x = x.index_select(2, _reflect_index(T, T2).to(x.device))
    if H2 != H:
        x = x.index_select(3, _reflect_index(H, H2).to(x.device))
    if W2 != W:
        x = x.index_select(4, _reflect_index(W, W2).to(x.device))
    return x


def check_video(x: object) -> torch.Tensor:
    """Raise TokenizerInputError unless x is a float RGB video tensor [B,3,T,H,W] in [-1,1]."""
    if isinstance(x, np.ndarray):
        raise TokenizerInputError("got a numpy array; convert frames with "
                                  "wfm_platform.tokenizer.frames_to_tensor(frames) first")
    if not isinstance(x, torch.Tensor):
        raise TokenizerInputError(f"expected a torch.Tensor [B,3,T,H,W], got {type(x).__name__}")
    if not x.is_floating_point():
        hint = " (10-bit video?)" if x.dtype in (torch.uint16, torch.int16, torch.int32) else ""
        raise TokenizerInputError(
            f"expected float values in [-1, 1], got dtype {x.dtype}{hint}; convert with "
            "frames_to_tensor(frames, bit_depth=...) which maps 0..2^bits-1 to [-1, 1]")
    if x.dim() != 5:
        raise TokenizerInputError(f"expected a 5-D tensor [B, 3, T, H, W], got shape {tuple(x.shape)} "
                                  f"({x.dim()}-D); add the batch axis with x[None] or move channels to dim 1")
    b, c, t, h, w = x.shape
    if c != 3:
        what = "grayscale" if c == 1 else f"{c}-channel"
        raise TokenizerInputError(f"expected 3 RGB channels at dim 1, got {what} input {tuple(x.shape)}; "
                                  "repeat a gray channel with x.expand(-1, 3, -1, -1, -1)")
    if b == 0 or t == 0 or h == 0 or w == 0:
        raise TokenizerInputError(f"too few frames or pixels: shape {tuple(x.shape)} (need B, T, H, W >= 1)")
    if not bool(torch.isfinite(x).all()):
        raise TokenizerInputError("input contains NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.001 or hi > 1.001:
        raise TokenizerInputError(f"values must be in [-1, 1], got [{lo:.3g}, {hi:.3g}]; "
                                  "scale 8-bit frames with x / 127.5 - 1 (frames_to_tensor does it)")
    return x


def frames_to_tensor(frames: np.ndarray, bit_depth: int | None = None) -> torch.Tensor:
    """[T,H,W,3] uint8/uint16 frames -> float tensor [1,3,T,H,W] in [-1,1].

    bit_depth: 8 for uint8 (default); for uint16 it must be given (10, 12 or 16), since 10-bit frames
    stored in uint16 would otherwise come out four times too dark.
    """
    a = np.asarray(frames)
    if a.ndim == 3 and a.shape[-1] == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise TokenizerInputError(f"expected frames [T, H, W, 3] (RGB), got shape {a.shape}; "
                                  "grayscale: np.repeat(gray[..., None], 3, axis=-1)")
    if a.dtype == np.uint8:
        bits = bit_depth or 8
        if bits != 8:
            raise TokenizerInputError(f"uint8 frames cannot have bit_depth={bits}")
    elif a.dtype == np.uint16:
        if bit_depth is None:
            raise TokenizerInputError("uint16 frames: pass bit_depth (10, 12 or 16) so values are scaled right")
        bits = bit_depth
        if int(a.max(initial=0)) >= 2**bits:
            raise TokenizerInputError(f"values up to {int(a.max())} do not fit bit_depth={bits}")
    else:
        raise TokenizerInputError(f"frames must be uint8 or uint16, got {a.dtype}")
    peak = float(2**bits - 1)
    t = torch.from_numpy(a.astype(np.float32)).permute(3, 0, 1, 2)[None]
    return t / (peak / 2) - 1


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """[B,3,T,H,W] or [3,T,H,W] in [-1,1] -> uint8 [(B,)T,H,W,3] (clamped and rounded, as TokenBench does)."""
    x = x.detach().float().clamp(-1, 1)
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    return u8.movedim(-4, -1).cpu().numpy()


# ---------------------------------------------------------------- the public API
@dataclass
class TokenizerOutput:
    reconstruction: torch.Tensor  # [B,3,T,H,W], cropped to the input's size
    latent: torch.Tensor  # CV: latents [B,16,...]; DV: FSQ codes [B,6,...] (with straight-through gradient)
    indices: torch.Tensor | None = None  # DV only: [B,T',H',W'] int64
    aux: dict = field(default_factory=dict)


class TokenizerAPI(nn.Module):
    """What every backend shares: checks, padding, cropping. Subclasses implement _encode/_decode on
    padded tensors (float latent for CV, int64 indices for DV)."""

    kind: str = "cv"
    temporal_compression: int = 8
    spatial_compression: int = 8
    latent_channels: int = 16
    codebook_size: int = 0

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # tiling blends a float tensor across tiles, then turns it into the output (DV: FSQ indices)
    def _encode_blendable(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode(x)

    def _from_blendable(self, z: torch.Tensor) -> torch.Tensor:
        return z

    @property
    def is_image(self) -> bool:
        return self.temporal_compression == 1

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        t, s = self.temporal_compression, self.spatial_compression
        lt = frames if t == 1 else 1 + -(-(frames - 1) // t)
        return lt, -(-height // s), -(-width // s)

    def prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Checked, padded 5-D input; image tokenizers also take [B,3,H,W] (returned flag: squeeze back)."""
        squeeze = False
        if self.is_image and isinstance(x, torch.Tensor) and x.dim() == 4:
            x, squeeze = x.unsqueeze(2), True
        x = check_video(x)
        return pad_video(x, self.temporal_compression, self.spatial_compression), squeeze

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x float [B,3,1+T,H,W] in [-1,1] -> CV: [B,16,1+T/t,H/s,W/s]; DV: int64 [B,1+T/t,H/s,W/s].

        Frame counts other than 1+t*n and sizes not divisible by s are reflect-padded (the latent then
        covers the padded video; `decode(z, num_frames=, size=)` crops back).
        """
        xp, squeeze = self.prepare(x)
        z = self._encode(xp)
        return z.squeeze(-3) if squeeze else z

    def check_latent(self, z: object) -> torch.Tensor:
        if not isinstance(z, torch.Tensor):
            raise TokenizerInputError(f"expected a torch.Tensor, got {type(z).__name__}")
        want_dim = 4 if self.kind == "dv" else 5
        if self.kind == "dv":
            if z.is_floating_point() or z.is_complex() or z.dtype == torch.bool:
                raise TokenizerInputError(f"DV decode takes integer indices, got dtype {z.dtype}; "
                                          "for FSQ codes use quantizer.codes_to_indices first")
            if z.dim() != want_dim:
                raise TokenizerInputError(f"expected indices [B, T', H', W'], got shape {tuple(z.shape)}")
            if z.numel() and (int(z.min()) < 0 or int(z.max()) >= self.codebook_size):
                raise TokenizerInputError(f"indices out of range: [{int(z.min())}, {int(z.max())}] "
                                          f"not within [0, {self.codebook_size})")
        else:
            if not z.is_floating_point():
                raise TokenizerInputError(f"CV decode takes float latents, got dtype {z.dtype}")
            if z.dim() != want_dim or z.shape[1] != self.latent_channels:
                raise TokenizerInputError(f"expected latents [B, {self.latent_channels}, T', H', W'], "
                                          f"got shape {tuple(z.shape)}")
            if not bool(torch.isfinite(z).all()):
                raise TokenizerInputError("latents contain NaN or Inf (diverged training or a bad cast?)")
        if z.numel() == 0:
            raise TokenizerInputError(f"empty latent {tuple(z.shape)}")
        return z

    def decode(self, z: torch.Tensor, num_frames: int | None = None,
               size: tuple[int, int] | None = None) -> torch.Tensor:
        """CV latents [B,16,T',h,w] or DV indices [B,T',h,w] -> video [B,3,1+(T'-1)*t,h*s,w*s].

        num_frames / size=(H, W): crop to the original input's frame count and size. Not clamped.
        """
        squeeze = False
        if self.is_image and isinstance(z, torch.Tensor) and z.dim() == (3 if self.kind == "dv" else 4):
            z, squeeze = z.unsqueeze(-3), True
        z = self.check_latent(z)
        x = self._decode(z)
        if num_frames is not None:
            x = x[:, :, :num_frames]
        if size is not None:
            x = x[..., : size[0], : size[1]]
        return x.squeeze(2) if squeeze else x

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """encode + decode, cropped back to x's frames and size."""
        z = self.encode(x)
        squeeze = self.is_image and x.dim() == 4
        T = 1 if squeeze else x.shape[2]
        return self.decode(z, num_frames=None if squeeze else T, size=(x.shape[-2], x.shape[-1]))


class VideoTokenizer(TokenizerAPI):
    """Our trainable causal tokenizer. `forward(x)` returns a TokenizerOutput for training."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.config = cfg
        self.kind = cfg.kind
        self.temporal_compression = cfg.temporal_compression
        self.spatial_compression = cfg.spatial_compression
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.kind == "dv":
            d = len(cfg.fsq_levels)
            self.quant_conv = nn.Conv3d(cfg.z_channels, d, 1)
            self.post_quant_conv = nn.Conv3d(d, cfg.z_channels, 1)
            self.quantizer = FSQ(list(cfg.fsq_levels))
            self.codebook_size = self.quantizer.codebook_size
            self.latent_channels = d
        else:
            self.latent_channels = cfg.z_channels

    # raw paths (padded input, no checks): what training and TorchScript export use
    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """CV latents, or the DV pre-quantization z [B,6,...]."""
        z = self.encoder(x)
        return self.quant_conv(z) if self.kind == "dv" else z

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """CV latents or DV codes [B,6,...] in [-1,1] -> video."""
        if self.kind == "dv":
            z = self.post_quant_conv(z.to(self.post_quant_conv.weight.dtype))
        return self.decoder(z)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode_raw(x)
        if self.kind == "dv":
            return self.quantizer(z)[1]
        return z

    def _encode_blendable(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_raw(x)

    def _from_blendable(self, z: torch.Tensor) -> torch.Tensor:
        return self.quantizer(z)[1] if self.kind == "dv" else z

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "dv":
            return self.decode_raw(self.quantizer.indices_to_codes(z))
        return self.decode_raw(z)

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        """Reconstruction (cropped to x) plus what losses need. aux: for DV the FSQ rounding error
        (`quant_error`, mean |bounded z - codes| in level units) and `codebook_usage` (unique/size)."""
        xp, squeeze = self.prepare(x)
        T, H, W = x.shape[-3] if not squeeze else 1, x.shape[-2], x.shape[-1]
        z = self.encode_raw(xp)
        aux: dict = {}
        indices = None
        if self.kind == "dv":
            codes, indices = self.quantizer(z)
            with torch.no_grad():
                bounded = self.quantizer.bound(z.float())
                aux["quant_error"] = (bounded - torch.round(bounded)).abs().mean()
                aux["codebook_usage"] = torch.unique(indices).numel() / self.codebook_size
            latent = codes
        else:
            latent = z
        rec = self.decode_raw(latent)[:, :, :T, :H, :W]
        if squeeze:
            rec = rec.squeeze(2)
        return TokenizerOutput(reconstruction=rec, latent=latent, indices=indices, aux=aux)
