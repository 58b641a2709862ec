"""World models: diffusion (DiT over CV latents) and autoregressive (transformer over DV tokens).

Kept light on purpose (no torch import here): `wfm --help` stays fast. Import what you need:
  wfm_platform.models.presets   list_presets, load_preset, build_model, count_params, family_module
  wfm_platform.models.text      load_text_encoder, MiniLMTextEncoder, T5TextEncoder
  wfm_platform.models.diffusion / .autoregressive   Config, build_model (contract: models/base.py)
"""

FAMILIES = ("diffusion", "autoregressive")
