"""World-model training on a real tiny dataset version (bikes shots, curated into WebDataset shards and
versioned with DatasetRegistry): both families learn, resume is exact, post-training loads weights,
DDP and FSDP run with 2 Gloo processes, the dataset version is recorded, bad input fails clearly.

CPU; the real diffusion-tiny / ar-tiny presets (ar-tiny with 2 blocks to keep the file fast), the real
MiniLM text encoder, the tiny cv8x8x8 / dv8x8x8 tokenizers (random weights: the pipeline, not quality,
is under test); 1+8 frames at 32x32 -> 2x4x4 latents.
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
from typer.testing import CliRunner

from wfm_platform.curation.shards import ShardSample, write_shards
from wfm_platform.models.checkpoint import (
    CheckpointError,
    load_world_model,
    read_checkpoint,
    read_loss_log,
    save_checkpoint,
)
from wfm_platform.models.data import EncodeConfig, EncodedClipStream, batches, tokenizer_identity
from wfm_platform.models.train import load_train_config, train
from wfm_platform.models.train_cli import train_app
from wfm_platform.storage.datasets import DatasetError, DatasetRegistry
from wfm_platform.storage.objectstore import ObjectStore
from wfm_platform.tokenizer.train import load_tokenizer
from wfm_platform.video import transcode_clip

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "train" / "world_tiny.yaml"
FAST = {"num_frames": 9, "size": (32, 32), "batch_size": 2, "warmup_steps": 0, "log_every": 1,
        "latent_stats_clips": 2}
AR_SMALL = {"depth": 2, "medusa_heads": 1}  # ar-tiny, fewer blocks: the 64k embedding/head dominate anyway


@pytest.fixture(scope="module")
def data(samples_dir, tmp_path_factory) -> dict:
    """Dataset bikes@1.0.0 (two bikes shots, one shard) and bikes2@1.0.0 (two other shots)."""
    tmp = tmp_path_factory.mktemp("wmdata")
    store = ObjectStore(tmp / "store")
    reg = DatasetRegistry(store)
    refs = []
    for name, shots in (("bikes", [(0, 29), (30, 75)]), ("bikes2", [(76, 136), (137, 186)])):
        samples = []
        for i, (a, b) in enumerate(shots):
            dst = tmp / f"{name}{i}.mp4"
            transcode_clip(samples_dir / "bikes.mp4", a, b, dst, fps=25, preset="ultrafast", max_side=128)
            samples.append(ShardSample(f"{name}-{i}", str(dst), {}, f"people riding bikes on a road, shot {a}"))
        m = write_shards(samples, store, f"webdataset_shards/{name}")
        refs.append(reg.create(name, [m]).ref)
    assert refs == ["bikes@1.0.0", "bikes2@1.0.0"]
    return {"store": store, "tmp": tmp}


@pytest.fixture(scope="module")
def text_encoder():
    from wfm_platform.models.text import load_text_encoder

    return load_text_encoder("minilm")


def _cfg(**kw):
    return load_train_config(CONFIG, **{**FAST, **kw})


@pytest.fixture(scope="module")
def dit(data, text_encoder, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dit") / "run"
    r = train("diffusion", "diffusion-tiny", _cfg(steps=30, lr=2e-3, checkpoint_every=15), "bikes@1.0.0", out,
              store=data["store"], text_encoder=text_encoder)
    return {"out": out, "result": r}


@pytest.fixture(scope="module")
def ar(data, text_encoder, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ar") / "run"
    r = train("autoregressive", "ar-tiny", _cfg(steps=20, lr=3e-3, model=AR_SMALL), "bikes", out,
              store=data["store"], text_encoder=text_encoder)
    return {"out": out, "result": r}


# ---------------------------------------------------------------- data
def test_stream_encodes_caches_and_checks(data, text_encoder, tmp_path):
    from wfm_platform.storage.datasets import DatasetRegistry

    dv = DatasetRegistry(data["store"]).get("bikes@1.0.0")
    cv = load_tokenizer(name="cv8x8x8", preset="tiny")
    enc = EncodeConfig(num_frames=9, size=(32, 32), seed=3)

    def stream(tok, family, cache=tmp_path / "cache"):
        return EncodedClipStream(dv.as_shard_manifest(), family=family, tokenizer=tok, text_encoder=text_encoder,
                                 cfg=enc, tokenizer_id=tokenizer_identity(tok, "x", "tiny", None),
                                 text_encoder_id="minilm", cache_dir=cache, store=data["store"], epochs=2)

    s = stream(cv, "diffusion")
    items = list(s)
    assert [i["key"] for i in items] == ["bikes-0", "bikes-1"] * 2
    for it in items:
        assert it["latents"].shape == (16, 2, 4, 4) and torch.isfinite(it["latents"]).all()
        assert it["text_emb"].shape[1] == 384 and it["text_mask"].all() and it["text_emb"].shape[0] > 3
    # epoch 2 came from the cache, bit for bit, and the window did not move between epochs
    assert (s.misses, s.hits) == (2, 2)
    assert torch.equal(items[0]["latents"], items[2]["latents"])
    assert not torch.equal(items[0]["latents"], items[1]["latents"])  # two different clips
    # the cached latents are what the tokenizer gives for that window (not stale, not padded)
    s2 = stream(cv, "diffusion", cache=None)
    fresh = next(iter(s2))
    torch.testing.assert_close(fresh["latents"], items[0]["latents"])
    b = next(batches(stream(cv, "diffusion"), 2))
    assert b["latents"].shape == (2, 16, 2, 4, 4) and b["text_mask"].dtype == torch.bool
    assert b["text_emb"].shape[:2] == b["text_mask"].shape

    dv_tok = load_tokenizer(name="dv8x8x8", preset="tiny")
    it = next(iter(stream(dv_tok, "autoregressive")))
    assert it["tokens"].shape == (2, 4, 4) and it["tokens"].dtype == torch.long
    assert 0 <= int(it["tokens"].min()) and int(it["tokens"].max()) < 64000
    with pytest.raises(ValueError, match="needs a CV tokenizer"):
        stream(dv_tok, "diffusion")
    with pytest.raises(ValueError, match=r"1 \+ 8\*n"):
        EncodedClipStream(dv.as_shard_manifest(), family="diffusion", tokenizer=cv, text_encoder=text_encoder,
                          cfg=EncodeConfig(num_frames=10, size=(32, 32)), tokenizer_id={}, text_encoder_id="")


# ---------------------------------------------------------------- training
@pytest.mark.parametrize("fixture", ["dit", "ar"])
def test_training_learns_records_dataset_and_loads(fixture, request):
    run = request.getfixturevalue(fixture)
    r, out = run["result"], run["out"]
    assert len(r.losses) == r.step and all(np.isfinite(r.losses))
    first, last = np.mean(r.losses[:5]), np.mean(r.losses[-5:])
    assert last < (0.8 if fixture == "dit" else 0.6) * first, (first, last)
    log = read_loss_log(out)
    assert [e["step"] for e in log] == list(range(1, r.step + 1))
    assert {"loss", "lr", "grad_norm"} <= set(log[0]) and log[-1]["lr"] < log[0]["lr"]  # cosine decay
    # every run records the exact dataset version it read (the AR run asked for "bikes": the latest)
    ck = read_checkpoint(out)
    assert ck["dataset"] == "bikes@1.0.0" and r.dataset == "bikes@1.0.0"
    assert ck["dataset_digest"] == DatasetRegistry(request.getfixturevalue("data")["store"]).get("bikes").digest
    assert ck["step"] == r.step and ck["preset"] == ("diffusion-tiny" if fixture == "dit" else "ar-tiny")
    assert ck["tokenizer"]["name"] in ("cv8x8x8", "dv8x8x8") and ck["text_encoder"] == "minilm"
    # epochs 2+ read the cache: the tokenizer ran once per clip (+ the latent-stats pass reads it too)
    assert r.cache_misses <= 2 and r.cache_hits >= 2 * r.step - 2
    model, meta = load_world_model(out)
    assert meta["untrained"] is False and meta["dataset"] == "bikes@1.0.0" and not model.training
    sd = r.model.state_dict()
    assert all(torch.equal(v, sd[k].cpu()) for k, v in model.state_dict().items())
    if fixture == "dit":  # latent normalisation estimated on the data, carried by the checkpoint
        assert isinstance(ck["config"]["latent_shift"], list) and ck["config"]["latent_scale"] != 1.0


def test_resume_matches_uninterrupted_run(data, text_encoder, tmp_path):
    cfg = _cfg(steps=4, checkpoint_every=2, lr=2e-3)
    kw = {"store": data["store"], "text_encoder": text_encoder}
    full = train("diffusion", "diffusion-tiny", cfg, "bikes@1.0.0", tmp_path / "full", **kw)
    part = train("diffusion", "diffusion-tiny", cfg, "bikes@1.0.0", tmp_path / "part", steps=2, **kw)
    assert read_checkpoint(tmp_path / "part")["step"] == 2
    rest = train("diffusion", "diffusion-tiny", cfg, "bikes@1.0.0", tmp_path / "part", resume=True, **kw)
    assert rest.step == 4
    np.testing.assert_allclose(part.losses + rest.losses, full.losses, rtol=1e-5)
    a, b = read_checkpoint(tmp_path / "full"), read_checkpoint(tmp_path / "part")
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=1e-5, atol=1e-6)
    assert [e["step"] for e in read_loss_log(tmp_path / "part")] == [1, 2, 3, 4]
    with pytest.raises(CheckpointError, match="--resume"):
        train("diffusion", "diffusion-tiny", cfg, "bikes@1.0.0", tmp_path / "full", **kw)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train("diffusion", "diffusion-tiny", cfg, "bikes@1.0.0", tmp_path / "none", resume=True, **kw)
    with pytest.raises(CheckpointError, match="post-train on the new one with --init"):
        train("diffusion", "diffusion-tiny", cfg, "bikes2@1.0.0", tmp_path / "part", resume=True, steps=5, **kw)


def test_max_seconds_stops_with_a_checkpoint_and_resume_goes_on(data, text_encoder, tmp_path):
    cfg = _cfg(steps=10_000, checkpoint_every=10_000, max_seconds=0.5)
    kw = {"store": data["store"], "text_encoder": text_encoder}
    r = train("diffusion", "diffusion-tiny", cfg, "bikes@1.0.0", tmp_path / "run", **kw)
    assert 1 <= r.step < 10_000 and read_checkpoint(tmp_path / "run")["step"] == r.step
    more = train("diffusion", "diffusion-tiny", cfg, "bikes@1.0.0", tmp_path / "run", resume=True, **kw)
    assert more.step > r.step
    assert [e["step"] for e in read_loss_log(tmp_path / "run")] == list(range(1, more.step + 1))


def test_activation_checkpointing_keeps_the_math(data, text_encoder, tmp_path):
    """Recomputing activations in backward trades compute for memory; the update must be the same."""
    kw = {"store": data["store"], "text_encoder": text_encoder}
    runs = {}
    for ac in (False, True):
        runs[ac] = train("diffusion", "diffusion-tiny", _cfg(steps=2, activation_checkpointing=ac), "bikes@1.0.0",
                         tmp_path / f"ac{int(ac)}", **kw)
    assert runs[True].model.grad_checkpointing and not runs[False].model.grad_checkpointing
    np.testing.assert_allclose(runs[True].losses, runs[False].losses, rtol=1e-5)
    a, b = runs[True].model.state_dict(), runs[False].model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_post_training_from_checkpoint_and_bad_input(dit, ar, data, text_encoder, tmp_path):
    kw = {"store": data["store"], "text_encoder": text_encoder}
    r = train("diffusion", "diffusion-tiny", _cfg(steps=3, lr=1e-4), "bikes2@1.0.0", tmp_path / "post",
              init=dit["out"], **kw)
    ck = read_checkpoint(tmp_path / "post")
    assert ck["dataset"] == "bikes2@1.0.0" and ck["init"] == str(dit["out"]) and ck["step"] == 3
    # the trained latent normalisation came along, and training started from the trained weights
    assert ck["config"]["latent_shift"] == read_checkpoint(dit["out"])["config"]["latent_shift"]
    assert np.mean(r.losses) < np.mean(dit["result"].losses[:3])

    cfg = _cfg(steps=1)
    with pytest.raises(CheckpointError, match="is a diffusion checkpoint"):
        train("autoregressive", "ar-tiny", cfg, "bikes@1.0.0", tmp_path / "x", init=dit["out"], **kw)
    with pytest.raises(CheckpointError, match="no world-model checkpoint"):
        train("diffusion", "diffusion-tiny", cfg, "bikes@1.0.0", tmp_path / "x", init=tmp_path / "nope", **kw)
    with pytest.raises(CheckpointError, match="does not fit"):  # ar-tiny preset (4 blocks) vs a 2-block run
        train("autoregressive", "ar-tiny", cfg, "bikes@1.0.0", tmp_path / "x", init=ar["out"], **kw)
    with pytest.raises(DatasetError, match="does not exist"):
        train("diffusion", "diffusion-tiny", cfg, "bikes@9.9.9", tmp_path / "x", **kw)
    with pytest.raises(DatasetError, match="no dataset named 'cats'"):
        train("diffusion", "diffusion-tiny", cfg, "cats", tmp_path / "x", **kw)
    with pytest.raises(ValueError, match="is in the autoregressive family"):
        train("diffusion", "ar-tiny", cfg, "bikes@1.0.0", tmp_path / "x", **kw)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_world_model(garbage)
    with pytest.raises(CheckpointError, match="neither a checkpoint folder nor a preset"):
        load_world_model(tmp_path / "missing")
    model, meta = load_world_model("ar-tiny")
    assert meta["untrained"] is True and meta["family"] == "autoregressive" and model.family == "autoregressive"
    with pytest.raises(CheckpointError, match="not one of"):
        save_checkpoint(tmp_path / "y", torch.nn.Linear(2, 2), step=0, meta={})
    assert not (tmp_path / "x").exists()  # nothing half-written by the failed runs


# ---------------------------------------------------------------- 2 processes (Gloo)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_worker(rank: int, world: int, port: int, store_root: str, out: str, strategy: str, family: str,
                 dump: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        preset, model = ("diffusion-tiny", {}) if family == "diffusion" else ("ar-tiny", AR_SMALL)
        cfg = load_train_config(CONFIG, **{**FAST, "steps": 3, "batch_size": 1, "strategy": strategy,
                                           "model": model, "threads": 1, "checkpoint_every": 2})
        r = train(family, preset, cfg, "bikes@1.0.0", out, store=ObjectStore(store_root))
        sd = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
              for k, v in r.model.state_dict().items()}
        torch.save({"model": sd, "losses": r.losses}, Path(dump) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("strategy,family", [("ddp", "diffusion"), ("fsdp", "autoregressive")])
def test_two_gloo_processes(strategy, family, data, tmp_path):
    out = tmp_path / "run"
    mp.spawn(_dist_worker, args=(2, _free_port(), str(data["store"].local_path("")), str(out), strategy, family,
                                 str(tmp_path)), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a["losses"] == b["losses"] and len(a["losses"]) == 3  # logged losses are means over ranks
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k  # replicas (DDP) / gathered shards (FSDP) agree
    ck = read_checkpoint(out)  # rank 0 wrote the full state dict
    assert ck["step"] == 3 and ck["world_size"] == 2 and ck["strategy"] == strategy
    assert ck["dataset"] == "bikes@1.0.0"
    for k, v in a["model"].items():
        torch.testing.assert_close(ck["state_dict"][k], v)
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert len(state["rng"]) == 2 and state["data_position"] >= 6  # both ranks' RNG, global sample count
    model, _ = load_world_model(out)  # a sharded run loads as one plain model
    assert model.state_dict().keys() == a["model"].keys()


# ---------------------------------------------------------------- CLI
def test_cli_train_json_and_errors(data, tmp_path):
    runner = CliRunner()
    root = str(data["store"].local_path(""))
    cfg = tmp_path / "t.yaml"
    cfg.write_text(json.dumps({**FAST, "size": [32, 32], "steps": 2, "model": AR_SMALL}))
    args = ["--model", "ar-tiny", "--config", str(cfg), "--dataset", "bikes@1.0.0", "--store", root]
    res = runner.invoke(train_app, ["autoregressive", *args, "--out", str(tmp_path / "ok"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["step"] == 2 and out["dataset"] == "bikes@1.0.0" and np.isfinite(out["last_loss"])

    def fails(argv, needle):
        res = runner.invoke(train_app, argv)
        assert res.exit_code == 2, res.output
        assert needle in " ".join(res.output.split()), res.output

    # the torchrun entry point (here as one process): same arguments, JSON result on stdout
    from wfm_platform.models.train import main

    assert main(["autoregressive", *args, "--out", str(tmp_path / "main"), "--steps", "1"]) == 0
    assert read_checkpoint(tmp_path / "main")["step"] == 1

    fails(["diffusion", *args, "--out", str(tmp_path / "x")], "is in the autoregressive family")
    fails(["autoregressive", *args[:5], "bikes@2.0.0", *args[6:], "--out", str(tmp_path / "x")], "does not exist")
    fails(["autoregressive", *args, "--out", str(tmp_path / "x"), "--init", str(tmp_path / "nope")],
          "no world-model checkpoint")
    fails(["autoregressive", *args, "--out", str(tmp_path / "ok")], "--resume")
    fails(["autoregressive", *args, "--out", str(tmp_path / "x"), "--init", "ar-tiny@latest"],
          "no trained ar-tiny checkpoint")
    # PRESET@latest: post-train from what the autoregressive_wfm asset last published in --store
    from wfm_platform.models.checkpoint import publish_latest

    store = data["store"]
    store.put_file(tmp_path / "ok" / "model.pt", "autoregressive_wfm/ar-tiny/v1/model.pt")
    publish_latest(store, "autoregressive_wfm", "ar-tiny", "autoregressive_wfm/ar-tiny/v1", version="v1",
                   dataset="bikes@1.0.0", step=2, family="autoregressive")
    res = runner.invoke(train_app, ["autoregressive", *args, "--out", str(tmp_path / "post"), "--steps", "1",
                                    "--init", "ar-tiny@latest", "--json"])
    assert res.exit_code == 0, res.output
    assert read_checkpoint(tmp_path / "post")["init"].endswith("autoregressive_wfm/ar-tiny/v1/model.pt")
    fails(["autoregressive", "--model", "ar-tiny", "--config", str(tmp_path / "missing.yaml"), "--dataset",
           "bikes@1.0.0", "--out", str(tmp_path / "x")], "does not exist")
