"""Tokenizer training on a dataset version: the run records the exact version it read (checkpoint and
train_config.yaml), resume refuses other data, old checkpoints still load, the CLI's --dataset / --shards.
Real clips (bikes shots, cockatoo) in real WebDataset shards; CPU, tiny preset, 32x32 crops, few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from wfm_platform.curation.shards import ShardSample, write_shards
from wfm_platform.storage.datasets import DatasetNotFound, DatasetRegistry
from wfm_platform.storage.objectstore import ObjectStore
from wfm_platform.tokenizer.cli import tokenizer_app
from wfm_platform.tokenizer.data import ShardSourceError
from wfm_platform.tokenizer.train import (
    CONFIG_NAME,
    CheckpointError,
    data_record,
    load_checkpoint,
    load_train_config,
    read_checkpoint,
    train,
)
from wfm_platform.video import transcode_clip

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tokenizer" / "train_tiny.yaml"
FAST = {"crop": (32, 32), "batch_size": 1, "warmup_steps": 0, "log_every": 1, "model": {"channels": 8}}
runner = CliRunner()


def _cfg(**kw):
    return load_train_config(CONFIG, **{**FAST, **kw})


@pytest.fixture(scope="module")
def env(samples_dir, tmp_path_factory) -> dict:
    """A store with two curated batches of real clips and two versions of dataset `bikes`:
    1.0.0 = batch b1 (3 bikes shots), 1.1.0 = b1 + b2 (cockatoo)."""
    tmp = tmp_path_factory.mktemp("tokds")
    clips = {}
    for i, (a, b) in enumerate([(0, 29), (30, 75), (76, 136)]):
        clips[f"bikes{i}"] = tmp / f"bikes{i}.mp4"
        transcode_clip(samples_dir / "bikes.mp4", a, b, clips[f"bikes{i}"], fps=25, preset="ultrafast", max_side=96)
    clips["cockatoo"] = tmp / "cockatoo.mp4"
    transcode_clip(samples_dir / "cockatoo.mp4", 0, 29, clips["cockatoo"], fps=20, preset="ultrafast", max_side=96)
    store = ObjectStore(tmp / "store")
    for batch, names in {"b1": ["bikes0", "bikes1", "bikes2"], "b2": ["cockatoo"]}.items():
        samples = [ShardSample(n, str(clips[n]), {}, f"clip {n}") for n in names]
        write_shards(samples, store, f"webdataset_shards/{batch}", shard_set=batch, max_samples=2)
    reg = DatasetRegistry(store)
    v1 = reg.create("bikes", partitions=["b1"], note="bikes only")
    v2 = reg.create("bikes", partitions=["b1", "b2"])
    assert (v1.ref, v2.ref) == ("bikes@1.0.0", "bikes@1.1.0")
    return {"store": store, "reg": reg, "v1": v1, "v2": v2, "tmp": tmp,
            "manifest": str(tmp / "store" / "webdataset_shards" / "b1" / "manifest.json")}


def test_dataset_run_records_the_exact_version(env, tmp_path):
    out = tmp_path / "run"
    r = train(_cfg(steps=2), None, out, dataset="bikes", store=env["store"])  # NAME = latest, resolved now
    rec = env["v2"].training_record()
    assert rec == {"dataset": "bikes@1.1.0", "dataset_digest": env["v2"].digest, "num_clips": 4, "num_shards": 3}
    assert r.step == 2 and r.data == rec
    ck = read_checkpoint(out)
    assert ck["dataset"] == rec and data_record(out) == rec
    run_cfg = yaml.safe_load((out / CONFIG_NAME).read_text())
    assert run_cfg["dataset"] == rec and run_cfg["tokenizer"] == "cv4x8x8"
    # the run folder's config can be reused as a --config: the record is not a data choice
    again = load_train_config(out / CONFIG_NAME)
    assert again.crop == (32, 32) and again.steps == 2
    # resume continues on the same version (given as NAME@VERSION or as the DatasetVersion itself)
    assert train(_cfg(steps=3), None, out, dataset="bikes@1.1.0", store=env["store"], resume=True).step == 3
    assert train(_cfg(steps=4), None, out, dataset=env["v2"], store=env["store"], resume=True).step == 4
    assert read_checkpoint(out)["dataset"] == rec
    # ... and refuses another version: data_position would point into other data
    with pytest.raises(CheckpointError, match=r"trained on bikes@1.1.0, not bikes@1.0.0.*--init"):
        train(_cfg(steps=5), None, out, dataset="bikes@1.0.0", store=env["store"], resume=True)
    with pytest.raises(CheckpointError, match=r"trained on bikes@1.1.0, not 2 shard\(s\)"):
        train(_cfg(steps=5), env["manifest"], out, resume=True)
    # fine-tuning on another version is allowed, and records the new one
    ft = train(_cfg(steps=1), None, tmp_path / "ft", dataset="bikes@1.0.0", store=env["store"], init=out)
    assert ft.data["dataset"] == "bikes@1.0.0" and data_record(tmp_path / "ft")["num_clips"] == 3


def test_shards_run_records_the_shards_and_old_checkpoints_load(env, tmp_path):
    out = tmp_path / "run"
    r = train(_cfg(steps=2), env["manifest"], out)
    urls = [s["uri"] for s in env["store"].read_json("webdataset_shards/b1/manifest.json")["shards"]]
    assert len(urls) == 2 and r.data == {"shards": urls} and read_checkpoint(out)["dataset"] == {"shards": urls}
    assert yaml.safe_load((out / CONFIG_NAME).read_text())["dataset"] == {"shards": urls}
    # a checkpoint written before runs recorded their data: loads, resumes, then records
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    del ck["dataset"]
    torch.save(ck, out / "checkpoint.pt")
    assert data_record(out) is None and load_checkpoint(out).config.name == "cv4x8x8"
    assert train(_cfg(steps=3), env["manifest"], out, resume=True).step == 3
    assert data_record(out) == {"shards": urls}
    # other shards than the checkpoint's: refused
    with pytest.raises(CheckpointError, match="not 1 shard"):
        train(_cfg(steps=4), urls[:1], out, resume=True)


def test_bad_data_requests_fail_before_training(env, tmp_path):
    st = env["store"]
    with pytest.raises(ValueError, match="exactly one of --shards"):
        train(_cfg(steps=1), env["manifest"], tmp_path / "a", dataset="bikes", store=st)
    with pytest.raises(ValueError, match="exactly one of --shards"):
        train(_cfg(steps=1), None, tmp_path / "a", store=st)
    with pytest.raises(DatasetNotFound, match="no dataset named 'cars'.*bikes"):
        train(_cfg(steps=1), None, tmp_path / "a", dataset="cars", store=st)
    with pytest.raises(DatasetNotFound, match="cars@1.0.0 does not exist; versions: none"):
        train(_cfg(steps=1), None, tmp_path / "a", dataset="cars@1.0.0", store=st)
    with pytest.raises(DatasetNotFound, match=r"bikes@9.0.0 does not exist; versions: 1.0.0, 1.1.0"):
        train(_cfg(steps=1), None, tmp_path / "a", dataset="bikes@9.0.0", store=st)
    with pytest.raises(ValueError, match="semantic version"):
        train(_cfg(steps=1), None, tmp_path / "a", dataset="bikes@latest", store=st)
    assert not (tmp_path / "a").exists()  # nothing written for a request that cannot run

    # a version whose shard file went missing, and a fully erased (redacted) version
    other = ObjectStore(tmp_path / "store2")
    for key in env["store"].list("webdataset_shards/b2"):
        other.write_bytes(key, env["store"].read_bytes(key))
    m = env["store"].read_json("webdataset_shards/b2/manifest.json")
    m["shards"] = [{**s, "uri": s["uri"].replace(env["store"].uri(), other.uri())} for s in m["shards"]]
    reg = DatasetRegistry(other)
    v = reg.create("cock", [m])
    other.delete(other.rel(v.shards[0].uri))
    with pytest.raises(ShardSourceError, match="does not exist"):
        train(_cfg(steps=1), None, tmp_path / "b", dataset="cock@1.0.0", store=other)
    gone = reg.redact(v, erasure_id="e1", clip_ids=set(v.clip_ids), removed_uris={s.uri for s in v.shards})
    assert gone.shards == ()
    with pytest.raises(ShardSourceError, match="lists no shards"):
        train(_cfg(steps=1), None, tmp_path / "b", dataset="cock@1.0.0", store=other)


def test_cli_dataset_and_shards(env, tmp_path):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({**yaml.safe_load(CONFIG.read_text()), "crop": [32, 32], "batch_size": 1,
                                        "warmup_steps": 0, "model": {"channels": 8}}))
    store = env["store"].uri()
    res = runner.invoke(tokenizer_app, ["train", "--config", str(cfg_file), "--dataset", "bikes@1.0.0",
                                        "--store", store, "--out", str(tmp_path / "r1"), "--steps", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["data"] == env["v1"].training_record() and out["step"] == 1
    assert read_checkpoint(tmp_path / "r1")["dataset"]["dataset"] == "bikes@1.0.0"
    # the store comes from $WFM_STORAGE_ROOT when --store is not given
    res = runner.invoke(tokenizer_app, ["train", "--config", str(cfg_file), "--dataset", "bikes",
                                        "--out", str(tmp_path / "r2"), "--steps", "1", "--json"],
                        env={"WFM_STORAGE_ROOT": store})
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["data"]["dataset"] == "bikes@1.1.0"
    # --shards still works and records the shards
    res = runner.invoke(tokenizer_app, ["train", "--config", str(cfg_file), "--shards", env["manifest"],
                                        "--out", str(tmp_path / "r3"), "--steps", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout.strip().splitlines()[-1])["data"]["shards"]) == 2

    def fails(args: list[str], msg: str) -> None:
        r = runner.invoke(tokenizer_app, ["train", "--config", str(cfg_file), "--out", str(tmp_path / "x"), *args])
        assert r.exit_code == 2, r.output
        assert msg in " ".join(r.output.split()), r.output

    fails([], "exactly one of --shards")
    fails(["--shards", env["manifest"], "--dataset", "bikes"], "exactly one of --shards")
    fails(["--dataset", "cars", "--store", store], "no dataset named 'cars'")
    fails(["--dataset", "bikes@2.0.0", "--store", store], "bikes@2.0.0 does not exist")
    fails(["--shards", env["manifest"], "--store", store], "--store is where --dataset versions are looked up")
    assert not (tmp_path / "x").exists()
