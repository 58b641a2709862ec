"""Dataset versions over real WebDataset shards (written from real footage with write_shards)."""

import json

import pytest
import typer
from typer.testing import CliRunner

from wfm_platform.curation.config import PipelineConfig
from wfm_platform.curation.shards import ShardSample, open_dataset, write_shards
from wfm_platform.storage.catalog import Catalog
from wfm_platform.storage.datasets import (DatasetError, DatasetExists, DatasetNotFound, DatasetRegistry,
                                           bump_version, parse_ref, parse_version)
from wfm_platform.storage.datasets_cli import dataset_app
from wfm_platform.storage.objectstore import ObjectStore
from wfm_platform.video import iter_frames, write_mp4


@pytest.fixture(scope="module")
def clips(tmp_path_factory, samples_dir):
    d = tmp_path_factory.mktemp("clips")
    spec = {"face": ("carphone_pristine.mp4", 0, 29, (176, 144)), "street": ("vtest.avi", 0, 19, (240, 180)),
            "bikes": ("bikes.mp4", 0, 24, (320, 136))}
    out = {}
    for name, (src, a, b, size) in spec.items():
        write_mp4((img for _, img in iter_frames(samples_dir / src, start=a, end=b, size=size)),
                  d / f"{name}.mp4", fps=10)
        out[name] = d / f"{name}.mp4"
    return out


@pytest.fixture()
def env(tmp_path, clips):
    store = ObjectStore(tmp_path / "store")
    catalog = Catalog(str(tmp_path / "catalog"))
    for batch, names in {"b1": ["face", "street"], "b2": ["bikes"]}.items():
        samples = [ShardSample(clip_id=f"{batch}-{n}", mp4_path=str(clips[n]), caption=f"a {n}") for n in names]
        write_shards(samples, store, f"webdataset_shards/{batch}", shard_set=batch)
    return store, catalog, DatasetRegistry(store, catalog)


def test_versions_are_immutable_semver_and_diffable(env):
    store, catalog, reg = env
    v1 = reg.create("mix", partitions=["b1"], note="first")
    assert v1.ref == "mix@1.0.0" and v1.parent is None and v1.batches == ("b1",)
    assert v1.clip_ids == ("b1-face", "b1-street") and v1.digest == v1.compute_digest()
    assert store.exists("datasets/mix/1.0.0.json") and v1.code_digest.startswith("wfm_platform 0.1.0")
    assert len(v1.config_digest) == 64
    v2 = reg.create("mix", partitions=["b1", "b2"])  # minor bump by default
    assert v2.version == "1.1.0" and v2.parent == "1.0.0"
    assert reg.get("mix").version == "1.1.0" and reg.get("mix@1.0.0") == v1
    d = reg.diff("mix@1.0.0", "mix@1.1.0")
    assert d.added_clips == ["b2-bikes"] and d.removed_clips == [] and d.unchanged_clips == 2
    assert len(d.added_shards) == 1 and not d.config_changed
    # the same content again: no duplicate version, the latest comes back
    same = reg.create("mix", partitions=["b2", "b1"], bump="major")
    assert same == v2 and reg.versions("mix") == ["1.0.0", "1.1.0"]
    # fewer clips: a new version; explicit versions must be new and newer
    with pytest.raises(DatasetExists, match="immutable"):
        reg.create("mix", partitions=["b2"], version="1.1.0")
    with pytest.raises(DatasetError, match="not newer"):
        reg.create("mix", partitions=["b2"], version="1.0.5")
    v3 = reg.create("mix", partitions=["b2"], bump="major")
    assert v3.version == "2.0.0" and reg.diff(v2, v3).removed_clips == ["b1-face", "b1-street"]
    # versions sort semantically (2.10.0 > 2.9.0), not as text
    reg.create("mix", partitions=["b1", "b2"], version="2.9.0")
    reg.create("mix", partitions=["b1"], version="2.10.0")
    assert reg.versions("mix")[-1] == "2.10.0"
    # catalog rows through the catalog's own API
    rows = catalog.datasets("mix")
    rows.sort(key=lambda r: parse_version(r["version"]))  # the catalog orders by created_at, then text
    assert [r["version"] for r in rows] == ["1.0.0", "1.1.0", "2.0.0", "2.9.0", "2.10.0"]
    assert rows[1]["parent"] == "mix@1.0.0" and rows[1]["num_clips"] == 3
    assert rows[0]["manifest_uri"] == store.uri("datasets/mix/1.0.0.json")


def test_a_version_streams_and_verifies(env):
    store, _, reg = env
    v = reg.create("mix", partitions=["b1", "b2"], verify=True)
    keys = sorted(s["__key__"] for s in open_dataset(v.as_shard_manifest(), store=store))
    assert keys == ["b1-face", "b1-street", "b2-bikes"]
    assert reg.verify(v) == []
    assert v.training_record() == {"dataset": "mix@1.0.0", "dataset_digest": v.digest, "num_clips": 3,
                                   "num_shards": 2}
    # a shard changed after the version was made: verification names it
    tar = store.local_path(store.rel(v.shards[0].uri))
    tar.write_bytes(tar.read_bytes()[:-1024])
    problems = reg.verify(v)
    assert any("sha256 mismatch" in p for p in problems) and any(v.shards[0].uri in p for p in problems)
    with pytest.raises(DatasetError, match="fail verification"):
        reg.create("other", partitions=["b1"], verify=True)
    # a hand-edited manifest no longer matches its digest
    rel = "datasets/mix/1.0.0.json"
    data = json.loads(store.read_bytes(rel))
    data["note"] = "edited"
    store.write_json(rel, data)
    assert any("digest mismatch" in p for p in reg.verify("mix", deep=False))


def test_config_digest_follows_the_pipeline_config(env):
    _, _, reg = env
    a = reg.create("cfg", partitions=["b1"], config=PipelineConfig.load())
    changed = PipelineConfig.load()
    changed.dedup.eps = 0.2
    b = reg.create("cfg", partitions=["b1"], config=changed)  # same shards, other config: a new version
    assert b.version == "1.1.0" and a.config_digest != b.config_digest
    assert reg.diff(a, b).config_changed


def test_bad_requests_fail_clearly(env):
    _, _, reg = env
    with pytest.raises(DatasetNotFound, match="no dataset named 'nope'.*wfm dataset create"):
        reg.get("nope")
    with pytest.raises(DatasetError, match="batch 'b7' has no curated shards"):
        reg.create("x", partitions=["b7"])
    with pytest.raises(DatasetError, match="needs shards"):
        reg.create("x")
    for bad in ("a/b", "", "x@y", "@1.0.0"):
        with pytest.raises(DatasetError):
            parse_ref(bad)
    with pytest.raises(DatasetError, match="semantic version"):
        reg.get("mix@1.0")
    assert bump_version("1.2.3", "patch") == "1.2.4" and bump_version("1.2.3", "major") == "2.0.0"
    with pytest.raises(DatasetError):
        reg.create("x", shard_manifests=[{"shards": [{"uri": "u"}]}])


def test_cli(env, tmp_path):
    store, _, _ = env
    app = typer.Typer()
    app.add_typer(dataset_app, name="dataset")
    s = ["--store", store.root]
    run = CliRunner().invoke
    r = run(app, ["dataset", "create", "cli-ds", "--batch", "b1", *s, "--catalog", str(tmp_path / "cat"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["dataset"] == "cli-ds@1.0.0"
    r = run(app, ["dataset", "create", "cli-ds", "-b", "b1", "-b", "b2", "--bump", "patch", *s,
                  "--catalog", str(tmp_path / "cat")])
    assert r.exit_code == 0 and "created cli-ds@1.0.1: 3 clips in 2 shards" in r.output
    r = run(app, ["dataset", "create", "cli-ds", "-b", "b1", "-b", "b2", *s, "--catalog", str(tmp_path / "cat")])
    assert r.exit_code == 0 and "unchanged: cli-ds@1.0.1" in r.output
    r = run(app, ["dataset", "list", *s, "--json"])
    assert [x["dataset"] for x in json.loads(r.stdout)] == ["cli-ds@1.0.0", "cli-ds@1.0.1"]
    r = run(app, ["dataset", "show", "cli-ds", *s, "--json"])
    assert json.loads(r.stdout)["version"] == "1.0.1"
    r = run(app, ["dataset", "diff", "cli-ds@1.0.0", "cli-ds@1.0.1", *s, "--json"])
    assert json.loads(r.stdout)["added_clips"] == ["b2-bikes"]
    r = run(app, ["dataset", "verify", "cli-ds", *s])
    assert r.exit_code == 0 and "ok" in r.output
    r = run(app, ["dataset", "show", "missing", *s])
    assert r.exit_code == 2 and "no dataset named 'missing'" in r.output
    r = run(app, ["dataset", "create", "cli-ds", "-b", "b9", *s, "--catalog", str(tmp_path / "cat")])
    assert r.exit_code == 2 and "b9" in r.output
