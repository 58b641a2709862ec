"""Causal video tokenizers (continuous CV and discrete DV/FSQ), after the public Cosmos tokenizer design.

    from wfm_platform.tokenizer import build_tokenizer
    tok = build_tokenizer("cv8x8x8", preset="tiny")   # names: cv|dv 4x8x8, 8x8x8, 8x16x16; ci8x8, di8x8
    z = tok.encode(x)          # x float [B,3,1+T,H,W] in [-1,1] -> [B,16,1+T/8,H/8,W/8]
    y = tok.decode(z)          # -> [B,3,1+T,H,W]
    tiled = encode_tiled(tok, x); decode_tiled(tok, z)   # bounded memory for any length / resolution
    load_jit_tokenizer(dir)    # encoder.jit / decoder.jit (Cosmos-style TorchScript) behind the same API

No Dagster here; training lives elsewhere (forward() returns reconstruction + latent/indices + aux).
"""

from .jit import JitTokenizer, export_torchscript, load_jit_tokenizer
from .metrics import psnr, ssim, ssim_frame, video_metrics
from .model import (
    FSQ,
    TokenizerAPI,
    TokenizerInputError,
    TokenizerOutput,
    VideoTokenizer,
    frames_to_tensor,
    tensor_to_frames,
)
from .registry import NAMES, TokenizerConfig, available_names, build_tokenizer, load_config
from .tiling import decode_tiled, encode_tiled, iter_decode_tiled

__all__ = [
    "FSQ",
    "JitTokenizer",
    "NAMES",
    "TokenizerAPI",
    "TokenizerConfig",
    "TokenizerInputError",
    "TokenizerOutput",
    "VideoTokenizer",
    "available_names",
    "build_tokenizer",
    "decode_tiled",
    "encode_tiled",
    "export_torchscript",
    "frames_to_tensor",
    "iter_decode_tiled",
    "load_config",
    "load_jit_tokenizer",
    "psnr",
    "ssim",
    "ssim_frame",
    "tensor_to_frames",
    "video_metrics",
]
