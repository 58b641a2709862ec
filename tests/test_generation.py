"""Generation end to end on the real tiny presets (untrained weights: the pipeline, not the quality):
Text2World / Video2World for both families write decodable mp4s of the asked shape, Video2World keeps
the conditioning frames (real footage), the pre-guard refuses before anything loads, the post-guard
blurs a real face that reaches the output and blocks unsafe output (nothing written), guards can only
be disabled explicitly, the generated_videos asset lands a _READY batch the upload sensor picks up,
and broken input fails with a clear error."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from wfm_platform.models.generate import (
    GenerationError,
    Generator,
    OutputRejected,
    PromptRefused,
    generate_video,
    load_prompt_set,
    make_request,
    prompt_set_names,
    read_conditioning,
)
from wfm_platform.models.generate_cli import generate_app
from wfm_platform.video import iter_frames, probe, write_mp4

PROMPT = "A tram crossing a busy city street at dusk, cyclists waiting at the light"
BAD_PROMPT = "a man stabbing a woman to death in an alley"
SMALL = {"frames": 17, "width": 96, "height": 64, "fps": 12, "steps": 2}
# autoregressive decoding is one forward per token: keep the grid at 2x4x8 tokens
AR_SMALL = {"frames": 9, "width": 64, "height": 32, "fps": 8, "cond_frames": 1}


@pytest.fixture(scope="module")
def gen() -> Generator:
    return Generator()  # caches guards, text encoder, models and tokenizers across the tests


def _req(mode, model, out, **kw):
    size = AR_SMALL if model.startswith("ar-") else SMALL
    if mode == "text2world":
        size = {k: v for k, v in size.items() if k != "cond_frames"}
    return make_request(mode, model=model, prompt=kw.pop("prompt", PROMPT), out=out, **{**size, **kw})


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---------------------------------------------------------------------------------------------------------
# end to end, both families
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["diffusion-tiny", "ar-tiny"])
def test_text2world_writes_mp4_of_the_asked_shape(gen, model, tmp_path):
    req = _req("text2world", model, tmp_path / "t2w.mp4")
    res = generate_video(req, generator=gen)
    info = probe(res.out, count_frames=True)
    assert (info.num_frames, info.width, info.height) == (req.frames, req.width, req.height)
    assert info.codec == "h264" and info.fps == pytest.approx(req.fps, rel=0.01)
    assert res.allowed and res.guards_enabled and res.untrained and res.family in model.replace("ar", "autoregressive")
    assert res.pre_verdict["allowed"] and res.post_verdict["allowed"]
    assert res.peak_memory_mb > 0 and res.memory_method.startswith("cpu peak RSS")
    assert {"pre_guard", "text_encoder", "generate", "decode", "post_guard", "write"} <= set(res.timings)
    frames = np.stack([f for _, f in iter_frames(res.out)])
    assert frames.std() > 1.0  # something was decoded (not a constant frame)


class LumaEncoder(nn.Module):
    """Stand-in CV tokenizer (TorchScript, no training needed) that keeps a face recognisable:
    16 latent channels = half-resolution luma of an 8x8 patch; latent l <- frame 8l (causal 1+8k)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, _, h, w = x.shape
        x = x[:, :, ::8]
        n = x.shape[2]
        y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).reshape(b * n, 1, h, w)
        y = F.pixel_unshuffle(F.avg_pool2d(y, 2), 4)
        return y.reshape(b, n, 16, h // 8, w // 8).permute(0, 2, 1, 3, 4).contiguous()


class LumaDecoder(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, _, n, h, w = z.shape
        y = F.pixel_shuffle(z.permute(0, 2, 1, 3, 4).reshape(b * n, 16, h, w), 4)
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        y = y.reshape(b, n, 1, 8 * h, 8 * w).permute(0, 2, 1, 3, 4).expand(b, 3, n, 8 * h, 8 * w)
        idx = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(1, n).repeat_interleave(8)])
        return y[:, :, idx].contiguous()


class LumaIndexEncoder(nn.Module):
    """Stand-in DV tokenizer: the 2x2 quarter-resolution luma of an 8x8 patch, 15 levels each, as one
    index < 15**4 = 50625 (inside the 64000-code vocabulary)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, _, h, w = x.shape
        x = x[:, :, ::8]
        n = x.shape[2]
        y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).reshape(b * n, 1, h, w)
        q = torch.round((F.pixel_unshuffle(F.avg_pool2d(y, 4), 2) + 1) * 7).clamp(0, 14).long()
        idx = q[:, 0] + 15 * q[:, 1] + 225 * q[:, 2] + 3375 * q[:, 3]
        return idx.reshape(b, n, h // 8, w // 8)


class LumaIndexDecoder(nn.Module):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        b, n, h, w = idx.shape
        digits = torch.stack([(idx // d) % 15 for d in [1, 15, 225, 3375]], dim=2).float() / 7 - 1
        y = F.pixel_shuffle(digits.reshape(b * n, 4, h, w), 2)
        y = F.interpolate(y, scale_factor=4.0, mode="bilinear", align_corners=False)
        y = y.reshape(b, n, 1, 8 * h, 8 * w).permute(0, 2, 1, 3, 4).expand(b, 3, n, 8 * h, 8 * w)
        sel = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(1, n).repeat_interleave(8)])
        return y[:, :, sel].contiguous()


def _jit_tokenizer(d: Path, enc: nn.Module, dec: nn.Module, kind: str) -> Path:
    torch.jit.script(enc).save(str(d / "encoder.jit"))
    torch.jit.script(dec).save(str(d / "decoder.jit"))
    (d / "tokenizer.json").write_text(json.dumps({"kind": kind, "temporal_compression": 8,
                                                   "spatial_compression": 8, "latent_channels": 16}))
    return d


@pytest.fixture(scope="module")
def luma_tokenizer(tmp_path_factory) -> Path:
    return _jit_tokenizer(tmp_path_factory.mktemp("luma_cv"), LumaEncoder(), LumaDecoder(), "cv")


@pytest.fixture(scope="module")
def luma_dv_tokenizer(tmp_path_factory) -> Path:
    return _jit_tokenizer(tmp_path_factory.mktemp("luma_dv"), LumaIndexEncoder(), LumaIndexDecoder(), "dv")


@pytest.mark.parametrize("model", ["diffusion-tiny", "ar-tiny"])
def test_video2world_keeps_the_conditioning_frames(gen, model, samples_dir, tmp_path, luma_tokenizer,
                                                    luma_dv_tokenizer):
    """The first output frame is the tokenizer round trip of the first input frame (real footage), not
    anything else: high PSNR against it, low against the round trip of another shot.

    The untrained tiny tokenizer decodes to saturated pixel-level colour noise that H.264 (4:2:0) cannot
    keep, so this comparison uses the stand-in tokenizers above, whose output survives the encoder."""
    from wfm_platform.tokenizer.model import frames_to_tensor, tensor_to_frames

    bikes = samples_dir / "bikes.mp4"
    tok_dir = luma_tokenizer if model.startswith("diffusion") else luma_dv_tokenizer
    req = _req("video2world", model, tmp_path / "v2w.mp4", video=str(bikes), tokenizer=str(tok_dir))
    res = generate_video(req, generator=gen)
    info = probe(res.out, count_frames=True)
    assert (info.num_frames, info.width, info.height) == (req.frames, req.width, req.height)
    assert res.cond_latent_frames == (2 if model.startswith("diffusion") else 1)

    tok = gen.tokenizer(res.tokenizer)
    cond = read_conditioning(bikes, req.cond_frames, req.width, req.height)
    own = tensor_to_frames(tok.reconstruct(frames_to_tensor(cond)))[0][0]
    # bikes.mp4 cuts at frame 137: frames of another shot, same processing
    other_src = read_conditioning(bikes, 150 + req.cond_frames, req.width, req.height)[150:]
    other = tensor_to_frames(tok.reconstruct(frames_to_tensor(other_src)))[0][0]
    first = next(iter_frames(res.out))[1]
    p_own, p_other = _psnr(first, own), _psnr(first, other)
    assert p_own > 30 and p_own > p_other + 8, (p_own, p_other)


# ---------------------------------------------------------------------------------------------------------
# guards
# ---------------------------------------------------------------------------------------------------------
def test_refused_prompt_exits_2_before_loading_anything(tmp_path):
    out, vlog = tmp_path / "x.mp4", tmp_path / "violations"
    # an unknown model: proves the prompt is checked first (else the error would be "unknown model")
    r = CliRunner().invoke(generate_app, ["text2world", "--model", "no-such-model", "--prompt", BAD_PROMPT,
                                          "--out", str(out), "--violation-log", str(vlog)])
    assert r.exit_code == 2, r.output
    assert "refused" in r.stderr and "violence" in r.stderr.lower()
    assert not out.exists()
    from wfm_platform.guardrails.violations import ViolationLog, prompt_sha256

    recs = ViolationLog(str(vlog)).read()
    assert len(recs) == 1 and recs[0]["source"] == "pre" and recs[0]["prompt_sha256"] == prompt_sha256(BAD_PROMPT)
    assert "prompt" not in recs[0]  # raw text only when store_raw_prompt is set


def test_refused_prompt_library_error(gen, tmp_path):
    with pytest.raises(PromptRefused) as e:
        generate_video(_req("text2world", "diffusion-tiny", tmp_path / "x.mp4", prompt=BAD_PROMPT), generator=gen)
    assert not e.value.verdict.allowed and e.value.verdict.reasons


def test_guards_disabled_is_explicit_logged_and_recorded(tmp_path, caplog):
    out = tmp_path / "noguard.mp4"
    args = ["text2world", "--model", "diffusion-tiny", "--prompt", PROMPT, "--out", str(out), "--frames", "9",
            "--width", "64", "--height", "32", "--steps", "1", "--no-guards", "--json"]
    with caplog.at_level(logging.WARNING):
        r = CliRunner().invoke(generate_app, args)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["guards_enabled"] is False and d["pre_verdict"] is None and d["post_verdict"] is None
    assert d["out"] == str(out) and out.exists() and d["allowed"] is True
    assert {"out", "allowed", "reasons", "faces_blurred", "seconds", "peak_memory_mb", "device"} <= set(d)
    assert any("GUARDS DISABLED" in rec.message and rec.levelno == logging.WARNING for rec in caplog.records)
    # the default (no flag) keeps them on
    assert make_request("text2world", model="m", prompt="p", out="o.mp4").guards.enabled


@pytest.fixture(scope="module")
def face_video(samples_dir, tmp_path_factory) -> Path:
    """A real face (skimage astronaut) composited into real street footage (vtest.avi), 9 frames."""
    import cv2
    from skimage import data

    face = data.astronaut()[30:230, 140:300]  # Eileen Collins' head and shoulders
    face = cv2.resize(face, (110, int(110 * face.shape[0] / face.shape[1])), interpolation=cv2.INTER_AREA)
    frames = []
    for i, f in iter_frames(samples_dir / "vtest.avi", end=8, size=(352, 288)):
        f = f.copy()
        x, y = 60 + 3 * i, 40
        f[y:y + face.shape[0], x:x + face.shape[1]] = face
        frames.append(f)
    p = tmp_path_factory.mktemp("face") / "face.mp4"
    write_mp4(frames, p, fps=10, crf=12)
    return p


def test_postguard_blurs_a_face_that_reaches_the_output(gen, face_video, luma_tokenizer, tmp_path):
    """The face is in the conditioning frames; with guards off it is in the output (so the test can fail),
    with guards on an independent detector (NudeNet CNN, not the Haar+HOG the guard uses) finds none."""
    from wfm_platform.guardrails.faces import NudeNetFaceDetector

    checker = NudeNetFaceDetector()
    common = {"video": str(face_video), "tokenizer": str(luma_tokenizer), "frames": 17, "width": 352,
              "height": 288, "cond_frames": 9, "steps": 1, "fps": 10}
    bare = generate_video(_req("video2world", "diffusion-tiny", tmp_path / "bare.mp4",
                               guards={"enabled": False}, **common), generator=gen)
    seen = [len(checker.detect(f)) > 0 for i, f in iter_frames(bare.out, end=8)]
    assert sum(seen) >= 7, seen  # the face does reach the output

    res = generate_video(_req("video2world", "diffusion-tiny", tmp_path / "guarded.mp4", **common), generator=gen)
    assert res.allowed and res.faces_blurred >= 1
    after = [len(checker.detect(f)) > 0 for i, f in iter_frames(res.out, end=8)]
    assert sum(after) == 0, after


class AlwaysUnsafe:
    """Test double for the unsafe classifier protocol: every frame is unsafe."""

    name = "always-unsafe"

    def classify(self, rgb):
        from wfm_platform.guardrails.unsafe import UnsafeResult

        return UnsafeResult(0.99, {"TEST_UNSAFE": 0.99})


def test_unsafe_output_is_rejected_and_not_written(tmp_path):
    from wfm_platform.guardrails.postguard import PostGuard, PostGuardConfig
    from wfm_platform.guardrails.violations import ViolationLog

    g = Generator()
    req = _req("text2world", "diffusion-tiny", tmp_path / "unsafe.mp4", frames=9, width=64, height=32,
               guards={"violation_log": str(tmp_path / "vlog")})
    guards = g.guards(req.guards)
    guards._post = PostGuard(PostGuardConfig(), unsafe_classifier=AlwaysUnsafe())
    with pytest.raises(OutputRejected) as e:
        g.run(req)
    assert not Path(req.out).exists() and not list(tmp_path.glob("*.mp4"))
    assert any("TEST_UNSAFE" in r for r in e.value.verdict.reasons)
    recs = ViolationLog(str(tmp_path / "vlog")).read()
    assert [r["source"] for r in recs] == ["post"] and recs[0]["stage"] == "unsafe"


def test_prompt_sets_are_benign_and_pass_the_preguard(gen):
    from wfm_platform.models.generate import GuardsConfig

    names = prompt_set_names()
    assert names == ["amusement_parks", "city_streets", "hospitals", "museums", "zoos"]
    pre = gen.guards(GuardsConfig()).pre()
    for n in names:
        ps = load_prompt_set(n)
        assert 8 <= len(ps.prompts) <= 12 and len(set(ps.prompts)) == len(ps.prompts)
        blocked = [(p, v.reasons) for p in ps.prompts if not (v := pre.check(p)).allowed]
        assert not blocked, blocked
    assert not pre.check(BAD_PROMPT).allowed  # the same guard does block


# ---------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------
def test_bad_input_fails_with_clear_errors(gen, samples_dir, tmp_path):
    out = tmp_path / "o.mp4"
    with pytest.raises(GenerationError, match="not found"):
        generate_video(_req("video2world", "diffusion-tiny", out, video=str(tmp_path / "missing.mp4")), generator=gen)
    short = tmp_path / "short.mp4"
    write_mp4((f for _, f in iter_frames(samples_dir / "bikes.mp4", end=2, size=(96, 64))), short, fps=10)
    with pytest.raises(GenerationError, match="has 3 frame"):
        generate_video(_req("video2world", "diffusion-tiny", out, video=str(short)), generator=gen)
    with pytest.raises(GenerationError, match="1 \\+ 8\\*k"):
        generate_video(_req("video2world", "diffusion-tiny", out, video=str(short), cond_frames=4), generator=gen)
    with pytest.raises(GenerationError, match="must exceed"):
        generate_video(_req("video2world", "diffusion-tiny", out, video=str(short), frames=9, cond_frames=9),
                       generator=gen)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    with pytest.raises(GenerationError, match="not readable"):
        generate_video(_req("video2world", "diffusion-tiny", out, video=str(not_video)), generator=gen)
    with pytest.raises(GenerationError, match="neither a checkpoint folder nor a"):
        generate_video(_req("text2world", "diffusion-huge", out), generator=gen)
    assert not out.exists()
    with pytest.raises(ValueError, match="video2world needs a conditioning video"):
        make_request("video2world", model="diffusion-tiny", prompt=PROMPT, out=out)
    with pytest.raises(ValueError, match=".mp4"):
        make_request("text2world", model="diffusion-tiny", prompt=PROMPT, out=tmp_path / "o.avi")


def test_cli_bad_input_exit_1(tmp_path):
    r = CliRunner().invoke(generate_app, ["video2world", "--model", "diffusion-tiny", "--prompt", PROMPT,
                                          "--video", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o.mp4"),
                                          "--frames", "17", "--width", "64", "--height", "32"])
    assert r.exit_code == 1 and "not found" in r.stderr


def test_cli_model_preset_at_latest(tmp_path):
    """--model PRESET@latest: the checkpoint the diffusion_wfm asset last published in --store."""
    from wfm_platform.models import presets
    from wfm_platform.models.checkpoint import publish_latest, save_checkpoint
    from wfm_platform.storage.objectstore import ObjectStore

    store, out = ObjectStore(str(tmp_path / "store")), tmp_path / "o.mp4"
    args = ["text2world", "--model", "diffusion-tiny@latest", "--store", store.uri(), "--prompt", PROMPT,
            "--out", str(out), "--frames", "9", "--width", "64", "--height", "32", "--steps", "1", "--no-guards",
            "--json"]
    r = CliRunner().invoke(generate_app, args)
    assert r.exit_code == 1 and "no trained diffusion-tiny checkpoint" in r.stderr and not out.exists()
    folder = "diffusion_wfm/diffusion-tiny/v1"
    save_checkpoint(store.local_path(folder), presets.build_model("diffusion-tiny"), step=5,
                    meta={"preset": "diffusion-tiny", "dataset": "bikes@1.0.0"})
    publish_latest(store, "diffusion_wfm", "diffusion-tiny", folder, version="v1", dataset="bikes@1.0.0", step=5,
                   family="diffusion")
    r = CliRunner().invoke(generate_app, args)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["untrained"] is False and probe(out, count_frames=True).num_frames == 9


# ---------------------------------------------------------------------------------------------------------
# the synthetic-data loop: generated_videos -> a new upload batch the sensor picks up
# ---------------------------------------------------------------------------------------------------------
def test_generated_videos_asset_lands_a_ready_batch_the_sensor_sees(tmp_path, dagster_home):
    import dagster as dg

    from assets.generation import GENERATION_ASSETS, prompt_sets
    from resources import StorageResource
    from sensors.uploads import upload_sensor

    assert set(prompt_sets.get_partition_keys()) == set(prompt_set_names())
    storage = StorageResource(root_uri=str(tmp_path / "store"), uploads_uri=str(tmp_path / "uploads"))
    # no trained checkpoint in this store: the untrained preset, opted into explicitly
    cfg = {"allow_untrained": True, "max_prompts": 2, "frames": 9, "width": 64, "height": 32, "steps": 1, "fps": 8}
    with dg.instance_for_test() as instance:
        result = dg.materialize(GENERATION_ASSETS, partition_key="zoos", resources={"storage": storage},
                                instance=instance, run_config={"ops": {"generated_videos": {"config": cfg}}})
        assert result.success
        md = result.get_asset_materialization_events()[0].materialization.metadata
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"batch_ready": True, "videos_decodable": True, "sidecars_match": True}
        batch = md["batch"].value
        assert batch.startswith("gen-zoos-") and md["num_written"].value == 2 and md["untrained"].value is True
        up = storage.uploads()
        files = sorted(up.list(batch))
        mp4s = [k for k in files if k.endswith(".mp4")]
        sidecars = [k for k in files if k.endswith(".json")]
        assert len(mp4s) == 2 and f"{batch}/_READY" in files and len(files) == 5
        assert sidecars == [k[:-4] + ".json" for k in mp4s]  # each video's prompt, for curation's captions
        side = up.read_json(sidecars[0])
        assert side["generated"] is True and side["checkpoint"] == "" and side["model"] == "diffusion-tiny"
        ready_t = up.local_path(f"{batch}/_READY").stat().st_mtime_ns
        assert all(up.local_path(k).stat().st_mtime_ns <= ready_t for k in mp4s + sidecars)  # _READY last
        assert storage.store().exists(f"generated_videos/zoos/{batch}.json")

        with dg.build_sensor_context(instance=instance, resources={"storage": storage}) as ctx:
            sr = upload_sensor(ctx)
        assert [r.partition_key for r in sr.run_requests] == [batch]
        assert sr.run_requests[0].run_config["ops"]["raw_videos"]["config"]["source_uri"] == up.uri(batch)


# ---------------------------------------------------------------------------------------------------------
# GPU: offloading lowers peak memory (run on a lent GPU machine)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_offload_lowers_peak_cuda_memory(tmp_path):
    kw = {"frames": 17, "width": 256, "height": 128, "steps": 2, "device": "cuda"}
    Generator().run(_req("text2world", "diffusion-small", tmp_path / "warm.mp4", **kw))  # CUDA context, kernels
    base = Generator().run(_req("text2world", "diffusion-small", tmp_path / "a.mp4", **kw))
    off = Generator().run(_req("text2world", "diffusion-small", tmp_path / "b.mp4",
                     offload={"text_encoder": True, "tokenizer": True, "model": True}, **kw))
    assert base.memory_method.startswith("cuda") and off.peak_memory_mb < base.peak_memory_mb, (
        base.peak_memory_mb, off.peak_memory_mb)
