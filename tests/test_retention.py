"""Retention on a real curated batch, with `now` moved forward instead of waiting a year."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
import typer
from typer.testing import CliRunner

from test_erasure import curate_batch
from wfm_platform.curation.pipeline import read_stage
from wfm_platform.storage.datasets import DatasetRegistry
from wfm_platform.storage.retention import RetentionConfig, apply_retention, partition_time


@pytest.fixture(scope="module")
def curated(tmp_path_factory, samples_dir):
    tmp = tmp_path_factory.mktemp("retention")
    store, catalog, _ = curate_batch(tmp, samples_dir)
    return tmp, store, catalog


def _copy(tmp_path, curated):
    """A private copy of the curated store/catalog (URIs in manifests point at the original root,
    so the copy is made by re-rooting: the tests below only use keys, never manifest URIs)."""
    import shutil

    from wfm_platform.storage.catalog import Catalog
    from wfm_platform.storage.objectstore import ObjectStore

    src, _, _ = curated
    shutil.copytree(src / "store", tmp_path / "store")
    shutil.copytree(src / "catalog", tmp_path / "catalog")
    return ObjectStore(tmp_path / "store"), Catalog(str(tmp_path / "catalog"))


def test_policies_from_yaml_and_validation(tmp_path):
    p = RetentionConfig.load()
    assert p.assets["raw_videos"] == 90 and p.assets["clips"] == 365 and p.assets["webdataset_shards"] == 365
    assert p.logs["logs/retention"] == 30 and p.logs["logs/erasure"] is None
    bad = tmp_path / "r.yaml"
    bad.write_text("assets:\n  datasets: 10\n")
    with pytest.raises(ValueError, match="always kept"):
        RetentionConfig.load(bad)
    bad.write_text("assets:\n  clips: -1\n")
    with pytest.raises(ValueError, match=">= 0"):
        RetentionConfig.load(bad)
    with pytest.raises(FileNotFoundError):
        RetentionConfig.load(tmp_path / "missing.yaml")


def test_ages_move_with_now(tmp_path, curated):
    store, catalog = _copy(tmp_path, curated)
    born = partition_time(store, store.list("clips/b1"))
    assert abs((datetime.now(timezone.utc) - born).total_seconds()) < 3600  # manifest created_at
    keys_before = store.list("")
    # today nothing is old enough
    rep = apply_retention(store, catalog)
    assert rep.deleted == [] and rep.logs_deleted == []
    # in 100 days the raw videos (90 d) expire, nothing processed does: dry run first
    later = datetime.now(timezone.utc) + timedelta(days=100)
    plan = apply_retention(store, catalog, now=later, dry_run=True)
    assert [(a.asset, a.partition) for a in plan.deleted] == [("raw_videos", "b1")]
    assert plan.videos_marked_expired == 2 and plan.log_uri is None
    assert set(keys_before) <= set(store.list(""))  # the dry run deleted nothing
    rep = apply_retention(store, catalog, now=later)
    assert store.list("raw_videos") == [] and store.list("clips/b1")
    assert {v["status"] for v in catalog.videos()} == {"expired"} and len(catalog.clips()) == 2
    # the violation log (carphone's face was blurred and logged) is a 30-day log
    # (and the first run's own retention log, written "today", is 100 days old by then)
    assert sorted(lg.key.split("/")[0] for lg in rep.logs_deleted) == ["guardrails", "logs"]
    assert not store.list("guardrails")
    # its own log line, then the retention logs themselves expire after 30 days
    [line] = store.read_bytes(store.rel(rep.log_uri)).decode().splitlines()
    assert json.loads(line)["deleted"][0]["asset"] == "raw_videos"
    rep2 = apply_retention(store, catalog, now=later + timedelta(days=400))
    gone = [lg.key for lg in rep2.logs_deleted]
    assert store.rel(rep.log_uri) in gone  # 30 days, by object mtime


def test_processed_data_expires_but_dataset_shards_stay(tmp_path, curated):
    store, catalog = _copy(tmp_path, curated)
    # the copy's manifests carry the original root's URIs: register the dataset from keys in this store
    manifest = read_stage(store, "webdataset_shards", "b1")
    orig_root = manifest["prefix"].rsplit("/webdataset_shards/", 1)[0]
    for e in manifest["shards"]:
        e["uri"] = store.root + e["uri"][len(orig_root):]
    DatasetRegistry(store, catalog).create("keep-me", shard_manifests=[manifest])
    in_a_year = datetime.now(timezone.utc) + timedelta(days=366)
    rep = apply_retention(store, catalog, now=in_a_year)
    deleted = {a.asset for a in rep.deleted}
    assert {"raw_videos", "clips", "captions", "clip_embeddings", "guarded_clips"} <= deleted
    assert [(a.asset, a.partition) for a in rep.kept_for_datasets] == [("webdataset_shards", "b1")]
    left = store.list("")
    assert [k for k in left if k.startswith("webdataset_shards/b1/")] and store.list("datasets")
    assert not [k for k in left if k.startswith(("clips/", "raw_videos/", "captions/", "guarded_clips/"))]
    # clips of a kept dataset (and their videos) stay in the catalog: "what is in dataset keep-me"
    assert len(catalog.clips()) == 2 and len(catalog.videos()) == 2
    assert DatasetRegistry(store).verify("keep-me") == []


def test_processed_data_without_datasets_leaves_the_catalog_too(tmp_path, curated):
    store, catalog = _copy(tmp_path, curated)
    rep = apply_retention(store, catalog, now=datetime.now(timezone.utc) + timedelta(days=366))
    assert "webdataset_shards" in {a.asset for a in rep.deleted} and not rep.kept_for_datasets
    assert rep.catalog_rows_deleted["clips"] == 2 and rep.catalog_rows_deleted["videos"] == 2
    assert catalog.clips() == [] and catalog.videos() == []
    assert [k.split("/")[0] for k in store.list("")] == ["logs"]  # only the retention log itself


def test_cli_and_dagster_job(tmp_path, curated, dagster_home):
    from jobs.retention import RETENTION_JOBS, RETENTION_SCHEDULES, retention_job
    from resources import CatalogResource, StorageResource
    from wfm_platform.storage.datasets_cli import retention_app

    store, catalog = _copy(tmp_path, curated)
    app = typer.Typer()
    app.add_typer(retention_app, name="retention")
    later = (datetime.now(timezone.utc) + timedelta(days=100)).isoformat()
    args = ["--store", store.root, "--catalog", str(tmp_path / "catalog")]
    r = CliRunner().invoke(app, ["retention", "apply", "--dry-run", "--now", later, "--json", *args])
    assert r.exit_code == 0, r.output
    assert [a["asset"] for a in json.loads(r.stdout)["deleted"]] == ["raw_videos"]
    assert store.list("raw_videos")
    r = CliRunner().invoke(app, ["retention", "apply", "--now", "yesterday", *args])
    assert r.exit_code == 2 and "yesterday" in r.output
    r = CliRunner().invoke(app, ["retention", "show"])
    assert r.exit_code == 0 and "raw_videos" in r.output and "90 days" in r.output

    assert {j.name for j in RETENTION_JOBS} == {"retention_job", "erasure_job"}
    [sched] = RETENTION_SCHEDULES
    assert sched.cron_schedule == "0 3 * * *" and sched.job_name == "retention_job"
    res = {"storage": StorageResource(root_uri=store.root), "catalog": CatalogResource(uri=str(tmp_path / "catalog"))}
    with dg.instance_for_test() as instance:
        result = retention_job.execute_in_process(
            run_config={"ops": {"apply_retention_op": {"config": {"now": later}}}}, resources=res, instance=instance)
    assert result.success
    out = result.output_for_node("apply_retention_op")
    assert [a["asset"] for a in out["deleted"]] == ["raw_videos"] and not out["dry_run"]
    assert store.list("raw_videos") == []
