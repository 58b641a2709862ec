"""Autoregressive world-model family: a decoder-only transformer over discrete (DV) video tokens with
3D RoPE, optional text cross-attention, a KV cache, top-p / temperature sampling and Medusa heads.
See model.py (architecture, training loss, generate) and medusa.py (decoding)."""

from .medusa import decode_medusa, decode_plain, filter_probs, speculative_accept
from .model import ARWorldModel, Config, KVCache, TokenInputError, build_model, load_pretrained

FAMILY = "autoregressive"

__all__ = [
           "FAMILY",
           "ARWorldModel",
           "Config",
           "KVCache",
           "TokenInputError",
           "build_model",
           "decode_medusa",
           "decode_plain",
           "filter_probs",
           "load_pretrained",
           "speculative_accept",
]
