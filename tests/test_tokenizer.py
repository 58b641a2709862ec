"""Causal video tokenizer: shapes, FSQ, causality, padding, tiling, TorchScript, metrics, bad input.

CPU only, tiny presets (randomly initialised: these tests check the machinery, not trained quality).
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from wfm_platform.tokenizer import (
    FSQ,
    NAMES,
    TokenizerInputError,
    build_tokenizer,
    decode_tiled,
    encode_tiled,
    export_torchscript,
    frames_to_tensor,
    load_config,
    load_jit_tokenizer,
    psnr,
    ssim,
    ssim_frame,
    tensor_to_frames,
)
from wfm_platform.tokenizer.model import pad_video
from wfm_platform.tokenizer.tiling import tile_starts


def _tok(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_tokenizer(name, preset="tiny").eval()


@pytest.fixture(scope="module")
def bikes_clip(samples_dir) -> torch.Tensor:
    """25 real frames of bikes.mp4 (one shot: frames 0..29), resized to 144x256, as [1,3,25,144,256]."""
    from wfm_platform.video import iter_frames

    frames = [f for _, f in iter_frames(samples_dir / "bikes.mp4", start=0, end=24, size=(256, 144))]
    return frames_to_tensor(np.stack(frames))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------- shapes, FSQ
@pytest.mark.parametrize("name", NAMES)
def test_shapes_every_name(name):
    tok = _tok(name)
    cfg = tok.config
    t, s = cfg.temporal_compression, cfg.spatial_compression
    image = t == 1
    x = torch.rand(2, 3, 32, 48) * 2 - 1 if image else torch.rand(2, 3, 1 + 2 * t, 32, 48) * 2 - 1
    with torch.no_grad():
        z = tok.encode(x)
        y = tok.decode(z)
    lat = (2, 32 // s, 48 // s) if image else (2, 3, 32 // s, 48 // s)
    if cfg.kind == "cv":
        assert z.shape == (lat[0], 16, *lat[1:]) and z.dtype == torch.float32
    else:
        assert z.shape == lat
        assert z.dtype == torch.int64 and int(z.min()) >= 0 and int(z.max()) < 64000
    assert y.shape == x.shape


def test_fsq_codebook_and_round_trip():
    fsq = FSQ([8, 8, 8, 5, 5, 5])
    assert fsq.codebook_size == 64000 == load_config("dv8x8x8").codebook_size
    idx = torch.arange(64000).reshape(1, 64000, 1, 1)
    codes = fsq.indices_to_codes(idx)
    assert codes.shape == (1, 6, 64000, 1, 1)
    assert float(codes.min()) >= -1 and float(codes.max()) <= 1
    assert torch.equal(fsq.codes_to_indices(codes), idx)
    assert len({tuple(c) for c in codes[0, :, :, 0, 0].T.tolist()}) == 64000  # all codes distinct
    # quantizing arbitrary values lands on a code whose index decodes back to it
    z = torch.randn(2, 6, 3, 4, 5) * 3
    q, ind = fsq(z)
    assert torch.equal(fsq.indices_to_codes(ind), q)
    assert int(ind.min()) >= 0 and int(ind.max()) < 64000


def test_forward_for_training_has_gradients_and_aux():
    tok = _tok("dv4x8x8").train()
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    out = tok(x)
    assert out.reconstruction.shape == x.shape and out.indices.shape == (1, 2, 4, 4)
    assert out.latent.shape == (1, 6, 2, 4, 4)
    assert 0 < out.aux["codebook_usage"] <= 1 and 0 <= float(out.aux["quant_error"]) <= 0.5
    (out.reconstruction - x).pow(2).mean().backward()  # straight-through estimator lets grads reach the encoder
    g = tok.encoder.conv_in.spatial.conv.weight.grad
    assert g is not None and float(g.abs().sum()) > 0


# ---------------------------------------------------------------- causality, padding
@pytest.mark.parametrize("name", ["cv8x8x8", "dv4x8x8"])
def test_causal_latents_do_not_change_when_frames_follow(name):
    tok = _tok(name)
    t = tok.temporal_compression
    x = torch.rand(1, 3, 1 + 4 * t, 32, 32) * 2 - 1
    x2 = x.clone()
    x2[:, :, 1 + 2 * t :] = torch.rand_like(x2[:, :, 1 + 2 * t :]) * 2 - 1  # different future
    with torch.no_grad():
        z_short = tok.encode(x[:, :, : 1 + 2 * t])  # frames 0..2t -> latents 0..2
        z_full, z_alt = tok.encode(x), tok.encode(x2)
        y_short, y_full = tok.decode(z_short), tok.decode(z_full)
    if tok.kind == "cv":
        torch.testing.assert_close(z_full[:, :, :3], z_short, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(z_alt[:, :, :3], z_short, atol=1e-5, rtol=1e-5)
        assert (z_alt[:, :, 3:] - z_full[:, :, 3:]).abs().max() > 1e-3  # the future does matter
    else:
        assert torch.equal(z_full[:, :3], z_short) and torch.equal(z_alt[:, :3], z_short)
    # the decoder is causal too: frames 0..2t come from latents 0..2 only
    torch.testing.assert_close(y_full[:, :, : 1 + 2 * t], y_short, atol=1e-5, rtol=1e-5)


def test_odd_frame_counts_and_sizes_are_padded_and_cropped(bikes_clip):
    tok = _tok("cv8x8x8")
    x = bikes_clip[:, :, :11, :37, :50]  # 11 frames (not 1+8n), 37x50 (not multiples of 8)
    assert pad_video(x, 8, 8).shape == (1, 3, 17, 40, 56)
    torch.testing.assert_close(pad_video(x, 8, 8)[:, :, 11, :37, :50], x[:, :, 9])  # reflect, not repeat
    with torch.no_grad():
        z = tok.encode(x)
        assert z.shape == (1, 16, *tok.latent_shape(11, 37, 50)) == (1, 16, 3, 5, 7)
        assert tok.reconstruct(x).shape == x.shape
        assert tok(x).reconstruction.shape == x.shape
        assert tok.decode(z, num_frames=11, size=(37, 50)).shape == x.shape
        # a single frame (an image) and 2 frames (shorter than the padding) also work
        assert tok.reconstruct(x[:, :, :1]).shape == (1, 3, 1, 37, 50)
        assert tok.reconstruct(x[:, :, :2]).shape == (1, 3, 2, 37, 50)


# ---------------------------------------------------------------- tiling and memory
def test_tile_starts_cover_everything():
    for n, tile, ov in [(100, 32, 8), (64, 64, 16), (65, 64, 16), (1000, 256, 64)]:
        starts = tile_starts(n, tile, ov)
        covered = np.zeros(n, bool)
        for s in starts:
            covered[s : s + tile] = True
        assert covered.all() and starts[-1] + min(tile, n) == n
        assert all(b - a <= tile - ov for a, b in zip(starts, starts[1:]))


def test_spatial_tiling_close_to_untiled_and_blending_helps(bikes_clip):
    tok = _tok("cv8x8x8")
    x = bikes_clip[:, :, :9]
    with torch.no_grad():
        z = tok.encode(x)
        y = tok.decode(z)
        z_blend = encode_tiled(tok, x, tile=128, overlap=64, chunk=8)
        z_hard = encode_tiled(tok, x, tile=128, overlap=0, chunk=8)
        y_blend = decode_tiled(tok, z, tile=128, overlap=64, chunk=8)
        y_hard = decode_tiled(tok, z, tile=128, overlap=0, chunk=8)
        z_one = encode_tiled(tok, x, tile=256, overlap=0, chunk=8)  # one tile == untiled
    assert z_blend.shape == z.shape and y_blend.shape == y.shape
    torch.testing.assert_close(z_one, z, atol=1e-5, rtol=1e-5)
    # random init has a wide receptive field, so tiles are not exact; blending must clearly help
    # (measured: encode 0.04 vs 0.16 without overlap, decode 0.09 vs 0.32)
    assert _rel(z_blend, z) < 0.08 and _rel(y_blend, y) < 0.15
    assert _rel(z_blend, z) < 0.5 * _rel(z_hard, z) and _rel(y_blend, y) < 0.5 * _rel(y_hard, y)
    # DV: tiles blend the pre-quantization values, then quantize once
    dv = _tok("dv8x8x8")
    with torch.no_grad():
        agree = (encode_tiled(dv, x, tile=128, overlap=64) == dv.encode(x)).float().mean()
    assert agree > 0.5


def test_temporal_chunks_first_exact_later_close(bikes_clip):
    tok = _tok("cv4x8x8")
    x = bikes_clip[:, :, :25, :64, :64]  # 25 frames -> 7 latent frames
    with torch.no_grad():
        z = tok.encode(x)
        zc = encode_tiled(tok, x, tile=64, overlap=0, chunk=2, context=1)
        y = tok.decode(z)
        yc = decode_tiled(tok, z, tile=64, overlap=0, chunk=2, context=1)
    assert zc.shape == z.shape and yc.shape == y.shape
    torch.testing.assert_close(zc[:, :, :3], z[:, :, :3], atol=1e-5, rtol=1e-5)  # causal: exact
    torch.testing.assert_close(yc[:, :, :9], y[:, :, :9], atol=1e-5, rtol=1e-5)
    assert _rel(zc, z) < 0.25 and _rel(yc, y) < 0.25


def _max_activation(tok, fn) -> int:
    """Largest tensor any module produces while fn runs: the activation memory high-water mark."""
    peak = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            peak[0] = max(peak[0], out.numel())

    handles = [m.register_forward_hook(hook) for m in tok.modules()]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return peak[0]


def test_tiled_memory_is_bounded_by_the_tile_not_the_input():
    torch.manual_seed(0)
    tok = build_tokenizer("cv4x8x8", preset="tiny", channels=4).eval()  # narrow: sizes scale the same
    # chunks of 1 latent frame + 1 of context: every chunk after the second sees 1 + 2*4 frames
    small = torch.zeros(1, 3, 13, 96, 96)
    big = torch.zeros(1, 3, 25, 128, 160)  # 2x the frames, 2.2x the pixels per frame
    kw = dict(tile=64, overlap=16, chunk=1, context=1)
    with torch.no_grad():
        p_small = _max_activation(tok, lambda: encode_tiled(tok, small, **kw))
        p_big = _max_activation(tok, lambda: encode_tiled(tok, big, **kw))
        p_untiled = _max_activation(tok, lambda: tok.encode(big))
        d_small = _max_activation(tok, lambda: decode_tiled(tok, torch.zeros(1, 16, 4, 12, 12), **kw))
        d_big = _max_activation(tok, lambda: decode_tiled(tok, torch.zeros(1, 16, 7, 16, 20), **kw))
    assert p_big == p_small and d_big == d_small
    assert p_untiled > 10 * p_big


# ---------------------------------------------------------------- TorchScript
@pytest.mark.parametrize("name", ["cv8x8x8", "dv4x8x8"])
def test_torchscript_export_load_same_outputs(name, tmp_path, bikes_clip):
    tok = _tok(name)
    out = export_torchscript(tok, tmp_path / "ckpt")
    assert (out / "encoder.jit").exists() and (out / "decoder.jit").exists()
    assert json.loads((out / "tokenizer.json").read_text())["kind"] == tok.kind
    jt = load_jit_tokenizer(out)
    x = bikes_clip[:, :, :10, :40, :72]  # odd count, non-multiple size: the scripted model is shape-generic
    with torch.no_grad():
        z, zj = tok.encode(x), jt.encode(x)
        if tok.kind == "cv":
            torch.testing.assert_close(zj, z, atol=1e-5, rtol=1e-5)
        else:
            assert torch.equal(zj, z)
        torch.testing.assert_close(jt.decode(zj), tok.decode(z), atol=1e-5, rtol=1e-5)
        zt, zjt = encode_tiled(tok, x, tile=32, overlap=16), encode_tiled(jt, x, tile=32, overlap=16)
        if tok.kind == "cv":
            torch.testing.assert_close(zjt, zt, atol=1e-4, rtol=1e-4)
        else:  # the jit path blends FSQ codes (all encoder.jit returns), ours the pre-quantization values
            assert zjt.shape == zt.shape and (zjt == zt).float().mean() > 0.5
    # a Cosmos-style folder: no tokenizer.json, what it is comes from the name
    cosmos = tmp_path / f"Cosmos-Tokenize1-{name.upper()}-720p"
    cosmos.mkdir()
    for f in ("encoder.jit", "decoder.jit"):
        shutil.copy(out / f, cosmos / f)
    jc = load_jit_tokenizer(cosmos)
    assert (jc.kind, jc.temporal_compression, jc.spatial_compression) == (tok.kind, tok.temporal_compression, 8)
    with pytest.raises(TokenizerInputError, match="grayscale"):
        jc.encode(torch.zeros(1, 1, 9, 32, 32))


def test_jit_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.jit"):
        load_jit_tokenizer(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "encoder.jit").write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="cannot tell"):
        load_jit_tokenizer(tmp_path / "x")
    with pytest.raises(ValueError, match="TorchScript"):
        load_jit_tokenizer(tmp_path / "x", kind="cv", temporal_compression=8, spatial_compression=8)


# ---------------------------------------------------------------- metrics
def test_psnr_from_one_mse_over_the_video():
    rng = np.random.default_rng(0)
    a = rng.integers(10, 240, size=(4, 32, 32, 3)).astype(np.uint8)
    b = a.copy()
    b[::2] += 5  # frames 0, 2: error 5 everywhere; frames 1, 3: no error -> video MSE = 12.5
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 12.5), abs=1e-9)
    # not the mean of per-frame PSNRs (which would be inf here)
    assert psnr(a, a) == math.inf
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(a, b[:, :16])


def test_ssim_known_values():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(3, 40, 48, 3)).astype(np.uint8)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    # two flat frames: only the luminance term is left, (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    c1 = (0.01 * 255) ** 2
    fa, fb = np.full((32, 32), 100.0), np.full((32, 32), 140.0)
    assert ssim_frame(fa, fb) == pytest.approx((2 * 100 * 140 + c1) / (100**2 + 140**2 + c1), rel=1e-9)
    # more noise -> lower SSIM; symmetric
    n1 = np.clip(a + rng.normal(0, 5, a.shape), 0, 255).astype(np.uint8)
    n2 = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    assert 1 > ssim(a, n1) > ssim(a, n2) > 0
    assert ssim(a, n2) == pytest.approx(ssim(n2, a), abs=1e-12)
    with pytest.raises(ValueError, match="smaller than"):
        ssim_frame(np.zeros((8, 8)), np.zeros((8, 8)))


def test_ssim_matches_scikit_image_on_real_frames(samples_dir):
    """An independent implementation (Wang et al.'s Gaussian SSIM as scikit-image computes it, population
    covariance, 11x11 window, sigma 1.5, valid region) on two real frames of handheld footage."""
    from skimage.metrics import structural_similarity

    from wfm_platform.video import iter_frames

    frames = [f for _, f in iter_frames(samples_dir / "cockatoo.mp4", start=0, end=4, size=(320, 180))]
    for a, b in [(frames[0], frames[4]), (frames[1], frames[2])]:
        ref = structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=255)
        assert 0.3 < ref < 0.999 and ssim_frame(a, b) == pytest.approx(ref, abs=1e-9)


def test_tensor_frame_conversions_round_trip():
    u8 = np.random.default_rng(2).integers(0, 256, size=(3, 8, 8, 3)).astype(np.uint8)
    t = frames_to_tensor(u8)
    assert t.shape == (1, 3, 3, 8, 8) and float(t.min()) >= -1 and float(t.max()) <= 1
    assert np.array_equal(tensor_to_frames(t)[0], u8)
    ten = np.array([[[[0, 512, 1023]]]], dtype=np.uint16)  # 10-bit black, mid, white
    torch.testing.assert_close(frames_to_tensor(ten, bit_depth=10).flatten(),
                               torch.tensor([-1.0, 512 / 511.5 - 1, 1.0]))


# ---------------------------------------------------------------- bad input
def test_bad_input_errors_name_the_problem():
    tok = _tok("cv8x8x8")
    good = torch.zeros(1, 3, 9, 32, 32)
    cases = [
        (torch.zeros(3, 9, 32, 32), "5-D"),
        (torch.zeros(1, 1, 9, 32, 32), "grayscale"),
        (torch.zeros(1, 3, 9, 32, 32, dtype=torch.uint16), "10-bit"),
        (torch.zeros(1, 3, 9, 32, 32, dtype=torch.uint8), "float"),
        (torch.full((1, 3, 9, 32, 32), 200.0), r"\[-1, 1\]"),
        (torch.zeros(1, 3, 0, 32, 32), "too few frames"),
        (good.clone().index_fill_(2, torch.tensor([3]), float("nan")), "NaN"),
        (np.zeros((9, 32, 32, 3), np.uint8), "frames_to_tensor"),
    ]
    for x, msg in cases:
        with pytest.raises(TokenizerInputError, match=msg):
            tok.encode(x)
    z = tok.encode(good)
    bad_z = z.clone()
    bad_z[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(TokenizerInputError, match="NaN"):
        tok.decode(bad_z)
    with pytest.raises(TokenizerInputError, match="16"):
        tok.decode(z[:, :8])
    dv = _tok("dv8x8x8")
    ids = dv.encode(good)
    with pytest.raises(TokenizerInputError, match="out of range"):
        dv.decode(ids + 64000)
    with pytest.raises(TokenizerInputError, match="out of range"):
        dv.decode(ids - ids.max() - 1)
    with pytest.raises(TokenizerInputError, match="integer"):
        dv.decode(ids.float())
    with pytest.raises(TokenizerInputError, match="bit_depth"):
        frames_to_tensor(np.zeros((2, 8, 8, 3), np.uint16))
    with pytest.raises(TokenizerInputError, match="grayscale"):
        frames_to_tensor(np.zeros((2, 8, 8), np.uint8)[..., None])
    with pytest.raises(ValueError, match="unknown tokenizer"):
        build_tokenizer("cv3x3x3")
    with pytest.raises(ValueError, match="unknown preset"):
        build_tokenizer("cv8x8x8", preset="huge")
    with pytest.raises(ValueError, match="channels_mult"):
        build_tokenizer("cv8x16x16", preset="tiny", channels_mult=[1, 2])


def test_overrides_and_real_clip_round_trip(bikes_clip):
    tok = build_tokenizer("cv4x8x8", preset="tiny", channels=8, num_res_blocks=1)
    assert tok.config.channels == 8
    assert sum(p.numel() for p in tok.parameters()) < sum(p.numel() for p in _tok("cv4x8x8").parameters())
    x = bikes_clip[:, :, :9]
    with torch.no_grad():
        y = tok.reconstruct(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    frames = tensor_to_frames(y)[0]
    assert frames.dtype == np.uint8 and frames.shape == (9, 144, 256, 3)
    assert 0 < psnr(tensor_to_frames(x)[0], frames) < 40  # untrained: low but finite
