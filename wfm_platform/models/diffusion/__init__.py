"""Diffusion world model (Text2World, Video2World): a DiT over CV latents, rectified flow, CFG.

`Config` and `build_model(cfg)` are the family contract (wfm_platform/models/base.py); the rest is in
model.py.
"""

from .model import Config, DiffusionInputError, DiffusionWFM, build_model, estimate_latent_stats

family = "diffusion"

__all__ = ["Config", "DiffusionInputError", "DiffusionWFM", "build_model", "estimate_latent_stats", "family"]
