"""FSDP2 in one process: the sharded training path (fully_shard per block, full state-dict gathering,
optimizer state loaded back for resume) gives the same losses and weights as plain training.

Gloo on CPU runs everywhere; NCCL on CUDA is the GPU check (a lent machine has one GPU, and NCCL refuses
two ranks on one GPU, so one rank is the most it can show there). Two Gloo processes through the whole
trainer are in test_models_train.py.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from wfm_platform.models.presets import family_module
from wfm_platform.models.train import (
    _full_state,
    _load_optimizer,
    _LossModule,
    _wrap,
    load_train_config,
    preset_config,
)
from wfm_platform.tokenizer.train import Dist

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "train" / "world_tiny.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for tiny tensors
CASES = [("diffusion", "diffusion-tiny", {}), ("autoregressive", "ar-tiny", {"depth": 2, "medusa_heads": 1})]


def _batch(family: str, mcfg, device: str, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    text = {"text_emb": torch.randn(2, 6, mcfg.text_dim, generator=g),
            "text_mask": torch.ones(2, 6, dtype=torch.bool)}
    if family == "diffusion":
        b = {"latents": torch.randn(2, mcfg.latent_channels, 2, 4, 4, generator=g), **text}
    else:
        b = {"tokens": torch.randint(0, mcfg.vocab_size, (2, 2, 4, 4), generator=g), **text}
    return {k: v.to(device) for k, v in b.items()}


def _step(call, root, opt, batch, seed: int, device: str) -> float:
    torch.manual_seed(seed)  # timestep / noise / caption-dropout draws: the same for both runs
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        loss, _ = call(batch)
    opt.zero_grad(set_to_none=True)
    loss.float().backward()
    torch.nn.utils.clip_grad_norm_(root.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


# an FSDP unit that returns a view warns, and an in-place op on that view would skip its all-gather
@pytest.mark.filterwarnings("error:FSDP2-wrapped module.*returned a view tensor:UserWarning")
@pytest.mark.parametrize("backend", ["gloo", pytest.param("nccl", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("family,preset,overrides", CASES, ids=[c[0] for c in CASES])
def test_fsdp_one_process_matches_plain_training_and_resumes(backend, family, preset, overrides, tmp_path):
    device = "cuda" if backend == "nccl" else "cpu"
    dist.init_process_group(backend, init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        d = Dist(0, 1, 0, torch.device(device))
        cfg = load_train_config(CONFIG, strategy="fsdp")
        mcfg, _ = preset_config(family, preset, overrides)
        torch.manual_seed(0)
        fresh = family_module(family).build_model(mcfg)
        plain, sharded, resumed = (copy.deepcopy(fresh).to(device).train() for _ in range(3))

        root_p = _LossModule(plain)
        root_s, call_s = _wrap(sharded, cfg, d)
        assert all(hasattr(p, "full_tensor") for p in root_s.parameters())  # DTensors: FSDP is on
        opt_p = torch.optim.AdamW(root_p.parameters(), lr=1e-3)
        opt_s = torch.optim.AdamW(root_s.parameters(), lr=1e-3)
        tol = {"rtol": 2e-2, "atol": 2e-3} if device == "cuda" else {"rtol": 1e-5, "atol": 1e-6}
        for i in range(3):
            b = _batch(family, mcfg, device, i)
            lp = _step(root_p, root_p, opt_p, b, 100 + i, device)
            ls = _step(call_s, root_s, opt_s, b, 100 + i, device)
            torch.testing.assert_close(ls, lp, **tol)

        # the checkpoint path: full (unsharded) weights and a name-keyed optimizer state
        msd, osd, fmt = _full_state(root_s, opt_s, cfg, d)
        assert fmt == "full" and msd.keys() == plain.state_dict().keys()
        for k, v in plain.state_dict().items():
            torch.testing.assert_close(msd[k].to(device), v, **tol)

        # resume: weights into a fresh model before sharding (as the trainer does), then the optimizer state
        resumed.load_state_dict(msd)
        root_r, call_r = _wrap(resumed, cfg, d)
        opt_r = torch.optim.AdamW(root_r.parameters(), lr=1e-3)
        _load_optimizer(root_r, opt_r, {"optimizer": osd, "optimizer_format": fmt}, cfg, d)
        b = _batch(family, mcfg, device, 9)
        lp = _step(root_p, root_p, opt_p, b, 200, device)
        torch.testing.assert_close(_step(call_r, root_r, opt_r, b, 200, device), lp, **tol)
        after, _, _ = _full_state(root_r, opt_r, cfg, d)
        for k, v in plain.state_dict().items():
            torch.testing.assert_close(after[k].to(device), v, **tol)
    finally:
        dist.destroy_process_group()
