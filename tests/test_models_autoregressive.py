"""Autoregressive world model: shapes, causality, KV cache, sampling, Medusa exactness and distribution,
text conditioning, load_pretrained, presets, bad input. Tiny models on CPU (float64 where exact
equality is asserted, so no near-tie can flip an argmax)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import chisquare

from wfm_platform.models import autoregressive as ar
from wfm_platform.models.autoregressive import Config, TokenInputError, build_model, load_pretrained

ROOT = Path(__file__).resolve().parents[1]
HW = (4, 5)


def tiny(**kw) -> ar.ARWorldModel:
    torch.manual_seed(kw.pop("seed", 0))
    base = {"dim": 48, "depth": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 40, "mlp_hidden": 96, "text_dim": 16}
    base.update(kw)
    return build_model(Config(**base)).double().eval()


def text(b: int = 2, L: int = 6, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(b, L, d, generator=g, dtype=torch.float64)
    mask = torch.ones(b, L, dtype=torch.bool)
    mask[-1, L // 2:] = False
    return emb, mask


def logits_of(m, tokens: torch.Tensor, txt=None) -> torch.Tensor:
    b, _, h, w = tokens.shape
    seq = tokens.reshape(b, -1)
    inp = torch.cat([torch.full((b, 1), m.config.bos_id), seq[:, :-1]], dim=1)
    return m.lm_head(m(inp, hw=(h, w), text=txt))


def structured_tokens(b: int, t: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Video-like tokens: a static background shifted by one column per frame (camera pan) with a few
    random changes, so the next tokens are predictable from the past."""
    g = torch.Generator().manual_seed(seed)
    bg = torch.randint(0, vocab, (b, HW[0], HW[1] + t), generator=g)
    frames = torch.stack([bg[:, :, i:i + HW[1]] for i in range(t)], dim=1)
    noise = torch.rand(frames.shape, generator=g) < 0.05
    return torch.where(noise, torch.randint(0, vocab, frames.shape, generator=g), frames)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for tiny tensors


@pytest.fixture(scope="module")
def trained(one_thread):
    """A tiny model with 3 Medusa heads overfit on structured tokens (the heads must have signal)."""
    torch.manual_seed(0)
    m = build_model(Config(dim=64, depth=2, n_heads=4, vocab_size=32, mlp_hidden=128, medusa_heads=3,
                           medusa_loss_weight=0.5)).double()
    data = structured_tokens(8, 4, 32)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    m.train()
    for _ in range(120):
        loss, logs = m.training_loss({"tokens": data})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs)
    return m.eval(), data, losses


# ------------------------------------------------------------------------------------------ basics

def test_shapes_and_logs():
    m = tiny(cross_attn=True, medusa_heads=2)
    tokens = torch.randint(0, 40, (2, 3, *HW))
    emb, mask = text()
    loss, logs = m.training_loss({"tokens": tokens, "text_emb": emb, "text_mask": mask})
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert {"loss", "ce", "acc", "medusa1_acc", "medusa2_acc"} <= set(logs)
    assert logs["ce"] == pytest.approx(np.log(40), rel=0.1)  # untrained: ~uniform over the vocabulary
    assert logits_of(m, tokens).shape == (2, 60, 40)
    out = m.generate(emb, mask, shape=(2, *HW), seed=0, temperature=1.0)
    assert out.shape == (2, 2, *HW) and out.dtype == torch.long
    assert int(out.min()) >= 0 and int(out.max()) < 40
    tied = tiny(tie_embeddings=True, medusa_heads=1)
    assert torch.isfinite(tied.training_loss({"tokens": tokens})[0])
    assert sum(p.numel() for p in tied.parameters()) < sum(p.numel() for p in tiny(medusa_heads=1).parameters())


def test_causality():
    m = tiny()
    a = torch.randint(0, 40, (1, 3, *HW))
    b = a.clone()
    b.view(-1)[30:] = (b.view(-1)[30:] + 7) % 40  # change every token from flat index 30 on
    la, lb = logits_of(m, a), logits_of(m, b)
    # slot j predicts token j from tokens < j: slots 0..30 only saw tokens 0..29
    assert torch.equal(la[:, :31], lb[:, :31])
    assert not torch.allclose(la[:, 31:], lb[:, 31:])


@pytest.mark.parametrize("cross", [False, True])
def test_kv_cache_matches_full_forward(cross):
    m = tiny(cross_attn=cross)
    tokens = torch.randint(0, 40, (2, 3, *HW))
    txt = text() if cross else None
    seq = torch.cat([torch.full((2, 1), m.config.bos_id), tokens.reshape(2, -1)], dim=1)
    full = m.lm_head(m(seq, hw=HW, text=txt))
    cache = m.new_cache(2, seq.shape[1])
    parts, pos = [], 0
    for n in [7, 1, 1, 5, 1, 3] + [1] * (seq.shape[1] - 18):  # prefill, single steps, verify-sized chunks
        parts.append(m.lm_head(m(seq[:, pos:pos + n], hw=HW, start=pos, text=txt, cache=cache)))
        pos += n
    assert pos == seq.shape[1]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-9, atol=1e-9)
    # a rolled-back cache continues exactly as if the rolled-back tokens had never been fed
    cache.rollback(10)
    again = m.lm_head(m(seq[:, 10:12], hw=HW, start=10, text=txt, cache=cache))
    torch.testing.assert_close(again, full[:, 10:12], rtol=1e-9, atol=1e-9)


def test_video2world_keeps_cond_and_seed_determinism():
    m = tiny(cross_attn=True)
    emb, mask = text()
    cond = torch.randint(0, 40, (2, 1, *HW))
    kw = {"shape": (3, *HW), "cond": cond, "temperature": 1.0, "top_p": 0.95}
    a = m.generate(emb, mask, seed=5, **kw)
    b = m.generate(emb, mask, seed=5, **kw)
    c = m.generate(emb, mask, seed=6, **kw)
    assert torch.equal(a[:, :1], cond)
    assert torch.equal(a, b)
    assert not torch.equal(a[:, 1:], c[:, 1:])
    med = m.generate(emb, mask, seed=5, medusa=False, **kw)
    assert torch.equal(med, a)


def test_tiny_top_p_is_greedy_and_progress():
    m = tiny()
    calls = []
    greedy = m.generate(None, None, shape=(2, *HW), batch_size=2, temperature=0)
    nucleus = m.generate(None, None, shape=(2, *HW), batch_size=2, temperature=1.0, top_p=1e-6, seed=9,
                         progress=lambda d, n: calls.append((d, n)))
    assert torch.equal(greedy, nucleus)
    assert calls[-1] == (40, 40) and len(calls) == 40
    # top_k=1 is greedy too
    assert torch.equal(greedy, m.generate(None, None, shape=(2, *HW), batch_size=2, temperature=1.0, top_k=1))


def test_filter_probs():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = ar.filter_probs(logits, 1.0, top_p=0.7)
    full = logits.softmax(-1)
    assert p[0, 2] == 0 and p[0, 3] == 0  # 0.64 + 0.24 >= 0.7: the nucleus is the top two
    torch.testing.assert_close(p[0, :2], full[0, :2] / full[0, :2].sum())
    assert torch.equal(ar.filter_probs(logits, 0.0), torch.tensor([[1.0, 0, 0, 0]]))
    assert (ar.filter_probs(logits, 1.0, top_k=3)[0, 3] == 0)


def test_overfit_loss_drops(trained):
    _, _, logs = trained
    assert logs[-1]["ce"] < 0.3 * logs[0]["ce"], (logs[0], logs[-1])
    assert logs[-1]["acc"] > 0.8
    assert logs[-1]["medusa1_acc"] > logs[0]["medusa1_acc"] + 0.3  # the heads learned too


def test_activation_checkpointing_same_gradients():
    m = tiny(cross_attn=True)
    m.train()
    batch = {"tokens": torch.randint(0, 40, (2, 2, *HW)), "text_emb": text()[0], "text_mask": text()[1]}
    m.training_loss(batch)[0].backward()
    g0 = [p.grad.clone() for p in m.parameters() if p.grad is not None]
    m.zero_grad()
    m.enable_activation_checkpointing(True)
    m.training_loss(batch)[0].backward()
    g1 = [p.grad.clone() for p in m.parameters() if p.grad is not None]
    assert len(g0) == len(g1)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b)


def test_builds_on_meta_device():
    with torch.device("meta"):
        m = build_model(Config(dim=256, depth=2, n_heads=4, cross_attn=True, medusa_heads=2))
    assert all(p.is_meta for p in m.parameters())
    assert isinstance(m.blocks, torch.nn.ModuleList) and len(m.blocks) == 2
    assert m.family == "autoregressive"


# ------------------------------------------------------------------------------------------ text

def test_text_conditioning():
    m = tiny(cross_attn=True)
    for blk in m.blocks:  # give the zero-initialised cross-attention some weight
        torch.nn.init.normal_(blk.cross.wo.weight, std=0.2)
    tokens = torch.randint(0, 40, (2, 2, *HW))
    emb, mask = text()
    with_text = logits_of(m, tokens, (emb, mask))
    other = logits_of(m, tokens, (emb.flip(0), mask))
    assert not torch.allclose(with_text, other)
    # all-masked text == no text at all: that is "text dropped" (pre-training)
    none_mask = torch.zeros_like(mask)
    torch.testing.assert_close(logits_of(m, tokens, (emb, none_mask)), logits_of(m, tokens, None))
    # dropping with probability 1 during training gives the unconditional loss
    m.config.text_dropout = 1.0
    m.train()
    l_drop = m.training_loss({"tokens": tokens, "text_emb": emb, "text_mask": mask})[1]["ce"]
    l_none = m.training_loss({"tokens": tokens})[1]["ce"]
    assert l_drop == pytest.approx(l_none)


def test_load_pretrained_adds_cross_attention():
    pre = tiny(cross_attn=False, seed=1)
    post = tiny(cross_attn=True, medusa_heads=2, seed=2)
    report = load_pretrained(post, pre.state_dict())
    assert report["new"] and all((".cross" in k) or k.startswith("medusa.") for k in report["new"])
    assert report["dropped"] == []
    tokens = torch.randint(0, 40, (2, 2, *HW))
    emb, mask = text()
    # the fresh cross-attention outputs zero: the post-trainable model starts as the pre-trained one
    torch.testing.assert_close(logits_of(post, tokens, (emb, mask)), logits_of(pre, tokens))
    # the other way round drops the cross-attention with a warning, and wrong shapes refuse to load
    assert load_pretrained(tiny(cross_attn=False), post.state_dict())["dropped"]
    with pytest.raises(TokenInputError, match="shapes differ"):
        load_pretrained(tiny(dim=64), pre.state_dict())
    with pytest.raises(TokenInputError, match="does not fit"):
        load_pretrained(tiny(depth=3), pre.state_dict())


# ------------------------------------------------------------------------------------------ bad input

def test_bad_input_errors():
    m = tiny(cross_attn=True)
    good = torch.randint(0, 40, (1, 2, *HW))
    with pytest.raises(TokenInputError, match=r"must lie in \[0, 40\)"):
        m.training_loss({"tokens": good + 40})
    with pytest.raises(TokenInputError, match=r"must lie in"):
        m.training_loss({"tokens": good - 41})
    with pytest.raises(TokenInputError, match=r"\[B, T, H, W\]"):
        m.training_loss({"tokens": good[0]})
    with pytest.raises(TokenInputError, match="integer token ids"):
        m.training_loss({"tokens": good.float()})
    with pytest.raises(TokenInputError, match="no 'tokens'"):
        m.training_loss({"latents": torch.zeros(1, 16, 2, 4, 5)})
    with pytest.raises(TokenInputError, match="text_dim=16"):
        m.training_loss({"tokens": good, "text_emb": torch.zeros(1, 3, 384, dtype=torch.float64)})
    with pytest.raises(TokenInputError, match="does not fit shape"):
        m.generate(None, None, shape=(3, 4, 4), cond=good)
    with pytest.raises(TokenInputError, match="no Medusa heads"):
        m.generate(None, None, shape=(1, *HW), medusa=True)
    with pytest.raises(TokenInputError, match="top_p"):
        m.generate(None, None, shape=(1, *HW), top_p=0)
    with pytest.raises(ValueError, match="divisible"):
        Config(dim=50, n_heads=4)


# ------------------------------------------------------------------------------------------ Medusa

def test_medusa_greedy_equals_plain_greedy(trained):
    m, data, _ = trained
    cond = data[:3, :1]
    plain = m.generate(None, None, shape=(4, *HW), cond=cond, temperature=0)
    med = m.generate(None, None, shape=(4, *HW), cond=cond, temperature=0, medusa=True)
    stats = m.last_generation_stats
    assert torch.equal(plain, med)
    assert stats["accepted"] > 0 and stats["tokens_per_forward"] > 1.2, stats  # the heads did help
    # the same with an untrained model, whose drafts are nearly always rejected
    u = tiny(medusa_heads=3)
    assert torch.equal(u.generate(None, None, shape=(3, *HW), temperature=0, batch_size=2),
                       u.generate(None, None, shape=(3, *HW), temperature=0, batch_size=2, medusa=True))


def _peaked_model() -> ar.ARWorldModel:
    """vocab 4, sharp and context-dependent next-token distributions, Medusa heads that disagree with
    the model (random residual blocks): acceptance is partial, so both branches of the verification run."""
    torch.manual_seed(11)
    m = build_model(Config(dim=24, depth=1, n_heads=4, vocab_size=4, mlp_hidden=48, medusa_heads=2))
    for name, p in m.named_parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.6)
    return m.double().eval()


def _exact_joint(m, temperature: float) -> np.ndarray:
    """P(x1, x2, x3) of plain sampling, by enumerating all 64 sequences (shape (1, 1, 3))."""
    seqs = torch.tensor(list(itertools.product(range(4), repeat=3)))
    inp = torch.cat([torch.full((64, 1), m.config.bos_id), seqs[:, :2]], dim=1)
    with torch.no_grad():
        probs = ar.filter_probs(m.lm_head(m(inp, hw=(1, 3))), temperature)  # [64, 3, 4]
    return probs.gather(-1, seqs[..., None])[..., 0].prod(-1).numpy()


def _chi2(samples: torch.Tensor, expected: np.ndarray) -> float:
    idx = (samples.reshape(-1, 3) * torch.tensor([16, 4, 1])).sum(-1).numpy()
    observed = np.bincount(idx, minlength=64).astype(float)
    n = observed.sum()
    keep = expected * n >= 5  # pool the rare cells into one so the chi-square approximation holds
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum()) * n
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


def test_medusa_sampling_keeps_the_distribution(monkeypatch):
    m = _peaked_model()
    temperature, n = 0.9, 2000
    expected = _exact_joint(m, temperature)
    plain = m.generate(None, None, shape=(1, 1, 3), batch_size=n, temperature=temperature, seed=1)
    med = m.generate(None, None, shape=(1, 1, 3), batch_size=n, temperature=temperature, seed=2, medusa=True)
    rate = m.last_generation_stats["acceptance_rate"]
    assert 0.05 < rate < 0.95, rate  # both accept and reject-and-resample paths ran
    assert _chi2(plain, expected) > 1e-3
    assert _chi2(med, expected) > 1e-3
    # the test can fail: a verifier that accepts every draft samples from the heads instead
    monkeypatch.setattr(ar.medusa, "speculative_accept", lambda p, q, d, g, greedy: (True, None))
    broken = m.generate(None, None, shape=(1, 1, 3), batch_size=400, temperature=temperature, seed=2, medusa=True)
    assert _chi2(broken, expected) < 1e-6


# ------------------------------------------------------------------------------------------ presets

PUBLISHED = {"ar-4b", "ar-5b", "ar-12b", "ar-13b"}


@pytest.mark.parametrize("name", ["ar-tiny", "ar-small", "ar-4b", "ar-5b", "ar-12b", "ar-13b"])
def test_presets(name):
    spec = yaml.safe_load((ROOT / "configs" / "models" / f"{name}.yaml").read_text())
    assert spec["name"] == name and spec["family"] == "autoregressive"
    cfg = Config(**spec["model"])
    with torch.device("meta"):
        n = sum(p.numel() for p in build_model(cfg).parameters())
    if name in PUBLISHED:
        assert abs(n / spec["published_params"] - 1) <= 0.10, (name, n)
    else:
        assert spec["published_params"] is None
    if name == "ar-small":
        assert 50e6 <= n <= 150e6
    if name == "ar-tiny":
        assert cfg.tokenizer_preset == "tiny" and n < 30e6
