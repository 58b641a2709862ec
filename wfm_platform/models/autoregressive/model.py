"""Autoregressive world model: a decoder-only transformer over discrete video tokens (nanoGPT-style).

    cfg = Config(dim=128, depth=4, n_heads=4, cross_attn=True, medusa_heads=3)
    model = build_model(cfg)
    loss, logs = model.training_loss({"tokens": ids, "text_emb": emb, "text_mask": mask})
    video = model.generate(emb, mask, shape=(3, 16, 16), cond=first_frame_ids, temperature=1.0, top_p=0.9)

Sequence: the DV tokens [B, T, H, W] flattened in (t, h, w) raster order, prefixed with a BOS token
(id = vocab_size). Slot j of the input holds BOS (j=0) or token j-1 and predicts token j.

Positions: 3D rotary embeddings (RoPE) over t/h/w. Why RoPE and not learned t/h/w tables: it has no
parameters and no maximum grid, so one model runs at any resolution / number of latent frames; it is
relative, so a KV cache and Video2World prompting need nothing special; and it is what Cosmos uses.
The head dimension is split in three parts, each rotated by one axis' coordinate.

Blocks: pre-norm RMSNorm, grouped-query causal self-attention (QK-norm, KV cache), optional
cross-attention to text embeddings (`cross_attn`; its output projection starts at zero so adding it to
a pre-trained model changes nothing until it learns), SwiGLU MLP.

Text: "next-token pre-training then text conditioning". A model built with cross_attn and trained with
the text dropped (no text in the batch, or `text_dropout`) is pre-training; `load_pretrained` loads a
checkpoint trained without cross-attention into a model with it, leaving the new weights freshly
initialised and logging their names.

Medusa (`medusa_heads` = k): k extra heads on the last hidden state, head i predicting the token i+1
steps after the main head's; trained jointly (see `training_loss`), used for speculative decoding in
`generate(medusa=True)` (see medusa.py) with verification that keeps the plain sampling distribution.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, model_validator
from torch import nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)


class Config(BaseModel):
    """Every architecture knob of the autoregressive family (a preset's `model:` section)."""

    model_config = {"extra": "forbid"}

    dim: int = Field(128, gt=0, description="model width")
    depth: int = Field(4, gt=0, description="number of transformer blocks")
    n_heads: int = Field(4, gt=0)
    n_kv_heads: int | None = Field(None, description="grouped-query attention: K/V heads (None: n_heads)")
    mlp_hidden: int | None = Field(None, description="SwiGLU hidden width (None: 8/3 * dim, rounded to 64)")
    vocab_size: int = Field(64000, gt=1, description="tokenizer codebook size; BOS gets id vocab_size")
    tie_embeddings: bool = Field(False, description="share the input embedding with the LM head")
    rope_theta: float = Field(10000.0, gt=0)
    qk_norm: bool = Field(True, description="RMSNorm on queries and keys (stabilises large models)")
    norm_eps: float = Field(1e-5, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    cross_attn: bool = Field(False, description="cross-attention to text embeddings in every block")
    text_dim: int = Field(384, gt=0, description="text-encoder width (MiniLM 384, T5 1024)")
    text_encoder: str = Field("minilm", description="the text encoder the model reads: 'minilm' | 't5' | 't5:/path'")
    text_dropout: float = Field(0.0, ge=0, le=1, description="training: probability of dropping a sample's text")
    medusa_heads: int = Field(0, ge=0, description="k extra Medusa heads (0: none)")
    medusa_share_head: bool = Field(True, description="Medusa heads reuse the LM head (else own Linear)")
    medusa_loss_weight: float = Field(0.2, ge=0, description="weight of Medusa head 1; head i gets w * decay^(i-1)")
    medusa_loss_decay: float = Field(0.8, gt=0, le=1)
    tokenizer: str = Field("dv8x8x8", description="the DV tokenizer whose tokens the model reads")
    tokenizer_preset: str = Field("default", description="'default' | 'tiny'")

    @model_validator(mode="after")
    def _check(self) -> Config:
        kv = self.n_kv_heads or self.n_heads
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % kv:
            raise ValueError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {kv}")
        if (self.dim // self.n_heads) % 2 or self.dim // self.n_heads < 6:
            raise ValueError(f"head dim {self.dim // self.n_heads} must be even and >= 6 (3D RoPE over t/h/w)")
        return self

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 64 * math.ceil(8 * self.dim / 3 / 64)

    @property
    def bos_id(self) -> int:
        return self.vocab_size


class TokenInputError(ValueError):
    """Tokens, conditioning or text that do not fit the model; the message says what to fix."""


# ----------------------------------------------------------------------------------------------------
# 3D rotary positions


def slot_coords(start: int, length: int, hw: tuple[int, int], device) -> torch.Tensor:
    """(t, h, w) of input slots start..start+length-1. Slot j holds token j-1 (slot 0: BOS), so its
    coordinates are those of flat index j-1 in raster order; BOS lands on (-1, H-1, W-1), 'the last
    token of the frame before the first' (floor division keeps the arithmetic uniform)."""
    h, w = hw
    flat = torch.arange(start - 1, start - 1 + length, device=device)
    return torch.stack([torch.div(flat, h * w, rounding_mode="floor"),
                        torch.div(flat, w, rounding_mode="floor") % h, flat % w], dim=-1)


def rope_3d(coords: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [S, head_dim] for 'rotate-half' RoPE; the head_dim/2 frequency pairs are split between
    the t, h and w axes (h and w get 2*(head_dim//6) dims each, t the rest)."""
    d_hw = 2 * (head_dim // 6)
    parts = [head_dim - 2 * d_hw, d_hw, d_hw]
    angles = []
    for axis, d in enumerate(parts):
        freqs = theta ** (-torch.arange(0, d, 2, device=coords.device, dtype=torch.float32) / d)
        angles.append(coords[:, axis, None].float() * freqs[None])
    ang = torch.cat(angles, dim=-1)  # [S, head_dim/2]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, S, hd]."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


# ----------------------------------------------------------------------------------------------------
# KV cache


class KVCache:
    """Per-layer keys/values of the tokens fed so far, preallocated to `max_len`. `length` is how many
    slots are valid; Medusa verification rolls back by lowering it (the stale entries get overwritten).
    Cross-attention K/V of the text are computed once and kept in `cross`."""

    def __init__(self, depth: int, batch: int, kv_heads: int, head_dim: int, max_len: int, device, dtype):
        shape = (batch, kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.cross: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * depth
        self.length = 0
        self.max_len = max_len

    def rollback(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll the cache back to {length} (holds {self.length})")
        self.length = length


# ----------------------------------------------------------------------------------------------------
# blocks


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class SelfAttention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.h, self.kvh, self.hd = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, self.h * self.hd, bias=False)
        self.wk = nn.Linear(cfg.dim, self.kvh * self.hd, bias=False)
        self.wv = nn.Linear(cfg.dim, self.kvh * self.hd, bias=False)
        self.wo = nn.Linear(self.h * self.hd, cfg.dim, bias=False)
        self.q_norm = RMSNorm(self.hd, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.hd, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_norm(self.wq(x).view(b, s, self.h, self.hd)).transpose(1, 2)
        k = self.k_norm(self.wk(x).view(b, s, self.kvh, self.hd)).transpose(1, 2)
        v = self.wv(x).view(b, s, self.kvh, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        mask, causal = None, True
        if cache is not None:
            past = cache.length
            if past + s > cache.max_len:
                raise ValueError(f"KV cache full: {past}+{s} > {cache.max_len}")
            cache.k[layer][:, :, past:past + s] = k
            cache.v[layer][:, :, past:past + s] = v
            # .to: under autocast the new keys are bf16 while the cache keeps the parameter dtype
            k, v = cache.k[layer][:, :, :past + s].to(q.dtype), cache.v[layer][:, :, :past + s].to(q.dtype)
            if past > 0:
                # queries sit at past..past+s-1: each sees the whole cache and the new slots up to itself
                causal = False
                if s > 1:
                    mask = torch.ones(s, past + s, dtype=torch.bool, device=x.device).tril(diagonal=past)
        if self.kvh != self.h:  # grouped-query attention: share each K/V head between h/kvh query heads
            k = k.repeat_interleave(self.h // self.kvh, dim=1)
            v = v.repeat_interleave(self.h // self.kvh, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and s > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.wo(y.transpose(1, 2).reshape(b, s, self.h * self.hd))


class CrossAttention(nn.Module):
    """Queries from the video tokens, keys/values from the text embeddings (grouped-query, like the
    self-attention). Samples without any text (mask all False) get a zero output: 'text dropped'."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.h, self.kvh, self.hd = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, self.h * self.hd, bias=False)
        self.wk = nn.Linear(cfg.text_dim, self.kvh * self.hd, bias=False)
        self.wv = nn.Linear(cfg.text_dim, self.kvh * self.hd, bias=False)
        self.wo = nn.Linear(self.h * self.hd, cfg.dim, bias=False)
        self.q_norm = RMSNorm(self.hd, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.hd, cfg.norm_eps) if cfg.qk_norm else nn.Identity()

    def text_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, L, _ = text.shape
        k = self.k_norm(self.wk(text).view(b, L, self.kvh, self.hd)).transpose(1, 2)
        v = self.wv(text).view(b, L, self.kvh, self.hd).transpose(1, 2)
        if self.kvh != self.h:
            k = k.repeat_interleave(self.h // self.kvh, dim=1)
            v = v.repeat_interleave(self.h // self.kvh, dim=1)
        # FSDP2 runs this method as its own unit, and both branches above end in views: hand back fresh
        # tensors so that no later in-place op can drop its backward hook (a copy of a few text tokens' K/V)
        return k.clone(), v.clone()

    def forward(self, x, kv: tuple[torch.Tensor, torch.Tensor], text_mask: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_norm(self.wq(x).view(b, s, self.h, self.hd)).transpose(1, 2)
        has_text = text_mask.any(dim=1)  # [B]
        # a row with no valid key would be NaN: let it attend to everything, then zero its output
        mask = (text_mask | ~has_text[:, None])[:, None, None, :]
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
        y = y * has_text[:, None, None, None].to(y.dtype)
        return self.wo(y.transpose(1, 2).reshape(b, s, self.h * self.hd))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = SelfAttention(cfg)
        if cfg.cross_attn:
            self.cross_norm = RMSNorm(cfg.dim, cfg.norm_eps)
            self.cross = CrossAttention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.dim, cfg.hidden)

    def forward(self, x, cos, sin, text: tuple | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, layer)
        if text is not None and hasattr(self, "cross"):
            kv, text_mask = text
            x = x + self.cross(self.cross_norm(x), kv, text_mask)
        return x + self.mlp(self.mlp_norm(x))


class MedusaHead(nn.Module):
    """One Medusa head: a residual SiLU block (zero-initialised, so a fresh head predicts what the main
    head predicts) followed by the LM head (shared) or its own Linear."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.res = nn.Linear(cfg.dim, cfg.dim, bias=True)
        self.out = None if cfg.medusa_share_head else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    def forward(self, h: torch.Tensor, lm_head: nn.Linear) -> torch.Tensor:
        h = h + F.silu(self.res(h))
        return (self.out or lm_head)(h)


# ----------------------------------------------------------------------------------------------------
# the model


class ARWorldModel(nn.Module):
    family = "autoregressive"

    def __init__(self, cfg: Config):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size + 1, cfg.dim)  # + BOS
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.medusa = nn.ModuleList(MedusaHead(cfg) for _ in range(cfg.medusa_heads))
        self._checkpointing = False
        self.last_generation_stats: dict[str, Any] = {}
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            # GPT-2 style: scale residual output projections by depth
            if name.endswith(("attn.wo.weight", "mlp.w2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.depth))
        self.zero_init_new_modules()
        if cfg.tie_embeddings:
            self.lm_head = _TiedHead(self.tok_emb, cfg.vocab_size)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def zero_init_new_modules(self) -> None:
        """Cross-attention output projections and Medusa residual blocks start at zero: bolting them onto
        a trained model leaves its predictions unchanged until they learn."""
        for blk in self.blocks:
            if hasattr(blk, "cross"):
                nn.init.zeros_(blk.cross.wo.weight)
        for head in self.medusa:
            nn.init.zeros_(head.res.weight)
            nn.init.zeros_(head.res.bias)

    def enable_activation_checkpointing(self, flag: bool = True) -> None:
        self._checkpointing = bool(flag)

    # ------------------------------------------------------------------ checks

    def check_tokens(self, tokens: object, name: str = "tokens") -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor):
            raise TokenInputError(f"{name}: expected a torch.Tensor, got {type(tokens).__name__}")
        if tokens.dim() != 4:
            raise TokenInputError(f"{name}: expected DV token ids [B, T, H, W], got shape {tuple(tokens.shape)}"
                                  " (encode the video with a discrete 'dv*' tokenizer)")
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise TokenInputError(f"{name}: expected integer token ids, got {tokens.dtype}; continuous "
                                  "latents belong to the diffusion family")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size):
            raise TokenInputError(
                f"{name}: ids must lie in [0, {self.config.vocab_size}), got [{int(tokens.min())}, "
                f"{int(tokens.max())}]; the tokenizer's codebook must match the model's vocab_size")
        return tokens.long()

    def check_text(self, text_emb: torch.Tensor | None, text_mask: torch.Tensor | None,
                   batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """None when the model has no cross-attention or no text was given (= text dropped)."""
        if text_emb is None:
            return None
        if not self.config.cross_attn:
            log.debug("model has no cross-attention: text embeddings ignored")
            return None
        if text_emb.dim() != 3:
            raise TokenInputError(f"text_emb: expected [B, L, D], got shape {tuple(text_emb.shape)}")
        if text_emb.shape[-1] != self.config.text_dim:
            raise TokenInputError(
                f"text_emb has width {text_emb.shape[-1]} but the model expects text_dim="
                f"{self.config.text_dim}; encode prompts with the text encoder the model was trained with")
        if text_emb.shape[0] not in (1, batch):
            raise TokenInputError(f"text_emb batch {text_emb.shape[0]} does not match the token batch {batch}")
        if text_mask is None:
            text_mask = torch.ones(text_emb.shape[:2], dtype=torch.bool, device=text_emb.device)
        if tuple(text_mask.shape) != tuple(text_emb.shape[:2]):
            raise TokenInputError(f"text_mask shape {tuple(text_mask.shape)} != text_emb [B, L] "
                                  f"{tuple(text_emb.shape[:2])}")
        if text_emb.shape[0] != batch:
            text_emb, text_mask = text_emb.expand(batch, -1, -1), text_mask.expand(batch, -1)
        dtype = self.tok_emb.weight.dtype
        return text_emb.to(dtype), text_mask.bool()

    # ------------------------------------------------------------------ forward

    def forward(self, slots: torch.Tensor, *, hw: tuple[int, int], start: int = 0,
                text: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        """slots [B, S] (BOS and token ids) at sequence positions start..start+S-1 of a video whose
        latent frames are hw = (H, W) tokens. Returns the final-norm hidden states [B, S, dim]; apply
        `lm_head` (next token) or `medusa_logits` to them. With a cache, `start` must equal
        cache.length and the cache grows by S."""
        if cache is not None and start != cache.length:
            raise ValueError(f"start {start} != cache length {cache.length}")
        cos, sin = rope_3d(slot_coords(start, slots.shape[1], hw, slots.device), self.config.head_dim,
                           self.config.rope_theta)
        dtype = self.tok_emb.weight.dtype
        cos, sin = cos.to(dtype), sin.to(dtype)
        x = self.drop(self.tok_emb(slots))
        for i, blk in enumerate(self.blocks):
            ctx = None
            if text is not None and self.config.cross_attn:
                if cache is not None:
                    if cache.cross[i] is None:
                        cache.cross[i] = blk.cross.text_kv(text[0])
                    ctx = (cache.cross[i], text[1])
                else:
                    ctx = (blk.cross.text_kv(text[0]), text[1])
            if self._checkpointing and self.training and cache is None:
                x = checkpoint(blk, x, cos, sin, ctx, None, i, use_reentrant=False)
            else:
                x = blk(x, cos, sin, ctx, cache, i)
        if cache is not None:
            cache.length += slots.shape[1]
        return self.norm(x)

    def medusa_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[k, B, S, V]: head i (0-based) at slot j predicts token j+1+i (the main head predicts j)."""
        return torch.stack([head(hidden, self.lm_head) for head in self.medusa])

    def new_cache(self, batch: int, max_len: int, device=None) -> KVCache:
        p = self.tok_emb.weight
        return KVCache(len(self.blocks), batch, self.config.kv_heads, self.config.head_dim, max_len,
                       device or p.device, p.dtype)

    # ------------------------------------------------------------------ training

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-token cross-entropy over the whole token grid (+ weighted Medusa head losses).
        logs: loss (total), ce, acc (main head top-1), medusa{i}_acc."""
        if "tokens" not in batch:
            raise TokenInputError(f"batch has no 'tokens' (keys: {sorted(batch)}); the autoregressive "
                                  "family trains on DV token ids [B, T, H, W]")
        tokens = self.check_tokens(batch["tokens"]).to(self.tok_emb.weight.device)
        b, t, h, w = tokens.shape
        seq = tokens.reshape(b, t * h * w)
        bos = torch.full((b, 1), self.config.bos_id, dtype=torch.long, device=seq.device)
        inp = torch.cat([bos, seq[:, :-1]], dim=1)
        text = self.check_text(batch.get("text_emb"), batch.get("text_mask"), b)
        if text is not None:
            emb, mask = (x.to(seq.device) for x in text)
            if self.training and self.config.text_dropout > 0:
                keep = torch.rand(b, device=seq.device) >= self.config.text_dropout
                mask = mask & keep[:, None]
            text = (emb, mask)
        hidden = self.forward(inp, hw=(h, w), text=text)
        logits = self.lm_head(hidden)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), seq.flatten())
        loss = ce
        logs = {"ce": float(ce.detach()),
                "acc": float((logits.detach().argmax(-1) == seq).float().mean())}
        n = seq.shape[1]
        for i, head in enumerate(self.medusa, start=1):
            if n - i <= 0:
                break
            hl = head(hidden[:, :n - i], self.lm_head)
            target = seq[:, i:]
            weight = self.config.medusa_loss_weight * self.config.medusa_loss_decay ** (i - 1)
            loss = loss + weight * F.cross_entropy(hl.flatten(0, 1).float(), target.flatten())
            logs[f"medusa{i}_acc"] = float((hl.detach().argmax(-1) == target).float().mean())
        logs["loss"] = float(loss.detach())
        return loss, logs

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(self, text_emb: torch.Tensor | None, text_mask: torch.Tensor | None, *,
                 shape: tuple[int, int, int], cond: torch.Tensor | None = None, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, medusa: bool = False, batch_size: int | None = None,
                 **unused: Any) -> torch.Tensor:
        """Tokens [B, T, H, W]. Text2World: from BOS; Video2World: `cond` [B, k, H, W] (the tokens of
        the conditioning latent frames) is the prompt and is returned unchanged in the first k frames.
        temperature 0 = greedy; top_p nucleus and top_k filter the distribution. medusa=True decodes
        speculatively with the Medusa heads (same output distribution; identical tokens when greedy);
        its acceptance statistics land in `self.last_generation_stats`. B comes from cond, else from
        text_emb, else batch_size (default 1)."""
        from .medusa import decode_medusa, decode_plain

        if unused:
            log.debug("autoregressive generate ignores %s", sorted(unused))
        t, h, w = (int(v) for v in shape)
        if min(t, h, w) < 1:
            raise TokenInputError(f"shape must be positive (T, H, W) in token units, got {shape}")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise TokenInputError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, "
                                  f"{top_p}, {top_k}")
        device = self.tok_emb.weight.device
        if cond is not None:
            cond = self.check_tokens(cond, "cond").to(device)
            if tuple(cond.shape[2:]) != (h, w) or cond.shape[1] > t:
                raise TokenInputError(f"cond {tuple(cond.shape)} does not fit shape {shape}: need [B, k<=T, "
                                      f"{h}, {w}] (encode the conditioning frames at the output resolution)")
            b = cond.shape[0]
        elif text_emb is not None:
            b = text_emb.shape[0]
        else:
            b = batch_size or 1
        if medusa and not len(self.medusa):
            raise TokenInputError("medusa=True but the model has no Medusa heads (config medusa_heads=0)")
        text = self.check_text(text_emb.to(device) if text_emb is not None else None,
                               text_mask.to(device) if text_mask is not None else None, b)
        prompt = cond.reshape(b, -1) if cond is not None else torch.zeros(b, 0, dtype=torch.long, device=device)
        total = t * h * w
        gen = torch.Generator(device=device).manual_seed(int(seed))
        was_training = self.training
        self.eval()
        try:
            decode = decode_medusa if medusa else decode_plain
            seq, stats = decode(self, prompt, total, (h, w), text, gen, temperature=temperature, top_p=top_p,
                                top_k=top_k, progress=progress)
        finally:
            self.train(was_training)
        self.last_generation_stats = stats
        if medusa:
            log.info("medusa decoding: %d tokens in %d forward passes, acceptance rate %.3f, "
                     "%.2f tokens/forward", stats["tokens"], stats["forwards"], stats["acceptance_rate"],
                     stats["tokens_per_forward"])
        return seq.reshape(b, t, h, w)


class _TiedHead(nn.Module):
    """LM head sharing the input embedding table (minus the BOS row, which is never predicted)."""

    def __init__(self, emb: nn.Embedding, vocab: int):
        super().__init__()
        self.emb = emb
        self.vocab = vocab

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.emb.weight[: self.vocab])


def build_model(cfg: Config | dict) -> ARWorldModel:
    if isinstance(cfg, dict):
        cfg = Config(**cfg)
    return ARWorldModel(cfg)


def load_pretrained(model: ARWorldModel, state_dict: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Load weights from a checkpoint of a related model: typically a pre-trained (no cross-attention,
    no Medusa) model into one with cross-attention / Medusa heads. Keys of those new modules that the
    checkpoint lacks keep their fresh initialisation (cross-attention output at zero, so the model starts
    out predicting exactly what the pre-trained one did) and are logged; checkpoint keys of modules this
    model lacks are dropped with a warning. Anything else missing, or any shape mismatch, raises: that
    checkpoint is not this architecture. Returns {"new": [...], "dropped": [...]}."""
    sd = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state_dict.items()}
    own = model.state_dict()
    optional = (".cross.", ".cross_norm.", "medusa.")

    def is_optional(k: str) -> bool:
        return any(o in k or k.startswith(o) for o in optional)

    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_missing = [k for k in missing if not is_optional(k)]
    bad_unexpected = [k for k in unexpected if not is_optional(k)]
    if bad_missing or bad_unexpected:
        raise TokenInputError(
            f"checkpoint does not fit this architecture: missing {bad_missing[:8]}, unexpected "
            f"{bad_unexpected[:8]} (compare dim/depth/heads/vocab of the checkpoint's config and the preset)")
    mismatched = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in sd and sd[k].shape != own[k].shape]
    if mismatched:
        raise TokenInputError(f"checkpoint shapes differ from the model: {mismatched[:8]}")
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    if missing:
        log.info("load_pretrained: %d new parameters keep their fresh initialisation: %s", len(missing), missing)
    if unexpected:
        log.warning("load_pretrained: %d checkpoint tensors have no place in this model, dropped: %s",
                    len(unexpected), unexpected)
    return {"new": missing, "dropped": unexpected}
