"""dataset_versions materialized over real WebDataset shards (real footage), its verify check on a
damaged shard, and tokenizer_checkpoint trained on a dataset version (CPU, tiny preset, few steps)."""

import dagster as dg
import pytest
import yaml

from wfm_platform.curation.shards import ShardSample, write_shards
from wfm_platform.storage.catalog import Catalog
from wfm_platform.storage.datasets import DatasetRegistry
from wfm_platform.tokenizer.train import read_checkpoint
from wfm_platform.video import transcode_clip


@pytest.fixture(scope="module")
def clips(samples_dir, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("dsclips")
    out = {}
    for name, (src, a, b, fps) in {"bikes0": ("bikes.mp4", 0, 29, 25), "bikes1": ("bikes.mp4", 30, 75, 25),
                                   "street": ("vtest.avi", 0, 29, 10)}.items():
        out[name] = d / f"{name}.mp4"
        transcode_clip(samples_dir / src, a, b, out[name], fps=fps, preset="ultrafast", max_side=96)
    return out


@pytest.fixture()
def env(clips, tmp_path):
    """A fresh store with curated shards of batches b1 (two bikes shots) and b2 (a street scene)."""
    from resources import CatalogResource, PipelineConfigResource, StorageResource

    storage = StorageResource(root_uri=str(tmp_path / "store"), uploads_uri=str(tmp_path / "up"))
    store = storage.store()
    for batch, names in {"b1": ["bikes0", "bikes1"], "b2": ["street"]}.items():
        samples = [ShardSample(f"{batch}-{n}", str(clips[n]), {}, f"a {n}") for n in names]
        write_shards(samples, store, f"webdataset_shards/{batch}", shard_set=batch)
    (tmp_path / "dh").mkdir()
    resources = {"storage": storage, "catalog": CatalogResource(uri=str(tmp_path / "catalog")),
                 "pipeline_config": PipelineConfigResource()}
    return {"store": store, "resources": resources, "tmp": tmp_path}


def _materialize(env, instance, config: dict, **kw):
    from assets.datasets import DATASET_ASSETS

    return dg.materialize(DATASET_ASSETS, instance=instance, resources=env["resources"],
                          run_config={"ops": {"dataset_versions": {"config": config}}}, **kw)


def _md(result) -> dict:
    return {k: v.value for k, v in result.get_asset_materialization_events()[-1].materialization.metadata.items()}


def test_dataset_versions_asset(env):
    with dg.instance_for_test(temp_dir=str(env["tmp"] / "dh")) as instance:
        instance.add_dynamic_partitions("upload_batches", ["b1", "b2"])
        r = _materialize(env, instance, {"name": "mix", "batches": ["b1"], "note": "bikes"})
        assert r.success
        md = _md(r)
        assert md["dataset"] == "mix@1.0.0" and md["parent"] == "" and md["batches"] == "b1"
        assert md["num_clips"] == 2 and md["clips_added"] == 2 and md["clips_removed"] == 0
        assert md["bytes"] > 10_000 and md["num_shards"] >= 1 and not md["unchanged"]
        assert "| bucket | clips | shards |" in md["buckets"] and "first version" in md["diff"]
        checks = {e.check_name: e for e in r.get_asset_check_evaluations()}
        assert checks["dataset_verifies"].passed

        # default batches: every batch with shards; a minor bump over 1.0.0
        r = _materialize(env, instance, {"name": "mix"})
        md = _md(r)
        assert md["dataset"] == "mix@1.1.0" and md["parent"] == "mix@1.0.0" and md["batches"] == "b1, b2"
        assert md["num_clips"] == 3 and md["clips_added"] == 1 and md["clips_removed"] == 0
        assert "+1 / -0 clips" in md["diff"]
        v = DatasetRegistry(env["store"]).get("mix")
        assert v.ref == "mix@1.1.0" and md["digest"] == v.digest and DatasetRegistry(env["store"]).verify(v) == []
        rows = Catalog(str(env["tmp"] / "catalog")).datasets("mix")  # indexed in the catalog too
        assert sorted(row["version"] for row in rows) == ["1.0.0", "1.1.0"]
        # the data version downstream sees is the manifest digest
        ev = instance.get_latest_materialization_event(dg.AssetKey("dataset_versions"))
        assert ev.asset_materialization.tags["dagster/data_version"] == v.digest

        # the same content again: no new version; a major bump removing b1
        r = _materialize(env, instance, {"name": "mix", "batches": ["b2", "b1"], "bump": "major"})
        assert _md(r)["unchanged"] and _md(r)["dataset"] == "mix@1.1.0" and _md(r)["clips_added"] == -1
        r = _materialize(env, instance, {"name": "mix", "batches": ["b2"], "bump": "major"})
        md = _md(r)
        assert md["dataset"] == "mix@2.0.0" and md["clips_removed"] == 2 and md["clips_added"] == 0
        assert DatasetRegistry(env["store"]).versions("mix") == ["1.0.0", "1.1.0", "2.0.0"]


def test_damaged_shards_fail_closed(env):
    store = env["store"]
    with dg.instance_for_test(temp_dir=str(env["tmp"] / "dh")) as instance:
        instance.add_dynamic_partitions("upload_batches", ["b1", "b2"])
        assert _materialize(env, instance, {"name": "mix", "batches": ["b1"]}).success
        # flip bytes in the middle of a b1 shard (same size: only sha256 and the tar can tell)
        shard = DatasetRegistry(store).get("mix@1.0.0").shards[0]
        path = store.local_path(store.rel(shard.uri))
        data = bytearray(path.read_bytes())
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(data))
        # unchanged content: no new version, but the blocking check re-verifies and fails
        r = _materialize(env, instance, {"name": "mix", "batches": ["b1"]}, raise_on_error=False)
        ev = {e.check_name: e for e in r.get_asset_check_evaluations()}["dataset_verifies"]
        assert not ev.passed and "sha256 mismatch" in ev.metadata["problems"].value
        # a new version over the damaged shard is never written
        r = _materialize(env, instance, {"name": "mix", "bump": "major"}, raise_on_error=False)
        assert not r.success
        msg = " ".join(str(e.event_specific_data) for e in r.all_events if e.is_step_failure)
        assert "shards fail verification" in msg and "sha256 mismatch" in msg
        assert DatasetRegistry(store).versions("mix") == ["1.0.0"]
        # no curated shards at all, and a bad name: readable failures
        r = _materialize(env, instance, {"name": "bad/name"}, raise_on_error=False)
        assert not r.success
        assert "use letters, digits" in " ".join(str(e.event_specific_data) for e in r.all_events if e.is_step_failure)
        store.delete("webdataset_shards", recursive=True)
        r = _materialize(env, instance, {"name": "mix"}, raise_on_error=False)
        assert "no curated shards yet" in " ".join(str(e.event_specific_data) for e in r.all_events
                                                   if e.is_step_failure)


def test_tokenizer_checkpoint_on_a_dataset_version(env):
    from assets.tokenizer import TOKENIZER_ASSETS
    from wfm_platform.curation.config import REPO_ROOT

    v = DatasetRegistry(env["store"]).create("mix", partitions=["b1", "b2"])
    cfg = yaml.safe_load((REPO_ROOT / "configs/tokenizer/train_tiny.yaml").read_text())
    cfg.update(crop=[32, 32], batch_size=1, warmup_steps=0, model={"channels": 8})
    (env["tmp"] / "tiny.yaml").write_text(yaml.safe_dump(cfg))

    def run(config: dict, **kw):
        return dg.materialize(TOKENIZER_ASSETS, selection=["tokenizer_checkpoint"], partition_key="cv4x8x8",
                              instance=instance, resources={"storage": env["resources"]["storage"]},
                              run_config={"ops": {"tokenizer_checkpoint": {"config": {
                                  "config_path": str(env["tmp"] / "tiny.yaml"), "steps": 3, **config}}}}, **kw)

    def failure(r) -> str:
        assert not r.success
        return " ".join(str(e.event_specific_data) for e in r.all_events if e.is_step_failure)

    with dg.instance_for_test(temp_dir=str(env["tmp"] / "dh")) as instance:
        instance.add_dynamic_partitions("upload_batches", ["b1", "b2"])
        assert "no dataset named 'nope'" in failure(run({"dataset": "nope"}, raise_on_error=False))
        assert "not both" in failure(run({"dataset": "mix", "batches": ["b1"]}, raise_on_error=False))
        r = run({"dataset": "mix@1.0.0"})
        assert r.success
        md = _md(r)
        assert md["dataset"] == "mix@1.0.0" and md["dataset_digest"] == v.digest and md["steps"] == 3
        assert md["train_shards"] == len(v.shards) and "dataset version" in md["evaluated_on"]
        ck = read_checkpoint(env["store"].local_path("tokenizer_checkpoint/cv4x8x8"))
        assert ck["dataset"] == v.training_record()
