"""Causal video tokenizers (continuous CV and discrete DV/FSQ), after the public Cosmos tokenizer design.

    from wfm_platform.tokenizer import build_tokenizer
    tok = build_tokenizer("cv8x8x8", preset="tiny")   # names: cv|dv 4x8x8, 8x8x8, 8x16x16; ci8x8, di8x8
    z = tok.encode(x)          # x float [B,3,1+T,H,W] in [-1,1] -> [B,16,1+T/8,H/8,W/8]
    y = tok.decode(z)          # -> [B,3,1+T,H,W]
    tiled = encode_tiled(tok, x); decode_tiled(tok, z)   # bounded memory for any length / resolution
    load_jit_tokenizer(dir)    # encoder.jit / decoder.jit (Cosmos-style TorchScript) behind the same API

No Dagster here; training lives elsewhere (forward() returns reconstruction + latent/indices + aux).
"""

import importlib

# Lazy exports (PEP 562): `import wfm_platform.tokenizer.cli` (mounted in `wfm --help`) must not pay
# for importing torch; the first attribute access loads the module that defines it.
_EXPORTS = {
    "JitTokenizer": "jit", "export_torchscript": "jit", "load_jit_tokenizer": "jit",
    "psnr": "metrics", "ssim": "metrics", "ssim_frame": "metrics", "video_metrics": "metrics",
    "FSQ": "model", "TokenizerAPI": "model", "TokenizerInputError": "model", "TokenizerOutput": "model",
    "VideoTokenizer": "model", "frames_to_tensor": "model", "tensor_to_frames": "model",
    "NAMES": "registry", "TokenizerConfig": "registry", "available_names": "registry",
    "build_tokenizer": "registry", "load_config": "registry",
    "decode_tiled": "tiling", "encode_tiled": "tiling", "iter_decode_tiled": "tiling",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
