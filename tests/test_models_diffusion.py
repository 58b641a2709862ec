"""Diffusion world model (wfm_platform/models/diffusion): shapes, objective, CFG, Video2World, sampling, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wfm_platform.models.diffusion import Config, DiffusionInputError, build_model, estimate_latent_stats

TINY = {"dim": 64, "depth": 2, "heads": 4, "adaln_lora_dim": None, "text_dim": 24}


def _randomize(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """adaLN-zero and the zero-initialised output make a fresh model ignore its inputs; wake every path up."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 0 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def _text(B: int, L: int = 5, D: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(B, L, D, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, L - 2:] = False  # ragged prompts
    return emb, mask


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for tiny tensors


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return _randomize(build_model(Config(**TINY))).eval()


@pytest.mark.parametrize("thw", [(1, 1, 1), (3, 5, 7), (2, 9, 4), (5, 2, 3)])
def test_shapes_any_latent_size(model, thw):
    T, H, W = thw
    x = torch.randn(2, 16, T, H, W)
    emb, mask = _text(2)
    v = model(x, torch.rand(2), emb, mask)
    assert v.shape == x.shape and torch.isfinite(v).all()
    loss, logs = model.training_loss({"latents": x, "text_emb": emb, "text_mask": mask})
    assert loss.dim() == 0 and torch.isfinite(loss) and logs["loss"] > 0
    out = model.generate(emb, mask, shape=thw, steps=2, guidance=2.0)
    assert out.shape == (2, 16, T, H, W) and torch.isfinite(out).all()


def test_temporal_patch_and_lora_variant():
    m = _randomize(build_model(Config(**{**TINY, "patch": (2, 2, 2), "adaln_lora_dim": 8})))
    assert m.shared_adaln is not None and isinstance(m.blocks, torch.nn.ModuleList) and len(m.blocks) == 2
    emb, mask = _text(1)
    out = m.generate(emb[:1], mask[:1], shape=(3, 3, 5), steps=2, guidance=1.0)
    assert out.shape == (1, 16, 3, 3, 5)
    with pytest.raises(DiffusionInputError, match="whole temporal patches"):
        m.generate(emb[:1], mask[:1], shape=(4, 4, 4), cond=torch.zeros(1, 16, 1, 4, 4), steps=1)


def test_rope_depends_on_position_and_is_relative():
    from wfm_platform.models.diffusion.model import apply_rope, rope_3d

    cos, sin = rope_3d((3, 4, 5), 32, 10000.0, "cpu")
    assert cos.shape == (60, 16)
    q = torch.randn(1, 1, 1, 32).expand(1, 1, 60, 32)
    k = torch.randn(1, 1, 1, 32).expand(1, 1, 60, 32)
    rq, rk = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    assert torch.allclose(rq.norm(dim=-1), q.norm(dim=-1), atol=1e-5)  # a rotation
    s = (rq[0, 0] @ rk[0, 0].T)  # scores depend on the offset, not the absolute position

    def idx(t, h, w):
        return (t * 4 + h) * 5 + w

    assert torch.allclose(s[idx(0, 0, 0), idx(1, 1, 1)], s[idx(1, 2, 3), idx(2, 3, 4)], atol=1e-4)
    assert not torch.allclose(s[idx(0, 0, 0), idx(1, 1, 1)], s[idx(0, 0, 0), idx(2, 1, 1)], atol=1e-4)


def test_cfg_dropout_replaces_text_by_learned_null(model):
    emb, mask = _text(2)
    e, m = model._text(emb, mask, torch.tensor([True, False]))
    assert torch.equal(e[0], model.null_text[0].expand(5, -1)) and m[0].tolist() == [True, False, False, False, False]
    assert torch.equal(e[1], emb[1]) and torch.equal(m[1], mask[1])
    # the null text padded to L tokens attends exactly like the one-token null (masked slots do not count)
    x, t = torch.randn(1, 16, 2, 2, 2), torch.rand(1)
    n1, nm1 = model.null_text_batch(1)
    assert torch.allclose(model(x, t, e[:1], m[:1]), model(x, t, n1, nm1), atol=1e-5)

    x = torch.randn(4, 16, 2, 3, 3)
    emb_a, mask_a = _text(4, seed=1)
    emb_b, mask_b = _text(4, seed=2)

    def loss(m, e, k):
        torch.manual_seed(7)
        return m.training_loss({"latents": x, "text_emb": e, "text_mask": k})[0].item()

    always = _randomize(build_model(Config(**TINY, cfg_dropout=1.0)))
    assert loss(always, emb_a, mask_a) == pytest.approx(loss(always, emb_b, mask_b), abs=1e-6)  # text ignored
    never = _randomize(build_model(Config(**TINY, cfg_dropout=0.0)))
    assert abs(loss(never, emb_a, mask_a) - loss(never, emb_b, mask_b)) > 1e-4  # text used
    # the share of dropped samples follows cfg_dropout
    share = _randomize(build_model(Config(**TINY, cfg_dropout=0.1)))
    torch.manual_seed(0)
    big = {"latents": torch.randn(2000, 16, 1, 1, 1), **dict(zip(("text_emb", "text_mask"), _text(2000)))}
    assert 0.07 < share.training_loss(big)[1]["text_dropped"] < 0.13
    # an empty prompt (no real token) is the null text, not a NaN
    e0, m0 = emb[:1], torch.zeros(1, 5, dtype=torch.bool)
    assert torch.isfinite(model(torch.randn(1, 16, 1, 2, 2), torch.rand(1), *model._text(e0, m0))).all()


def _real_batch(samples_dir, frames: int = 9, size: int = 64):
    """Latents of real footage (bikes.mp4) through the tiny CV tokenizer, and MiniLM embeddings of a caption."""
    from wfm_platform.models.text import MiniLMTextEncoder
    from wfm_platform.tokenizer.model import frames_to_tensor
    from wfm_platform.tokenizer.train import load_tokenizer
    from wfm_platform.video import iter_frames

    fr = np.stack([f for _, f in iter_frames(samples_dir / "bikes.mp4", start=0, end=frames, size=(size, size))])
    tok = load_tokenizer(name="cv8x8x8", preset="tiny")
    with torch.no_grad():
        lat = tok.encode(frames_to_tensor(fr))
    emb, mask = MiniLMTextEncoder().encode(["cyclists ride mountain bikes down a dirt trail"])
    return lat, emb, mask


def test_overfits_one_real_batch(samples_dir):
    lat, emb, mask = _real_batch(samples_dir)
    assert lat.shape[:2] == (1, 16) and lat.shape[3:] == (8, 8) and lat.shape[2] >= 2
    stats = estimate_latent_stats(lat)
    torch.manual_seed(0)
    m = build_model(Config(dim=128, depth=4, heads=4, adaln_lora_dim=None, cfg_dropout=0.0, video2world_prob=0.0,
                           **stats))
    batch = {"latents": lat.repeat(2, 1, 1, 1, 1), "text_emb": emb.repeat(2, 1, 1), "text_mask": mask.repeat(2, 1)}

    def eval_loss():  # fixed noise and timesteps: the drop is learning, not luck
        torch.manual_seed(1234)
        with torch.no_grad():
            return float(np.mean([m.training_loss(batch)[0].item() for _ in range(8)]))

    before = eval_loss()
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.0)
    m.train()
    for _ in range(100):
        loss, _ = m.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert before > 1.5  # |eps - x0|^2 ~ 2 for unit-variance latents and noise
    assert after < 0.3 * before, (before, after)  # measured ~0.13


def test_video2world_keeps_cond_exactly(model):
    emb, mask = _text(2)
    cond = torch.randn(2, 16, 2, 4, 6) * 3 + 1
    out = model.generate(emb, mask, shape=(5, 4, 6), cond=cond, steps=3, guidance=2.0)
    assert torch.equal(out[:, :, :2], cond)
    other = model.generate(emb, mask, shape=(5, 4, 6), cond=-cond, steps=3, guidance=2.0)
    assert not torch.allclose(out[:, :, 2:], other[:, :, 2:], atol=1e-3)  # the continuation reads the condition
    # noise-augmented conditioning still returns the clean condition
    aug = model.generate(emb, mask, shape=(5, 4, 6), cond=cond, steps=2, cond_noise=0.05)
    assert torch.equal(aug[:, :, :2], cond)


def test_video2world_training_masks_cond_frames():
    m = _randomize(build_model(Config(**TINY, video2world_prob=1.0, cfg_dropout=0.0)))
    x = torch.randn(3, 16, 4, 2, 2)
    emb, mask = _text(3)
    torch.manual_seed(3)
    _, logs = m.training_loss({"latents": x, "text_emb": emb, "text_mask": mask})
    assert 0 < logs["cond_frames"] < 1  # 1..T-1 of the T frames are conditioning
    # a single latent frame has nothing to continue: plain Text2World
    torch.manual_seed(3)
    _, logs1 = m.training_loss({"latents": x[:, :, :1], "text_emb": emb, "text_mask": mask})
    assert logs1["cond_frames"] == 0


def test_seed_determinism(model):
    emb, mask = _text(2)
    kw = {"shape": (2, 3, 3), "steps": 3, "guidance": 3.0}
    a, b = model.generate(emb, mask, seed=5, **kw), model.generate(emb, mask, seed=5, **kw)
    assert torch.equal(a, b)
    assert not torch.allclose(a, model.generate(emb, mask, seed=6, **kw))
    h = model.generate(emb, mask, seed=5, sampler="heun", **kw)
    assert h.shape == a.shape and not torch.allclose(a, h)


def test_guidance(model):
    emb, mask = _text(2)
    steps, shape = 4, (2, 3, 3)
    g1 = model.generate(emb, mask, shape=shape, steps=steps, guidance=1.0, seed=1)
    # guidance 1 is the plain text-conditioned Euler sampler, written out by hand
    x = torch.randn(2, 16, *shape, generator=torch.Generator().manual_seed(1))
    ts = torch.linspace(1, 0, steps + 1)
    with torch.no_grad():
        for i in range(steps):
            x = x + (ts[i + 1] - ts[i]) * model(x, torch.full((2,), float(ts[i])), emb, mask)
    assert torch.allclose(g1, x, atol=1e-5)
    # the CFG formula at guidance 1 (both branches computed) agrees with the one-pass shortcut
    xt, tf = torch.randn(2, 16, *shape), torch.full((2, 2), 0.5)
    e, m = model._text(emb, mask)
    via_cfg = model._velocity(xt, tf, e, m, model.null_text_batch(2), 1.0 + 1e-12)
    assert torch.allclose(via_cfg, model(xt, tf, e, m), atol=1e-4)
    # guidance 0 is unconditional: the prompt does not matter; guidance 5 differs from 1
    emb2, mask2 = _text(2, seed=9)
    g0a = model.generate(emb, mask, shape=shape, steps=steps, guidance=0.0, seed=1)
    g0b = model.generate(emb2, mask2, shape=shape, steps=steps, guidance=0.0, seed=1)
    assert torch.allclose(g0a, g0b, atol=1e-5)
    assert not torch.allclose(g1, model.generate(emb, mask, shape=shape, steps=steps, guidance=5.0, seed=1), atol=1e-3)
    # a negative prompt replaces the null text on the unconditional branch
    neg = model.generate(emb, mask, shape=shape, steps=steps, guidance=3.0, seed=1, neg_text_emb=emb2,
                         neg_text_mask=mask2)
    assert not torch.allclose(neg, model.generate(emb, mask, shape=shape, steps=steps, guidance=3.0, seed=1), atol=1e-4)


def test_progress_callback(model):
    emb, mask = _text(1)
    seen = []
    model.generate(emb[:1], mask[:1], shape=(1, 2, 2), steps=5, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 5) for i in range(1, 6)]


def test_activation_checkpointing_same_loss_and_grads():
    torch.manual_seed(0)
    m = _randomize(build_model(Config(**TINY))).train()
    x = torch.randn(2, 16, 2, 3, 3)
    emb, mask = _text(2)

    def run():
        m.zero_grad()
        torch.manual_seed(1)
        loss, _ = m.training_loss({"latents": x, "text_emb": emb, "text_mask": mask})
        loss.backward()
        return loss.item(), m.blocks[0].attn.q.weight.grad.clone()

    l0, g0 = run()
    m.enable_activation_checkpointing(True)
    l1, g1 = run()
    assert l0 == pytest.approx(l1, rel=1e-6) and torch.allclose(g0, g1, atol=1e-6)


def test_meta_device_build():
    with torch.device("meta"):
        m = build_model(Config(dim=256, depth=3, heads=4))
    assert all(p.is_meta for p in m.parameters()) and len(m.blocks) == 3
    assert m.family == "diffusion" and m.config.depth == 3


def test_latent_normalisation():
    g = torch.Generator().manual_seed(0)
    mean = torch.linspace(-2, 2, 16).view(1, 16, 1, 1, 1)
    std = torch.linspace(0.5, 3, 16).view(1, 16, 1, 1, 1)
    lat = torch.randn(8, 16, 3, 8, 8, generator=g) * std + mean
    stats = estimate_latent_stats([lat[:4], lat[4:]])
    assert np.allclose(stats["latent_shift"], mean.flatten().numpy(), atol=0.15)
    assert np.allclose(1 / np.array(stats["latent_scale"]), std.flatten().numpy(), rtol=0.1)
    m = build_model(Config(**TINY, **stats))
    z = m.normalize(lat)
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05
    assert torch.allclose(m.denormalize(z), lat, atol=1e-4)
    scalar = estimate_latent_stats(lat, per_channel=False)
    assert isinstance(scalar["latent_scale"], float)
    with pytest.raises(ValueError, match="latent_shift has 3 values"):
        Config(latent_shift=[0.0, 1.0, 2.0])


def test_bad_inputs_say_what_is_wrong(model):
    emb, mask = _text(2)
    ok = torch.randn(2, 16, 2, 4, 4)

    def loss(**kw):
        return model.training_loss({"latents": ok, "text_emb": emb, "text_mask": mask, **kw})

    with pytest.raises(DiffusionInputError, match=r"5-D tensor \[B, C, T, H, W\]"):
        loss(latents=torch.randn(16, 2, 4, 4))
    with pytest.raises(DiffusionInputError, match="8 channels but the model expects latent_channels=16"):
        loss(latents=torch.randn(2, 8, 2, 4, 4))
    nan = ok.clone()
    nan[0, 3, 1, 2, 2] = float("nan")
    with pytest.raises(DiffusionInputError, match="1 NaN/Inf"):
        loss(latents=nan)
    with pytest.raises(DiffusionInputError, match="floating point"):
        loss(latents=torch.zeros(2, 16, 2, 4, 4, dtype=torch.long))
    with pytest.raises(DiffusionInputError, match="width 384 but the model was built for text_dim=24"):
        loss(text_emb=torch.randn(2, 5, 384))
    with pytest.raises(DiffusionInputError, match=r"mask must be bool \[B, L\]"):
        loss(text_mask=mask[:, :3])
    with pytest.raises(DiffusionInputError, match="batch 2 but the latents have batch 3"):
        loss(latents=torch.randn(3, 16, 2, 4, 4))
    with pytest.raises(DiffusionInputError, match="no 'latents'"):
        model.training_loss({"tokens": torch.zeros(2, 2, 4, 4, dtype=torch.long), "text_emb": emb, "text_mask": mask})
    with pytest.raises(DiffusionInputError, match="nothing left to generate"):
        model.generate(emb, mask, shape=(2, 4, 4), cond=ok, steps=1)
    with pytest.raises(DiffusionInputError, match="must be"):
        model.generate(emb, mask, shape=(4, 4, 4), cond=torch.randn(2, 16, 1, 5, 4), steps=1)
    with pytest.raises(DiffusionInputError, match="sampler"):
        model.generate(emb, mask, shape=(1, 2, 2), sampler="ddim")
    with pytest.raises(DiffusionInputError, match=r"\(T, H, W\)"):
        model.generate(emb, mask, shape=(2, 0, 4))
    with pytest.raises(DiffusionInputError, match=r"unknown sampling option\(s\) \['guidence'\]"):
        model.generate(emb, mask, shape=(1, 2, 2), guidence=3.0)
    with pytest.raises(ValueError, match="not divisible by heads"):
        Config(dim=100, heads=3)


def test_every_parameter_gets_a_gradient_in_training():
    # DDP (without find_unused_parameters) fails on parameters outside the graph: null_text included
    m = _randomize(build_model(Config(**{**TINY, "adaln_lora_dim": 4}, cfg_dropout=0.0))).train()
    emb, mask = _text(2)
    loss, _ = m.training_loss({"latents": torch.randn(2, 16, 2, 2, 2), "text_emb": emb, "text_mask": mask})
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing, missing


@pytest.mark.gpu
def test_gpu_bf16_720p_generation_and_training_step():
    """diffusion-small on CUDA: bf16 sampling at 57 frames 720p (8x90x160 latents) and a bf16 training step."""
    from wfm_platform.models.presets import build_model as build_preset

    with torch.device("cuda"):
        m = build_preset("diffusion-small")
    _randomize(m.cpu()).cuda()
    emb, mask = torch.randn(1, 12, 384, device="cuda"), torch.ones(1, 12, dtype=torch.bool, device="cuda")
    cond = torch.randn(1, 16, 2, 90, 160, device="cuda")
    mb = m.to(torch.bfloat16).eval()
    with torch.device("cuda"):  # sampling noise comes from a CPU generator whatever the default device
        out = mb.generate(emb, mask, shape=(8, 90, 160), cond=cond, steps=2, guidance=7.0, cond_noise=0.01)
    assert out.shape == (1, 16, 8, 90, 160) and torch.isfinite(out).all() and torch.equal(out[:, :, :2], cond)
    m = m.float().train()
    m.enable_activation_checkpointing(True)
    batch = {"latents": torch.randn(2, 16, 3, 30, 40, device="cuda"), "text_emb": emb.expand(2, -1, -1),
             "text_mask": mask.expand(2, -1)}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = m.training_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
