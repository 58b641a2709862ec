"""TorchScript checkpoints: `encoder.jit` / `decoder.jit`, the way Cosmos publishes its tokenizers.

export_torchscript(tok, dir) writes our model in that format (+ tokenizer.json with what the files
mean); load_jit_tokenizer(dir) loads either ours or external ones behind the same API as VideoTokenizer
(checks, padding, tiling). Conventions followed (Cosmos): encoder(x) returns a tensor or a tuple whose
first item is the latent (CV) or the indices (DV; second item the FSQ codes); decoder takes the latent
(CV) or the indices (DV).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

from .model import FSQ, TokenizerAPI, VideoTokenizer

log = logging.getLogger(__name__)

META = "tokenizer.json"
DEFAULT_FSQ = [8, 8, 8, 5, 5, 5]


class _CVEncoder(nn.Module):
    def __init__(self, tok: VideoTokenizer):
        super().__init__()
        self.encoder = tok.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class _DVEncoder(nn.Module):
    def __init__(self, tok: VideoTokenizer):
        super().__init__()
        self.encoder = tok.encoder
        self.quant_conv = tok.quant_conv
        self.quantizer = tok.quantizer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes, indices = self.quantizer(self.quant_conv(self.encoder(x)))
        return indices, codes


class _CVDecoder(nn.Module):
    def __init__(self, tok: VideoTokenizer):
        super().__init__()
        self.decoder = tok.decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class _DVDecoder(nn.Module):
    def __init__(self, tok: VideoTokenizer):
        super().__init__()
        self.decoder = tok.decoder
        self.post_quant_conv = tok.post_quant_conv
        self.quantizer = tok.quantizer

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        codes = self.quantizer.indices_to_codes(indices)
        return self.decoder(self.post_quant_conv(codes.to(self.post_quant_conv.weight.dtype)))


def export_torchscript(tok: VideoTokenizer, out_dir: str | os.PathLike) -> Path:
    """Write encoder.jit, decoder.jit and tokenizer.json (scripted: any T, H, W keep working)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = tok.training
    tok.eval()
    try:
        dv = tok.kind == "dv"
        enc = torch.jit.script(_DVEncoder(tok) if dv else _CVEncoder(tok))
        dec = torch.jit.script(_DVDecoder(tok) if dv else _CVDecoder(tok))
        for m, name in ((enc, "encoder.jit"), (dec, "decoder.jit")):
            tmp = out / f".{name}.tmp"
            m.save(str(tmp))
            os.replace(tmp, out / name)  # atomic: never a half-written checkpoint
    finally:
        tok.train(was_training)
    meta = {
        "name": tok.config.name, "preset": tok.config.preset, "kind": tok.kind,
        "temporal_compression": tok.temporal_compression, "spatial_compression": tok.spatial_compression,
        "latent_channels": tok.latent_channels, "fsq_levels": list(tok.config.fsq_levels) if dv else None,
        "config": tok.config.model_dump(),
    }
    (out / META).write_text(json.dumps(meta, indent=2))
    log.info("exported %s to %s", tok.config.name, out)
    return out


class JitTokenizer(TokenizerAPI):
    """TorchScript encoder/decoder files behind the TokenizerAPI (encode, decode, tiling)."""

    def __init__(self, encoder: torch.jit.ScriptModule | None, decoder: torch.jit.ScriptModule | None, *,
                 kind: str, temporal_compression: int, spatial_compression: int, latent_channels: int = 16,
                 fsq_levels: list[int] | None = None):
        super().__init__()
        if encoder is None and decoder is None:
            raise ValueError("need at least one of encoder.jit / decoder.jit")
        self.enc, self.dec = encoder, decoder
        self.kind = kind
        self.temporal_compression = temporal_compression
        self.spatial_compression = spatial_compression
        self.latent_channels = latent_channels
        if kind == "dv":
            self.fsq = FSQ(list(fsq_levels or DEFAULT_FSQ))
            self.codebook_size = self.fsq.codebook_size

    @staticmethod
    def _dtype(m: nn.Module | None) -> torch.dtype:
        p = next(m.parameters(), None) if m is not None else None
        return p.dtype if p is not None else torch.float32

    def _run_encoder(self, x: torch.Tensor):
        if self.enc is None:
            raise RuntimeError("this checkpoint has no encoder.jit")
        out = self.enc(x.to(self._dtype(self.enc)))
        return out if isinstance(out, (tuple, list)) else (out,)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run_encoder(x)
        return out[0].long() if self.kind == "dv" else out[0].float()

    def _encode_blendable(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run_encoder(x)
        if self.kind != "dv":
            return out[0].float()
        return out[1].float() if len(out) > 1 else self.fsq.indices_to_codes(out[0])

    def _from_blendable(self, z: torch.Tensor) -> torch.Tensor:
        return self.fsq.codes_to_indices(z) if self.kind == "dv" else z

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.dec is None:
            raise RuntimeError("this checkpoint has no decoder.jit")
        if z.is_floating_point():
            z = z.to(self._dtype(self.dec))
        return self.dec(z).float()


_NAME_RE = re.compile(r"(?i)\b(?:cosmos-tokenize\d*-)?([cd])([vi])(\d+)x(\d+)(?:x(\d+))?")


def load_jit_tokenizer(path: str | os.PathLike, *, device: str | torch.device = "cpu", kind: str | None = None,
                       temporal_compression: int | None = None, spatial_compression: int | None = None,
                       latent_channels: int | None = None) -> JitTokenizer:
    """Load `encoder.jit` and/or `decoder.jit` from a folder.

    What the files mean comes from tokenizer.json (our exports), else from keyword arguments, else from
    the folder name as Cosmos names them (e.g. "Cosmos-Tokenize1-CV8x8x8-720p", "DI16x16").
    """
    d = Path(path)
    enc_p, dec_p = d / "encoder.jit", d / "decoder.jit"
    if not enc_p.exists() and not dec_p.exists():
        raise FileNotFoundError(f"{d}: no encoder.jit or decoder.jit (expected Cosmos-style TorchScript files)")
    meta: dict = {}
    if (d / META).exists():
        meta = json.loads((d / META).read_text())
    else:
        m = _NAME_RE.search(d.name)
        if m:
            video = m.group(2).lower() == "v"
            meta = {"kind": "dv" if m.group(1).lower() == "d" else "cv",
                    "temporal_compression": int(m.group(3)) if video else 1,
                    "spatial_compression": int(m.group(4))}
    given = {"kind": kind, "temporal_compression": temporal_compression,
             "spatial_compression": spatial_compression, "latent_channels": latent_channels}
    meta.update({k: v for k, v in given.items() if v is not None})
    missing = [k for k in ("kind", "temporal_compression", "spatial_compression") if meta.get(k) is None]
    if missing:
        raise ValueError(f"{d}: cannot tell {', '.join(missing)}: no {META} and the folder name is not like "
                         "'CV8x8x8'; pass them as keyword arguments")
    try:
        enc = torch.jit.load(str(enc_p), map_location=device) if enc_p.exists() else None
        dec = torch.jit.load(str(dec_p), map_location=device) if dec_p.exists() else None
    except RuntimeError as e:
        raise ValueError(f"{d}: not a loadable TorchScript file ({e.__class__.__name__}: {str(e)[:200]})") from e
    for m in (enc, dec):
        if m is not None:
            m.eval()
    return JitTokenizer(enc, dec, kind=meta["kind"], temporal_compression=int(meta["temporal_compression"]),
                        spatial_compression=int(meta["spatial_compression"]),
                        latent_channels=int(meta.get("latent_channels") or 16),
                        fsq_levels=meta.get("fsq_levels"))
