"""Bounded-memory encode/decode for any length and resolution: causal temporal chunks x overlapping
spatial tiles, blended with linear ramps across the overlaps.

Temporal chunks: latent frames [a, b) are computed from the input frames they cover plus `context`
latent frames of past (the clip is restarted at the last frame before the context, which becomes the
chunk's "frame 0"). The first chunk is exact (causality); later chunks are exact up to what the
dropped far past would have contributed through temporal attention.

Spatial tiles: `tile` x `tile` pixels, neighbours overlap by `overlap` pixels; in the overlap each
tile's weight ramps linearly to ~0 towards its border, so seams vanish. Works with any TokenizerAPI
(our VideoTokenizer or a TorchScript JitTokenizer). Peak activation memory depends on the tile and
chunk size only, never on H, W or T.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from .model import TokenizerAPI

log = logging.getLogger(__name__)


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` covering [0, n) with at least `overlap` overlap; the last one
    is aligned to the end."""
    if n <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride))
    starts.append(n - tile)
    return starts


def _ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool, device) -> torch.Tensor:
    w = torch.ones(length, device=device)
    if overlap > 0:
        r = torch.arange(1, overlap + 1, device=device, dtype=torch.float32) / (overlap + 1)
        if ramp_start:
            w[:overlap] = torch.minimum(w[:overlap], r)
        if ramp_end:
            w[length - overlap :] = torch.minimum(w[length - overlap :], r.flip(0))
    return w


def _blend_2d(fn, x: torch.Tensor, tile: int, overlap: int, scale_in: int, scale_out: int,
              ) -> torch.Tensor:
    """Apply fn to overlapping spatial tiles of x [..., H, W] (sizes in x's units: tile, overlap) and
    blend; fn maps a tile of h x w to (h*scale_out/scale_in) x (w*...)."""
    H, W = x.shape[-2:]
    if H <= tile and W <= tile:
        return fn(x)
    ys, xs = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    out = None
    weight = None
    f = scale_out / scale_in
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            th, tw = min(tile, H), min(tile, W)
            piece = fn(x[..., y0 : y0 + th, x0 : x0 + tw]).float()
            oh, ow = piece.shape[-2:]
            oy, ox, ov = int(y0 * f), int(x0 * f), int(overlap * f)
            # ramp only on sides that touch another tile (and by the real overlap there)
            wy = _ramp(oh, min(ov, oh), i > 0, i < len(ys) - 1, piece.device)
            wx = _ramp(ow, min(ov, ow), j > 0, j < len(xs) - 1, piece.device)
            w2 = wy[:, None] * wx[None, :]
            if out is None:
                out = piece.new_zeros((*piece.shape[:-2], int(H * f), int(W * f)))
                weight = piece.new_zeros((int(H * f), int(W * f)))
            out[..., oy : oy + oh, ox : ox + ow] += piece * w2
            weight[oy : oy + oh, ox : ox + ow] += w2
            del piece
    return out / weight


def _params(tok: TokenizerAPI, tile, overlap, chunk, context) -> tuple[int, int, int, int]:
    cfg = getattr(tok, "config", None)
    s = tok.spatial_compression
    tile = tile or (cfg.tile_size if cfg else 512)
    overlap = overlap if overlap is not None else (cfg.tile_overlap if cfg else 64)
    chunk = chunk or (cfg.chunk_latents if cfg else 4)
    context = context if context is not None else (cfg.chunk_context if cfg else 2)
    if tile % s or overlap % s or not 0 <= overlap < tile:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {s} with 0 <= overlap < tile")
    return tile, overlap, chunk, context


def _chunks(n_latent: int, chunk: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk, n_latent)) for a in range(0, n_latent, chunk)]


@torch.no_grad()
def encode_tiled(tok: TokenizerAPI, x: torch.Tensor, tile: int | None = None, overlap: int | None = None,
                 chunk: int | None = None, context: int | None = None) -> torch.Tensor:
    """Same result as tok.encode(x) (up to blending at seams), in bounded memory.

    tile/overlap: pixels; chunk: latent frames per temporal chunk; context: latent frames of past
    re-encoded before each chunk. Defaults come from the tokenizer's config.
    """
    tile, overlap, chunk, context = _params(tok, tile, overlap, chunk, context)
    xp, squeeze = tok.prepare(x)
    t, s = tok.temporal_compression, tok.spatial_compression
    T = xp.shape[2]
    n_lat = T if t == 1 else 1 + (T - 1) // t
    outs = []
    for a, b in _chunks(n_lat, chunk):
        if t == 1:
            f0, f1, drop = a, b, 0
        elif a - context <= 0:
            f0, f1, drop = 0, 1 + t * (b - 1), a
        else:
            f0, f1, drop = t * (a - context - 1), 1 + t * (b - 1), 1 + context
        clip = xp[:, :, f0:f1]
        z = _blend_2d(tok._encode_blendable, clip, tile, overlap, s, 1)
        outs.append(z[:, :, drop:])
        log.debug("encoded latent frames %d..%d from input frames %d..%d", a, b - 1, f0, f1 - 1)
    z = tok._from_blendable(torch.cat(outs, dim=2))
    return z.squeeze(-3) if squeeze else z


@torch.no_grad()
def iter_decode_tiled(tok: TokenizerAPI, z: torch.Tensor, tile: int | None = None,
                      overlap: int | None = None, chunk: int | None = None, context: int | None = None,
                      ) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (first_frame_index, frames [B,3,n,H,W]) chunk by chunk: stream any length to disk."""
    tile, overlap, chunk, context = _params(tok, tile, overlap, chunk, context)
    if tok.is_image and z.dim() == (3 if tok.kind == "dv" else 4):
        z = z.unsqueeze(-3)
    z = tok.check_latent(z)
    t, s = tok.temporal_compression, tok.spatial_compression
    tdim = 1 if tok.kind == "dv" else 2
    n_lat = z.shape[tdim]
    for a, b in _chunks(n_lat, chunk):
        if t == 1:
            l0, drop, first = a, 0, a
        elif a - context <= 0:
            l0, drop = 0, (0 if a == 0 else 1 + t * (a - 1))
            first = drop
        else:
            l0, drop, first = a - context - 1, 1 + t * context, 1 + t * (a - 1)
        piece = z.narrow(tdim, l0, b - l0)
        video = _blend_2d(tok._decode, piece, tile // s, overlap // s, 1, s)
        yield first, video[:, :, drop:]


@torch.no_grad()
def decode_tiled(tok: TokenizerAPI, z: torch.Tensor, tile: int | None = None, overlap: int | None = None,
                 chunk: int | None = None, context: int | None = None, num_frames: int | None = None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
    """Same result as tok.decode(z) (up to blending at seams), in bounded activation memory."""
    squeeze = tok.is_image and z.dim() == (3 if tok.kind == "dv" else 4)
    parts = [v for _, v in iter_decode_tiled(tok, z, tile, overlap, chunk, context)]
    x = torch.cat(parts, dim=2)
    if num_frames is not None:
        x = x[:, :, :num_frames]
    if size is not None:
        x = x[..., : size[0], : size[1]]
    return x.squeeze(2) if squeeze else x
