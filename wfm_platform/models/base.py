"""The contract every world-model family implements, so training, generation, presets and the Dagster
assets treat diffusion and autoregressive models alike.

Data: a training batch is a dict of tensors
  "latents":   float [B, C, T, H, W]   continuous tokenizer latents (diffusion family)
  "tokens":    long  [B, T, H, W]      discrete tokenizer indices (autoregressive family)
  "text_emb":  float [B, L, D_text]    text-encoder output (per-token embeddings; L may be 1)
  "text_mask": bool  [B, L]            True where text_emb is a real token
A family reads the key it needs and ignores the other.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class WorldModel(Protocol):
    family: str  # "diffusion" | "autoregressive"
    config: Any  # the family's pydantic config (the preset, with overrides applied)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss to minimise and a few floats worth logging (e.g. {"loss": .., "acc": ..})."""
        ...

    @torch.no_grad()
    def generate(self, text_emb: torch.Tensor, text_mask: torch.Tensor, *, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None, seed: int = 0, progress=None,
                 **sampling: Any) -> torch.Tensor:
        """New latents [B, C, T, H, W] (diffusion) or tokens [B, T, H, W] (autoregressive).

        shape = (T, H, W) in latent/token units. cond: latents/tokens of the conditioning frames
        (Video2World) occupying the first cond.shape[2] / cond.shape[1] latent frames, kept as given.
        sampling: family-specific knobs (steps, guidance / temperature, top_p, medusa, ...).
        progress: optional callable(done, total) for a progress bar.
        """
        ...
