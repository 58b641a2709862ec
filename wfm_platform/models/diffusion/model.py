"""Diffusion world model: a DiT over continuous-tokenizer (CV) latents, trained with rectified flow.

One readable file (nanoGPT style): Config, the transformer, the objective and the sampler.

Data flow
  latents [B, C, T, H, W] --normalise--> 3D patchify (pt x ph x pw) --> tokens [B, T'*H'*W', dim]
  --> `depth` blocks: AdaLN(t) self-attention with 3D RoPE + QK-norm, AdaLN(t) cross-attention to the text,
      AdaLN(t) MLP, each residual gated (adaLN-zero) --> final AdaLN + linear --> unpatchify --> velocity.

Objective: rectified flow. x_t = (1 - t) x0 + t eps, the model predicts v = eps - x0, t ~ logit-normal.
Why RF and not EDM: one linear path and one target, no sigma-dependent preconditioning (c_skip, c_out, c_in,
c_noise) to get right; straight paths sample well with few Euler steps; the same choice as SD3 and
Cosmos-Predict2. Cosmos-1.0 used EDM; for our small models the simpler objective is the safer one.

Timesteps are per latent frame ([B, T]): that is how Video2World keeps its conditioning frames clean. The
first k latent frames are the condition: at training (on a `video2world_prob` share of samples) they get
timestep `cond_noise` (default 0: exactly clean; a small value noise-augments them as Cosmos does) and no
loss; at sampling they are overwritten with the (optionally noise-augmented) condition before every step and
the returned latents hold the given condition bit for bit.

Classifier-free guidance: at training each sample's text is replaced by a learned null embedding with
probability `cfg_dropout`; at sampling v = v_uncond + guidance * (v_cond - v_uncond) (guidance 1: one pass,
text only; 0: unconditional). A negative prompt can stand in for the null text.

Latent normalisation: z = (latents - latent_shift) * latent_scale (scalars or per channel). Estimate them
once on training latents with `estimate_latent_stats` (mean and 1/std per channel) and store them in the
config: the checkpoint carries them to inference.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)


class DiffusionInputError(ValueError):
    """Bad input to the diffusion model: the message says what is wrong and what to do."""


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # what the model reads
    tokenizer: str = Field("cv8x8x8", description="continuous tokenizer name (configs/tokenizer/<name>.yaml)")
    tokenizer_preset: Literal["default", "tiny"] = "default"
    latent_channels: int = Field(16, ge=1, description="channels of the CV latents")
    text_dim: int = Field(384, ge=1, description="text-encoder width (MiniLM 384, T5-11B 1024)")
    text_encoder: str = Field("minilm", description="text encoder spec the model was trained with")
    # transformer
    dim: int = Field(768, ge=8)
    depth: int = Field(12, ge=1)
    heads: int = Field(12, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    patch: tuple[int, int, int] = Field((1, 2, 2), description="patch size over (t, h, w) latent units")
    adaln_lora_dim: int | None = Field(256, ge=1, description="rank of AdaLN-LoRA (Cosmos); null: full adaLN")
    qk_norm: bool = True
    bias: bool = Field(False, description="biases in the linear layers")
    rope_theta: float = 10000.0
    freq_dim: int = Field(256, ge=2, description="sinusoidal timestep features")
    # objective
    latent_shift: float | list[float] = 0.0
    latent_scale: float | list[float] = 1.0
    t_logit_mean: float = 0.0
    t_logit_std: float = Field(1.0, gt=0)
    cfg_dropout: float = Field(0.1, ge=0, le=1, description="share of samples trained with the null text")
    video2world_prob: float = Field(0.5, ge=0, le=1, description="share of samples trained with clean cond frames")
    cond_noise: float = Field(0.0, ge=0, lt=1, description="timestep of the cond frames (0: clean)")
    # sampling defaults (generate(**sampling) overrides them)
    sample_steps: int = Field(35, ge=1)
    guidance: float = 7.0
    sampler: Literal["euler", "heun"] = "euler"
    shift: float = Field(1.0, gt=0, description="timestep shift t' = s t / (1 + (s-1) t); >1 for large latents")

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        hd = self.dim // self.heads
        if hd % 2 or hd < 8:
            raise ValueError(f"head dim {hd} must be even and >= 8 (3D RoPE splits it over t, h, w)")
        if min(self.patch) < 1:
            raise ValueError(f"patch {self.patch} must be >= 1 on every axis")
        for name in ("latent_shift", "latent_scale"):
            v = getattr(self, name)
            if isinstance(v, list) and len(v) != self.latent_channels:
                raise ValueError(f"{name} has {len(v)} values; latent_channels={self.latent_channels}")
        return self


# ---------------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------------
def rope_3d(grid: tuple[int, int, int], head_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [N, head_dim/2] for tokens in (t, h, w) order; the head dim is split t | h | w."""
    dh = head_dim // 6 * 2  # h and w get the same even share, t the (even) rest: Cosmos' split
    dt = head_dim - 2 * dh
    T, H, W = grid

    def axis(n: int, d: int) -> torch.Tensor:
        inv = 1.0 / theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
        return torch.outer(torch.arange(n, device=device, dtype=torch.float32), inv)

    ft = axis(T, dt)[:, None, None, :].expand(T, H, W, -1)
    fh = axis(H, dh)[None, :, None, :].expand(T, H, W, -1)
    fw = axis(W, dh)[None, None, :, :].expand(T, H, W, -1)
    f = torch.cat([ft, fh, fw], dim=-1).reshape(T * H * W, head_dim // 2)
    return f.cos(), f.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x [B, heads, N, hd]."""
    xf = x.float()
    x1, x2 = xf[..., 0::2], xf[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).to(x.dtype)


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000 like DDPM-era embedders): [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    a = t.float()[..., None] * 1000.0 * freqs
    return torch.cat([a.cos(), a.sin()], dim=-1)


def _frames(x: torch.Tensor, T: int) -> torch.Tensor:
    """[B, T*S, d] -> [B, T, S, d]: AdaLN parameters are per latent frame (per-frame timesteps)."""
    return x.view(x.shape[0], T, -1, x.shape[-1])


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    T = shift.shape[1]
    return (_frames(x, T) * (1 + scale[:, :, None]) + shift[:, :, None]).flatten(1, 2)


def gated(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    return (_frames(x, gate.shape[1]) * gate[:, :, None]).flatten(1, 2)


def _norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """QK RMSNorm in float32 (bf16 activations, fp32 or bf16 weights: one fused kernel, no precision loss)."""
    if isinstance(norm, nn.RMSNorm):
        return F.rms_norm(x.float(), norm.normalized_shape, norm.weight.float(), norm.eps)
    return x


class Attention(nn.Module):
    """Multi-head attention (torch SDPA) with QK RMSNorm; self-attention takes 3D RoPE, cross-attention a mask."""

    def __init__(self, dim: int, heads: int, ctx_dim: int | None, qk_norm: bool, bias: bool):
        super().__init__()
        self.heads, self.hd = heads, dim // heads
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(ctx_dim or dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.q_norm = nn.RMSNorm(self.hd, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.hd, eps=1e-6) if qk_norm else nn.Identity()

    def forward(self, x, ctx=None, rope=None, mask=None):
        B, N, D = x.shape
        ctx = x if ctx is None else ctx
        q = self.q(x).view(B, N, self.heads, self.hd).transpose(1, 2)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.heads, self.hd).permute(2, 0, 3, 1, 4)
        q, k = _norm(self.q_norm, q), _norm(self.k_norm, k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k = q.to(v.dtype), k.to(v.dtype)
        attn_mask = mask[:, None, None, :] if mask is not None else None  # True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(y.transpose(1, 2).reshape(B, N, D))


class AdaLN(nn.Module):
    """Shift/scale/gate for n sub-layers from the timestep embedding; zero-initialised (adaLN-zero).

    lora_dim: Cosmos' AdaLN-LoRA (dim -> r -> n*3*dim per block, plus a shared term from the embedder):
    far fewer parameters than a full dim -> n*3*dim projection in every block.
    """

    def __init__(self, dim: int, n: int, lora_dim: int | None):
        super().__init__()
        out = 3 * n * dim
        if lora_dim:
            self.net = nn.Sequential(nn.SiLU(), nn.Linear(dim, lora_dim, bias=False), nn.Linear(lora_dim, out, bias=False))
        else:
            self.net = nn.Sequential(nn.SiLU(), nn.Linear(dim, out))
        nn.init.zeros_(self.net[-1].weight)
        if self.net[-1].bias is not None:
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, emb: torch.Tensor, shared: torch.Tensor | None) -> list[torch.Tensor]:
        m = self.net(emb)
        if shared is not None:
            m = m + shared
        return list(m.chunk(m.shape[-1] // emb.shape[-1], dim=-1))


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, cfg.heads, None, cfg.qk_norm, cfg.bias)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.cross = Attention(d, cfg.heads, cfg.text_dim, cfg.qk_norm, cfg.bias)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden, bias=cfg.bias), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, d, bias=cfg.bias))
        self.adaln = AdaLN(d, 3, cfg.adaln_lora_dim)

    def forward(self, x, emb, shared, rope, ctx, ctx_mask):
        s1, c1, g1, s2, c2, g2, s3, c3, g3 = self.adaln(emb, shared)
        x = x + gated(self.attn(modulate(self.norm1(x), s1, c1), rope=rope), g1)
        x = x + gated(self.cross(modulate(self.norm2(x), s2, c2), ctx=ctx, mask=ctx_mask), g2)
        x = x + gated(self.mlp(modulate(self.norm3(x), s3, c3)), g3)
        return x


# ---------------------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------------------
class DiffusionWFM(nn.Module):
    family = "diffusion"

    def __init__(self, cfg: Config):
        super().__init__()
        self.config = cfg
        d, (pt, ph, pw) = cfg.dim, cfg.patch
        self.patch_dim = cfg.latent_channels * pt * ph * pw
        self.patch_embed = nn.Linear(self.patch_dim, d, bias=True)
        self.t_embed = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        # AdaLN-LoRA's shared term: one projection of the timestep added to every block's modulation
        self.shared_adaln = nn.Linear(d, 9 * d, bias=False) if cfg.adaln_lora_dim else None
        if self.shared_adaln is not None:
            nn.init.zeros_(self.shared_adaln.weight)
        self.null_text = nn.Parameter(torch.randn(1, 1, cfg.text_dim) * 0.02)  # CFG's "no prompt"
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_adaln = AdaLN(d, 1, None)  # shift, scale (+ an unused gate)
        self.out = nn.Linear(d, self.patch_dim, bias=True)
        nn.init.zeros_(self.out.weight)  # predicts v = 0 at init: a stable start
        nn.init.zeros_(self.out.bias)
        self.grad_checkpointing = False
        self._rope_cache: dict = {}

    # -- housekeeping ----------------------------------------------------------------------------------
    def enable_activation_checkpointing(self, flag: bool = True) -> None:
        """Recompute each block's activations in backward (memory for compute; FSDP-friendly)."""
        self.grad_checkpointing = bool(flag)

    @property
    def device(self) -> torch.device:
        return self.patch_embed.weight.device

    def _rope(self, grid, device):
        key = (grid, str(device))
        if key not in self._rope_cache:
            if len(self._rope_cache) > 8:
                self._rope_cache.clear()
            self._rope_cache[key] = rope_3d(grid, self.config.dim // self.config.heads, self.config.rope_theta, device)
        return self._rope_cache[key]

    def _stat(self, v, x: torch.Tensor) -> torch.Tensor | float:
        if isinstance(v, list):
            return torch.tensor(v, device=x.device, dtype=x.dtype).view(1, -1, 1, 1, 1)
        return float(v)

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self._stat(self.config.latent_shift, latents)) * self._stat(self.config.latent_scale, latents)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z / self._stat(self.config.latent_scale, z) + self._stat(self.config.latent_shift, z)

    # -- input checks ----------------------------------------------------------------------------------
    def check_latents(self, x: torch.Tensor, what: str = "latents") -> None:
        C = self.config.latent_channels
        if not torch.is_tensor(x) or x.dim() != 5:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise DiffusionInputError(f"{what} must be a 5-D tensor [B, C, T, H, W]; got {shape}. Encode videos with "
                                      "the continuous tokenizer (`wfm tokenize encode`, a cv* tokenizer)")
        if x.shape[1] != C:
            raise DiffusionInputError(
                f"{what} have {x.shape[1]} channels but the model expects latent_channels={C} (tokenizer "
                f"{self.config.tokenizer}/{self.config.tokenizer_preset}); encode with that tokenizer or set "
                "latent_channels in the model config")
        if not x.is_floating_point():
            raise DiffusionInputError(f"{what} must be floating point (continuous latents); got {x.dtype}. Discrete "
                                      "tokens belong to the autoregressive family")
        bad = (~torch.isfinite(x)).sum().item()
        if bad:
            raise DiffusionInputError(f"{what} contain {bad} NaN/Inf values: the tokenizer output or the dataset shard "
                                      "is corrupt; re-encode the clips")

    def check_text(self, emb: torch.Tensor, mask: torch.Tensor, batch: int | None = None, what: str = "text_emb"):
        D = self.config.text_dim
        if not torch.is_tensor(emb) or emb.dim() != 3:
            shape = tuple(emb.shape) if torch.is_tensor(emb) else type(emb).__name__
            raise DiffusionInputError(f"{what} must be [B, L, D]; got {shape} (TextEncoder.encode gives that)")
        if emb.shape[-1] != D:
            raise DiffusionInputError(
                f"{what} has width {emb.shape[-1]} but the model was built for text_dim={D} (text encoder "
                f"'{self.config.text_encoder}'): encode prompts with the encoder the model was trained with")
        if not torch.is_tensor(mask) or mask.shape != emb.shape[:2]:
            got = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
            raise DiffusionInputError(f"{what} mask must be bool [B, L] = {tuple(emb.shape[:2])}; got {got}")
        if batch is not None and emb.shape[0] != batch:
            raise DiffusionInputError(f"{what} has batch {emb.shape[0]} but the latents have batch {batch}")
        if not torch.isfinite(emb).all():
            raise DiffusionInputError(f"{what} contains NaN/Inf: check the text encoder")

    def _text(self, emb: torch.Tensor, mask: torch.Tensor, drop: torch.Tensor | None = None):
        """Cast, and put the null text where `drop` is set or where a prompt has no token at all."""
        emb = emb.to(self.device, self.null_text.dtype)
        mask = mask.to(self.device, torch.bool)
        empty = ~mask.any(dim=1)  # an all-masked row would make attention NaN: treat it as "no prompt"
        drop = empty if drop is None else (drop.to(self.device) | empty)
        if drop.any() or self.training:  # training: always in the graph, so DDP sees a (zero) grad for null_text
            null_mask = torch.zeros_like(mask)
            null_mask[:, 0] = True  # the null text is one token; the other (masked) slots hold copies of it
            emb = torch.where(drop[:, None, None], self.null_text.expand_as(emb), emb)
            mask = torch.where(drop[:, None], null_mask, mask)
        return emb, mask

    def null_text_batch(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.null_text.expand(batch, 1, -1)
        return emb, torch.ones(batch, 1, dtype=torch.bool, device=emb.device)

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, text_emb: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Velocity for normalised noisy latents x [B, C, T, H, W] at per-frame timesteps t [B, T] (or [B])."""
        B, C, T, H, W = x.shape
        pt, ph, pw = self.config.patch
        if t.dim() == 1:
            t = t[:, None].expand(B, T)
        # pad to whole patches (any T/H/W works); cropped again after unpatchify
        Tp, Hp, Wp = -(-T // pt), -(-H // ph), -(-W // pw)
        if (Tp * pt, Hp * ph, Wp * pw) != (T, H, W):
            x = F.pad(x, (0, Wp * pw - W, 0, Hp * ph - H, 0, Tp * pt - T))
            t = torch.cat([t, t[:, -1:].expand(B, Tp * pt - T)], dim=1)  # padded frames: last frame's t
        tok = x.view(B, C, Tp, pt, Hp, ph, Wp, pw).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, Tp * Hp * Wp, -1)
        h = self.patch_embed(tok.to(self.patch_embed.weight.dtype))
        # one timestep per patch-frame (Video2World cond lengths are whole temporal patches)
        emb = self.t_embed(timestep_features(t.reshape(B, Tp, pt)[..., 0], self.config.freq_dim).to(h.dtype))
        shared = self.shared_adaln(F.silu(emb)) if self.shared_adaln is not None else None
        rope = self._rope((Tp, Hp, Wp), h.device)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(blk, h, emb, shared, rope, text_emb, text_mask, use_reentrant=False)
            else:
                h = blk(h, emb, shared, rope, text_emb, text_mask)
        shift, scale, _ = self.final_adaln(emb, None)
        out = self.out(modulate(self.final_norm(h), shift, scale))
        out = out.view(B, Tp, Hp, Wp, C, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return out.reshape(B, C, Tp * pt, Hp * ph, Wp * pw)[:, :, :T, :H, :W].float()

    # -- training ---------------------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        if "latents" not in batch:
            raise DiffusionInputError(f"batch has no 'latents' (keys: {sorted(batch)}); the diffusion family trains on "
                                      "continuous tokenizer latents")
        lat = batch["latents"]
        self.check_latents(lat)
        B, T = lat.shape[0], lat.shape[2]
        self.check_text(batch["text_emb"], batch["text_mask"], B)
        dev = self.device
        x0 = self.normalize(lat.to(dev, torch.float32))
        t = torch.sigmoid(torch.randn(B, device=dev) * cfg.t_logit_std + cfg.t_logit_mean)  # logit-normal
        tf = t[:, None].expand(B, T).clone()
        # Video2World: the first k latent frames (whole temporal patches) of some samples stay clean, no loss
        pt = cfg.patch[0]
        cond = torch.zeros(B, T, dtype=torch.bool, device=dev)
        max_k = (T - 1) // pt
        if max_k >= 1 and cfg.video2world_prob > 0:
            use = torch.rand(B, device=dev) < cfg.video2world_prob
            k = torch.randint(1, max_k + 1, (B,), device=dev) * pt
            cond = use[:, None] & (torch.arange(T, device=dev)[None] < k[:, None])
        tf = torch.where(cond, torch.full_like(tf, cfg.cond_noise), tf)
        eps = torch.randn_like(x0)
        tb = tf[:, None, :, None, None]
        xt = (1 - tb) * x0 + tb * eps
        drop = torch.rand(B, device=dev) < cfg.cfg_dropout
        emb, mask = self._text(batch["text_emb"], batch["text_mask"], drop)
        pred = self(xt, tf, emb, mask)
        err = (pred - (eps - x0)).pow(2).mean(dim=(1, 3, 4))  # [B, T]
        w = (~cond).float()
        loss = (err * w).sum() / w.sum().clamp_min(1.0)
        logs = {"loss": float(loss.detach()), "t_mean": float(t.mean()), "text_dropped": float(drop.float().mean()),
                "cond_frames": float(cond.float().mean())}
        return loss, logs

    # -- sampling ---------------------------------------------------------------------------------------
    def _velocity(self, x, tf, emb, mask, uncond, guidance: float) -> torch.Tensor:
        if guidance == 1.0:
            return self(x, tf, emb, mask)
        ue, um = uncond
        L = max(emb.shape[1], ue.shape[1])  # pad both texts to one length so cond and uncond share a batch
        pe, pm = _pad_text(emb, mask, L), _pad_text(ue, um, L)
        v = self(torch.cat([x, x]), torch.cat([tf, tf]), torch.cat([pe[0], pm[0]]), torch.cat([pe[1], pm[1]]))
        vc, vu = v.chunk(2)
        return vu + guidance * (vc - vu)

    @torch.no_grad()
    def generate(self, text_emb: torch.Tensor, text_mask: torch.Tensor, *, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None, seed: int = 0, progress: Callable[[int, int], Any] | None = None,
                 steps: int | None = None, guidance: float | None = None, sampler: str | None = None,
                 shift: float | None = None, cond_noise: float | None = None,
                 neg_text_emb: torch.Tensor | None = None, neg_text_mask: torch.Tensor | None = None,
                 **unused: Any) -> torch.Tensor:
        """Latents [B, C, T, H, W] for text (Text2World) or text + the first k latent frames `cond` (Video2World).

        steps/guidance/sampler ("euler"|"heun")/shift/cond_noise default to the config. neg_text_*: a
        negative prompt used instead of the null text on the unconditional branch.
        """
        cfg = self.config
        if unused:  # a typo must not silently fall back to a default
            raise DiffusionInputError(f"unknown sampling option(s) {sorted(unused)} for the diffusion family; it takes "
                                      "steps, guidance, sampler, shift, cond_noise, neg_text_emb, neg_text_mask")
        steps = int(steps or cfg.sample_steps)
        guidance = float(cfg.guidance if guidance is None else guidance)
        sampler = sampler or cfg.sampler
        shift = float(shift or cfg.shift)
        cond_noise = float(cfg.cond_noise if cond_noise is None else cond_noise)
        if sampler not in ("euler", "heun"):
            raise DiffusionInputError(f"sampler must be 'euler' or 'heun'; got {sampler!r}")
        if steps < 1:
            raise DiffusionInputError(f"steps must be >= 1; got {steps}")
        if len(shape) != 3 or min(shape) < 1:
            raise DiffusionInputError(f"shape must be (T, H, W) in latent units, all >= 1; got {shape}")
        T, H, W = (int(s) for s in shape)
        B = text_emb.shape[0] if torch.is_tensor(text_emb) and text_emb.dim() == 3 else 0
        self.check_text(text_emb, text_mask)
        dev, C = self.device, cfg.latent_channels
        emb, mask = self._text(text_emb, text_mask)
        if guidance != 1.0:
            if neg_text_emb is not None:
                self.check_text(neg_text_emb, neg_text_mask, B, "neg_text_emb")
                uncond = self._text(neg_text_emb, neg_text_mask)
            else:
                uncond = self.null_text_batch(B)
        else:
            uncond = None
        k = 0
        if cond is not None:
            self.check_latents(cond, "cond")
            k = cond.shape[2]
            if cond.shape[0] != B or tuple(cond.shape[3:]) != (H, W):
                raise DiffusionInputError(f"cond {tuple(cond.shape)} must be [B={B}, C, k, H={H}, W={W}] to match "
                                          "the prompt batch and the requested shape")
            if k >= T:
                raise DiffusionInputError(f"cond has {k} latent frames but shape asks for T={T}: nothing left to "
                                          "generate; ask for more frames")
            if k % cfg.patch[0]:
                raise DiffusionInputError(f"cond must span whole temporal patches ({cfg.patch[0]} latent frames)")
        gen = torch.Generator("cpu").manual_seed(int(seed))  # noise drawn on CPU: same seed, same sample anywhere
        x = torch.randn(B, C, T, H, W, generator=gen, device="cpu").to(dev)
        tf = torch.empty(B, T, device=dev)
        if k:
            c = self.normalize(cond.to(dev, torch.float32))
            c_eps = torch.randn(c.shape, generator=gen, device="cpu").to(dev)
            c_in = c if cond_noise == 0 else (1 - cond_noise) * c + cond_noise * c_eps
        ts = torch.linspace(1.0, 0.0, steps + 1)
        ts = shift * ts / (1 + (shift - 1) * ts)  # shift > 1 spends more steps at high noise

        def v_at(x, t):
            tf.fill_(t)
            if k:
                x = x.clone()
                x[:, :, :k] = c_in  # cond frames: clean (or lightly noised) at their own timestep
                tf[:, :k] = cond_noise
            return self._velocity(x, tf, emb, mask, uncond, guidance)

        was_training = self.training
        self.eval()
        try:
            for i in range(steps):
                t, tn = float(ts[i]), float(ts[i + 1])
                v = v_at(x, t)
                xn = x + (tn - t) * v
                if sampler == "heun" and tn > 0:
                    xn = x + (tn - t) * 0.5 * (v + v_at(xn, tn))
                x = xn
                if progress is not None:
                    progress(i + 1, steps)
        finally:
            self.train(was_training)
        out = self.denormalize(x)
        if k:
            out[:, :, :k] = cond.to(out.device, out.dtype)  # the condition comes back exactly as given
        return out


def _pad_text(emb: torch.Tensor, mask: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    if emb.shape[1] == L:
        return emb, mask
    n = L - emb.shape[1]
    return F.pad(emb, (0, 0, 0, n)), F.pad(mask, (0, n), value=False)


def build_model(cfg: Config | dict) -> DiffusionWFM:
    if isinstance(cfg, dict):
        cfg = Config(**cfg)
    return DiffusionWFM(cfg)


@torch.no_grad()
def estimate_latent_stats(latents: torch.Tensor | Iterable[torch.Tensor], per_channel: bool = True,
                          max_batches: int = 64) -> dict[str, float | list[float]]:
    """latent_shift (mean) and latent_scale (1/std) over training latents [B, C, T, H, W].

    Run once on the first batches of the training set, before training; pass the result as config
    overrides (build_model(preset, **stats)) so the checkpoint carries them.
    """
    it = [latents] if torch.is_tensor(latents) else latents
    s = s2 = n = None
    for i, x in enumerate(it):
        if i >= max_batches:
            break
        if x.dim() != 5:
            raise DiffusionInputError(f"latents must be [B, C, T, H, W]; got {tuple(x.shape)}")
        x = x.double().transpose(0, 1).reshape(x.shape[1], -1)  # [C, everything else]
        if not per_channel:
            x = x.reshape(1, -1)
        s = x.sum(1) if s is None else s + x.sum(1)
        s2 = (x * x).sum(1) if s2 is None else s2 + (x * x).sum(1)
        n = x.shape[1] if n is None else n + x.shape[1]
    if not n:
        raise DiffusionInputError("no latents to estimate statistics from")
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(1e-12).sqrt()
    scale = (1.0 / std.clamp_min(1e-3))
    if per_channel:
        return {"latent_shift": [float(v) for v in mean], "latent_scale": [float(v) for v in scale]}
    return {"latent_shift": float(mean[0]), "latent_scale": float(scale[0])}
