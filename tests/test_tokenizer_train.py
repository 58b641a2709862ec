"""Tokenizer training, resume, DDP (2 Gloo processes), DV straight-through, evaluation and the CLI,
on tiny real WebDataset shards cut from the sample footage. CPU, tiny preset, 32x32 crops, 1+8 frames.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from typer.testing import CliRunner

from wfm_platform.curation.shards import ShardSample, write_shards
from wfm_platform.storage.objectstore import ObjectStore
from wfm_platform.tokenizer import build_tokenizer
from wfm_platform.tokenizer.cli import load_tokens, tokenize_app, tokenizer_app
from wfm_platform.tokenizer.data import (
    ClipStream,
    ClipStreamConfig,
    ClipTooShortError,
    ShardSourceError,
    batches,
    decode_window,
    dis_flow,
)
from wfm_platform.tokenizer.losses import LossConfig, TokenizerLoss, flow_consistency_loss, ssim_loss, warp
from wfm_platform.tokenizer.train import (
    CheckpointError,
    evaluate_videos,
    load_checkpoint,
    load_train_config,
    read_checkpoint,
    read_loss_log,
    train,
)
from wfm_platform.video import probe, transcode_clip

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tokenizer" / "train_tiny.yaml"
runner = CliRunner()

# small and fast: 32x32 crops of 1+8 frames, batch 2
FAST = {"crop": (32, 32), "batch_size": 2, "warmup_steps": 0, "log_every": 1}


@pytest.fixture(scope="module")
def data(samples_dir, tmp_path_factory) -> dict:
    """Two shards of real clips (bikes shots + cockatoo, 160 px) and a held-out bikes shot."""
    tmp = tmp_path_factory.mktemp("tokdata")
    samples = []
    for i, (a, b) in enumerate([(0, 29), (30, 75), (76, 136), (137, 186)]):
        dst = tmp / f"bikes{i}.mp4"
        transcode_clip(samples_dir / "bikes.mp4", a, b, dst, fps=25, preset="ultrafast", max_side=160)
        samples.append(ShardSample(f"bikes{i}", str(dst), {}, f"bikes shot {i}"))
    dst = tmp / "cockatoo.mp4"
    transcode_clip(samples_dir / "cockatoo.mp4", 0, 39, dst, fps=20, preset="ultrafast", max_side=160)
    samples.append(ShardSample("cockatoo", str(dst), {}, "a cockatoo"))
    short = tmp / "short.mp4"  # 4 frames: too short for a 1+8 window
    transcode_clip(samples_dir / "bikes.mp4", 242, 245, short, fps=25, preset="ultrafast", max_side=160)
    held_out = tmp / "held_out.mp4"  # a shot never trained on
    transcode_clip(samples_dir / "bikes.mp4", 187, 215, held_out, fps=25, preset="ultrafast", max_side=96)
    store = ObjectStore(tmp / "store")
    m = write_shards(samples, store, "webdataset_shards/b1", max_samples=3)
    assert m["num_shards"] == 2
    return {"manifest": str(tmp / "store" / "webdataset_shards" / "b1" / "manifest.json"), "store": store,
            "held_out": held_out, "short": short, "tmp": tmp,
            "urls": [e["uri"] for e in m["shards"]]}


def _cfg(**kw):
    return load_train_config(CONFIG, **{**FAST, **kw})


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("run") / "tok"
    cfg = _cfg(steps=30, checkpoint_every=30)
    r = train(cfg, data["manifest"], out)
    return {"out": out, "result": r, "cfg": cfg}


# ---------------------------------------------------------------- data
def test_stream_shapes_crops_and_flow(data):
    s = ClipStream(data["manifest"], ClipStreamConfig(num_frames=9, size=(32, 48), flow=True, seed=1), epochs=1)
    items = list(s)
    assert len(items) == 5
    assert {i["key"] for i in items} == {"bikes0", "bikes1", "bikes2", "bikes3", "cockatoo"}
    for it in items:
        assert it["video"].shape == (3, 9, 32, 48) and it["video"].dtype == torch.float32
        assert -1 <= float(it["video"].min()) and float(it["video"].max()) <= 1
        assert float(it["video"].std()) > 0.05  # real pixels, not padding
        assert it["flow"].shape == (8, 2, 32, 48)
    # same seed -> same crops; skip=k resumes the stream exactly
    again = list(ClipStream(data["manifest"], ClipStreamConfig(num_frames=9, size=(32, 48), seed=1), epochs=1, skip=2))
    assert [i["key"] for i in again] == [i["key"] for i in items[2:]]
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(again, items[2:]))
    # two ranks split the samples without overlap
    r0 = [i["index"] for i in ClipStream(data["urls"], ClipStreamConfig(size=(32, 32)), rank=0, world_size=2, epochs=1)]
    r1 = [i["index"] for i in ClipStream(data["urls"], ClipStreamConfig(size=(32, 32)), rank=1, world_size=2, epochs=1)]
    assert sorted(r0 + r1) == list(range(5)) and not set(r0) & set(r1)
    # DataLoader workers split a rank's share again: every sample decoded once, none lost
    got = [b["keys"] for b in batches(ClipStream(data["urls"], ClipStreamConfig(size=(32, 32)), epochs=1), 1,
                                      num_workers=2)]
    assert sorted(k for ks in got for k in ks) == sorted(i["key"] for i in ClipStream(
        data["urls"], ClipStreamConfig(size=(32, 32)), epochs=1))


def test_decode_window_rejects_short_and_garbage(data):
    with pytest.raises(ClipTooShortError, match="4 frames"):
        decode_window(data["short"].read_bytes(), 9, (32, 32), key="short")
    with pytest.raises(ClipTooShortError, match="not a decodable video"):
        decode_window(b"\x00" * 1000, 9, (32, 32))


def test_decode_window_augment_flips_strides_and_zooms(tmp_path):
    """A clip whose frame i is 40 + 4i bright and brightens left to right: a flip shows as a falling
    gradient, a 2x stride as +8 per frame, a zoom as a gentler gradient over the same crop width."""
    from wfm_platform.video import write_mp4

    ramp = np.linspace(0, 100, 160, dtype=np.float32)[None, :, None]
    frames = [np.broadcast_to(40 + 4 * i + ramp, (96, 160, 3)).astype(np.uint8) for i in range(30)]
    clip = tmp_path / "ramp.mp4"
    write_mp4(iter(frames), clip, fps=10, crf=4)
    data = clip.read_bytes()

    def features(w: np.ndarray) -> tuple[bool, int, float]:
        m = w.astype(np.float32).mean(axis=(1, 3))  # [T, W]
        slope = float(np.polyfit(np.arange(m.shape[1]), m.mean(0), 1)[0])
        step = round(float(np.diff(m.mean(1)).mean()))
        return slope < 0, step, abs(slope)

    plain = [features(decode_window(data, 9, (64, 64), rng=np.random.default_rng(s))) for s in range(24)]
    assert all(not f and step == 4 for f, step, _ in plain)
    def augmented(which):
        return [features(decode_window(data, 9, (64, 64), rng=np.random.default_rng(s), augment=which))
                for s in range(24)]

    aug = augmented(("flip", "stride", "zoom"))
    assert {f for f, _, _ in aug} == {False, True}
    assert {step for _, step, _ in aug} == {4, 8}
    plain_slope = plain[0][2]
    assert min(s for *_, s in aug) < 0.9 * plain_slope and max(s for *_, s in aug) <= plain_slope * 1.05
    # one at a time: only that one changes the window
    flips = augmented(("flip",))
    assert {f for f, _, _ in flips} == {False, True} and all(step == 4 for _, step, _ in flips)
    assert all(abs(s - plain_slope) < 0.05 * plain_slope for *_, s in flips)
    assert not any(f for f, _, _ in augmented(("zoom",)))
    # evaluation windows (no rng) are never augmented; unknown names are an error
    plain_eval = decode_window(data, 9, (64, 64))
    assert np.array_equal(decode_window(data, 9, (64, 64), augment=("flip",)), plain_eval)
    with pytest.raises(ValueError, match="unknown augmentation"):
        decode_window(data, 9, (64, 64), rng=np.random.default_rng(0), augment=("rotate",))


def test_dis_flow_recovers_a_shift():
    rng = np.random.default_rng(0)
    base = (rng.random((72, 88, 3)) * 255).astype(np.uint8)
    import cv2

    base = cv2.GaussianBlur(base, (5, 5), 1.5)
    frames = np.stack([base[4:68, 8:72], base[4:68, 5:69]])  # content moves 3 px right
    f = dis_flow(frames)
    assert f.shape == (1, 2, 64, 64)
    # backward flow: frame1(p) = frame0(p + flow) = frame0(p - 3) -> dx = -3, dy = 0 in the interior
    assert abs(float(np.median(f[0, 0, 16:48, 16:48])) + 3.0) < 0.5
    assert abs(float(np.median(f[0, 1, 16:48, 16:48]))) < 0.5
    # and warping frame 0 with it reproduces frame 1
    t = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    w = warp(t[:1], torch.from_numpy(f))
    assert float((w[0, :, 16:48, 16:48] - t[1, :, 16:48, 16:48]).abs().mean()) < 6


def test_losses_behave():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 5, 24, 24) * 2 - 1
    assert float(ssim_loss(x, x)) < 1e-5
    assert float(ssim_loss(torch.zeros_like(x), x)) > 0.5
    flow = torch.zeros(1, 4, 2, 24, 24)
    assert float(flow_consistency_loss(x, x, flow)) == 0.0
    shuffled = x[:, :, [0, 3, 1, 4, 2]]
    assert float(flow_consistency_loss(shuffled, x, flow)) > 0.1
    with pytest.raises(ValueError, match="flow must be"):
        flow_consistency_loss(x, x, flow[:, :2])
    with pytest.raises(ValueError, match="no flow"):
        TokenizerLoss(LossConfig(flow=1.0))(x, x)

    class Plug:  # a user's perceptual loss: anything callable(rec, target) -> scalar
        def __call__(self, rec, target):
            return (rec - target).pow(2).mean()

    total, parts = TokenizerLoss(LossConfig(l1=0, ssim=0), perceptual=[(0.5, Plug())])(x + 0.1, x)
    assert set(parts) == {"perceptual0"} and abs(float(total) - 0.005) < 1e-4
    with pytest.raises(ValueError, match="cannot load perceptual"):
        TokenizerLoss(LossConfig(perceptual=[{"target": "no_such_mod:LPIPS"}]))


# ---------------------------------------------------------------- training
def test_training_reduces_loss_and_beats_untrained(trained, data):
    r = trained["result"]
    assert r.step == 30 and len(r.losses) == 30
    first, last = np.mean(r.losses[:5]), np.mean(r.losses[-5:])
    assert last < 0.8 * first, (first, last)
    log = read_loss_log(trained["out"])
    assert [e["step"] for e in log] == list(range(1, 31))
    assert {"loss", "l1", "ssim", "lr", "grad_norm"} <= set(log[0])
    ck = read_checkpoint(trained["out"])
    assert ck["step"] == 30 and ck["train_config"]["tokenizer"] == "cv4x8x8"

    torch.manual_seed(trained["cfg"].seed)  # the same initial weights training started from
    untrained = build_tokenizer("cv4x8x8", preset="tiny").eval()
    tok = load_checkpoint(trained["out"])
    before = evaluate_videos(untrained, [data["held_out"]], num_frames=9)["overall"]
    after = evaluate_videos(tok, [data["held_out"]], num_frames=9)["overall"]
    assert after["psnr"] > before["psnr"] + 3, (before, after)
    assert after["ssim"] > before["ssim"]


def test_unset_window_gives_every_tokenizer_two_latent_frames_after_the_first(trained):
    cfg = load_train_config(CONFIG)
    assert cfg.num_frames is None
    assert (cfg.window_frames(1), cfg.window_frames(4), cfg.window_frames(8)) == (9, 9, 17)
    assert cfg.model_copy(update={"num_frames": 25}).window_frames(8) == 25
    assert cfg.eval_frames() == 19 and cfg.model_copy(update={"num_frames": 9}).eval_frames() == 19
    # a run's own config records the window it trained on, never the unset value
    run_cfg = yaml.safe_load((trained["out"] / "train_config.yaml").read_text())
    assert run_cfg["num_frames"] == _cfg().window_frames(4) == 9


def test_resume_matches_uninterrupted_run(data, tmp_path):
    cfg = _cfg(steps=6, checkpoint_every=3, batch_size=1, model={"channels": 8})
    full = train(cfg, data["manifest"], tmp_path / "full")
    part = train(cfg, data["manifest"], tmp_path / "part", steps=3)
    assert read_checkpoint(tmp_path / "part")["step"] == 3
    rest = train(cfg, data["manifest"], tmp_path / "part", resume=True)
    assert rest.step == 6
    np.testing.assert_allclose(part.losses + rest.losses, full.losses, rtol=1e-5)
    a, b = read_checkpoint(tmp_path / "full"), read_checkpoint(tmp_path / "part")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"], rtol=1e-5, atol=1e-9)
    assert [e["step"] for e in read_loss_log(tmp_path / "part")] == list(range(1, 7))
    # refusing to overwrite, and resuming nothing
    with pytest.raises(CheckpointError, match="--resume"):
        train(cfg, data["manifest"], tmp_path / "full")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(cfg, data["manifest"], tmp_path / "nothing", resume=True)


def test_max_seconds_stops_with_a_checkpoint_and_resume_goes_on(data, tmp_path):
    cfg = _cfg(steps=10_000, checkpoint_every=10_000, batch_size=1, model={"channels": 8}, max_seconds=0.5,
               augment=["flip", "zoom"])
    r = train(cfg, data["manifest"], tmp_path / "run")
    assert 1 <= r.step < 10_000 and read_checkpoint(tmp_path / "run")["step"] == r.step
    more = train(cfg, data["manifest"], tmp_path / "run", resume=True)
    assert more.step > r.step
    assert [e["step"] for e in read_loss_log(tmp_path / "run")] == list(range(1, more.step + 1))


def test_finetune_init_and_wrong_architecture(trained, data, tmp_path):
    cfg = _cfg(steps=2)
    r = train(cfg, data["manifest"], tmp_path / "ft", init=trained["out"])
    # starting from trained weights: the first fine-tuning loss is near the end of training, not the start
    assert r.losses[0] < np.mean(trained["result"].losses[:3])
    with pytest.raises(CheckpointError, match="does not fit"):
        train(_cfg(steps=1, model={"channels": 8}), data["manifest"], tmp_path / "ft2", init=trained["out"])


def test_dv_straight_through_and_flow_loss(data, tmp_path):
    cfg = _cfg(tokenizer="dv4x8x8", steps=3, batch_size=1, model={"channels": 8},
               loss={"l1": 1.0, "ssim": 0.2, "flow": 0.5})
    torch.manual_seed(cfg.seed)
    init = build_tokenizer("dv4x8x8", preset="tiny", channels=8).state_dict()
    r = train(cfg, data["manifest"], tmp_path / "dv")
    assert r.step == 3 and all(np.isfinite(r.losses))
    log = read_loss_log(tmp_path / "dv")
    assert {"flow", "quant_error", "codebook_usage"} <= set(log[-1]) and log[-1]["flow"] > 0
    trained_sd = r.model.state_dict()
    # gradients reached the encoder through the FSQ rounding (straight-through estimator)
    enc = [k for k in init if k.startswith("encoder.") and k.endswith("weight")]
    assert any(not torch.equal(init[k], trained_sd[k]) for k in enc)
    assert not torch.equal(init["quant_conv.weight"], trained_sd["quant_conv.weight"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, manifest: str, out: str, dump: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = load_train_config(CONFIG, **{**FAST, "steps": 3, "batch_size": 1, "model": {"channels": 8},
                                           "threads": 1})
        r = train(cfg, manifest, out)
        torch.save({"model": r.model.state_dict(), "losses": r.losses}, Path(dump) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_gloo_processes_identical_weights(data, tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), data["manifest"], str(tmp_path / "ddp"), str(tmp_path)),
             nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["losses"] == b["losses"]  # logged losses are all-reduced means
    ck = read_checkpoint(tmp_path / "ddp")  # rank 0 wrote the checkpoint
    assert ck["step"] == 3
    assert all(torch.equal(ck["model"][k], a["model"][k]) for k in a["model"])
    torch.manual_seed(0)
    init = build_tokenizer("cv4x8x8", preset="tiny", channels=8).state_dict()
    assert any(not torch.equal(init[k], a["model"][k]) for k in init)


def test_torchrun_entry_point(data, tmp_path):
    """The launcher path users take: torchrun with 2 Gloo processes on CPU."""
    import subprocess
    import sys

    cfg = tmp_path / "ddp.yaml"
    cfg.write_text("crop: [32, 32]\nbatch_size: 1\nmodel: {channels: 8}\nthreads: 1\nwarmup_steps: 0\n")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "wfm_platform.tokenizer.train",
                        "--config", str(cfg), "--shards", data["manifest"], "--out", str(tmp_path / "run"),
                        "--steps", "2"], check=False, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["step"] == 2 and np.isfinite(res["last_loss"])
    assert read_checkpoint(tmp_path / "run")["step"] == 2
    assert [e["step"] for e in read_loss_log(tmp_path / "run")] == [1, 2]


# ---------------------------------------------------------------- CLI
def test_cli_eval_json(trained, data):
    res = runner.invoke(tokenizer_app, ["eval", str(data["held_out"]), "--checkpoint", str(trained["out"]),
                                        "--frames", "9", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == {"overall", "videos"} and set(out["overall"]) == {"psnr", "ssim"}
    v = out["videos"][str(data["held_out"])]
    assert {"psnr", "ssim", "frames"} <= set(v) and v["frames"] == 9
    assert 5 < v["psnr"] < 60 and 0 < v["ssim"] <= 1


def test_cli_encode_decode_roundtrip(trained, data, tmp_path):
    tokens = tmp_path / "t.npz"
    res = runner.invoke(tokenize_app, ["encode", str(data["held_out"]), "--checkpoint", str(trained["out"]),
                                       "--frames", "13", "--out", str(tokens), "--json"])
    assert res.exit_code == 0, res.output
    z, meta = load_tokens(tokens)
    assert meta["tokenizer"] == "cv4x8x8" and meta["num_frames"] == 13 and z.shape[:3] == (1, 16, 4)
    video = tmp_path / "dec.mp4"
    res = runner.invoke(tokenize_app, ["decode", str(tokens), "--out", str(video)])
    assert res.exit_code == 0, res.output
    info = probe(video, count_frames=True)
    assert info.num_frames == 13 and (info.width, info.height) == (96, 40)

    # DV without a checkpoint (random weights, fixed seed), .pt file
    pt = tmp_path / "t.pt"
    res = runner.invoke(tokenize_app, ["encode", str(data["held_out"]), "--tokenizer", "dv4x8x8",
                                       "--preset", "tiny", "--frames", "5", "--out", str(pt)])
    assert res.exit_code == 0, res.output
    idx, meta = load_tokens(pt)
    assert meta["kind"] == "dv" and idx.dtype == torch.int64 and idx.shape[:2] == (1, 2)
    res = runner.invoke(tokenize_app, ["decode", str(pt), "--out", str(tmp_path / "dv.mp4")])
    assert res.exit_code == 0, res.output
    assert probe(tmp_path / "dv.mp4", count_frames=True).num_frames == 5

    res = runner.invoke(tokenize_app, ["roundtrip", str(data["held_out"]), "--checkpoint", str(trained["out"]),
                                       "--frames", "9", "--out", str(tmp_path / "rt.mp4"), "--json"])
    assert res.exit_code == 0, res.output
    rt = json.loads(res.stdout)
    assert rt["frames"] == 9 and rt["psnr"] > 10 and 0 < rt["ssim"] <= 1


def test_cli_train_progress_and_bad_inputs(data, tmp_path):
    res = runner.invoke(tokenizer_app, ["train", "--config", str(CONFIG), "--shards", data["manifest"],
                                        "--out", str(tmp_path / "cli"), "--steps", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["step"] == 1

    def fails(app, args, pattern):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert pattern in " ".join(r.output.split()), r.output

    fails(tokenizer_app, ["train", "--config", str(CONFIG), "--shards", str(tmp_path / "nope" / "shard-000000.tar"),
                          "--out", str(tmp_path / "x")], "does not exist")
    fails(tokenizer_app, ["train", "--config", str(CONFIG), "--shards", str(tmp_path / "nope" / "manifest.json"),
                          "--out", str(tmp_path / "x")], "no shard manifest")
    fails(tokenizer_app, ["train", "--config", str(tmp_path / "missing.yaml"), "--shards", data["manifest"],
                          "--out", str(tmp_path / "x")], "does not exist")
    fails(tokenizer_app, ["eval", str(data["held_out"]), "--checkpoint", str(tmp_path / "no_ckpt")],
          "does not exist")
    fails(tokenizer_app, ["eval", str(data["held_out"]), "--checkpoint", str(tmp_path / "cli"),
                          "--frames", "500"], "too short")
    fails(tokenize_app, ["encode", str(data["held_out"]), "--tokenizer", "cv9x9x9", "--out", str(tmp_path / "a.npz")],
          "unknown tokenizer")
    fails(tokenize_app, ["encode", str(tmp_path / "missing.mp4"), "--tokenizer", "cv4x8x8", "--preset", "tiny",
                         "--out", str(tmp_path / "a.npz")], "does not exist")
    fails(tokenize_app, ["decode", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "a.mp4")], "does not exist")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    fails(tokenizer_app, ["eval", str(data["held_out"]), "--checkpoint", str(garbage)], "not a readable checkpoint")
    with pytest.raises(ShardSourceError):
        ClipStream([], ClipStreamConfig())


def test_lr_factor_warmup_then_cosine_to_min_ratio():
    from wfm_platform.tokenizer.train import lr_factor

    assert [lr_factor(i, 100, 4, 0.1) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 100, 4, 0.1) == pytest.approx(1.0)
    assert lr_factor(52, 100, 4, 0.1) == pytest.approx(0.55)  # halfway through the cosine
    assert lr_factor(100, 100, 4, 0.1) == pytest.approx(0.1)
    assert lr_factor(500, 100, 4, 0.1) == pytest.approx(0.1)  # past the end: stays at the floor
    assert {lr_factor(i, 100, 0, 1.0) for i in range(0, 120, 7)} == {1.0}  # min_lr_ratio 1: constant
    factors = [lr_factor(i, 100, 0, 0.0) for i in range(101)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))
