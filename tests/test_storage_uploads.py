"""Object store staging, upload batches and the upload sensor (build_sensor_context)."""

import json

import dagster as dg
import pytest

from wfm_platform.curation.uploads import batch_name_for, ready_batches, upload_folder, valid_batch_name
from wfm_platform.storage.objectstore import ObjectStore


def test_staged_write_is_invisible_until_commit(tmp_path):
    store = ObjectStore(tmp_path)
    with pytest.raises(RuntimeError):
        with store.staged("a/b.bin") as tmp:
            tmp.write_bytes(b"half")
            assert store.list("a") == []  # staging name is never listed
            raise RuntimeError("crash mid-write")
    assert store.list("") == [] and not store.exists("a/b.bin")
    store.write_bytes("a/b.bin", b"whole")
    assert store.list("") == ["a/b.bin"] and store.read_bytes("a/b.bin") == b"whole"


def test_memory_filesystem_same_code_path():
    store = ObjectStore("memory://wfm-test-store")
    store.write_json("x/manifest.json", {"n": 1})
    assert store.read_json("x/manifest.json") == {"n": 1}
    assert "x/manifest.json" in store.list("x")


def test_batch_names():
    assert valid_batch_name("2026-11-27_cam-3.v2")
    assert not valid_batch_name("../etc") and not valid_batch_name("a b")
    assert batch_name_for("/data/my videos (new)/") == "my-videos-new"


def _make_batch(root, name, ready=True):
    d = root / name
    d.mkdir(parents=True)
    (d / "a.mp4").write_bytes(b"x")
    if ready:
        (d / "_READY").write_bytes(b"")


def test_ready_batches_ignore_half_uploaded(tmp_path):
    _make_batch(tmp_path, "b1")
    _make_batch(tmp_path, "b2", ready=False)
    assert ready_batches(ObjectStore(tmp_path)) == ["b1"]


def test_upload_folder_writes_marker_last(tmp_path, samples_dir):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bikes.mp4").write_bytes((samples_dir / "bikes.mp4").read_bytes())
    up = ObjectStore(tmp_path / "uploads")
    files = upload_folder(src, up, "cam1")
    assert files == ["cam1/bikes.mp4"] and ready_batches(up) == ["cam1"]


def test_upload_sensor_adds_partitions_and_runs_once(tmp_path, dagster_home):
    from resources import StorageResource
    from sensors.uploads import upload_sensor

    _make_batch(tmp_path, "b1")
    _make_batch(tmp_path, "b2", ready=False)
    storage = StorageResource(root_uri=str(tmp_path / "store"), uploads_uri=str(tmp_path))
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources={"storage": storage})
        res = upload_sensor(ctx)
        assert [r.partition_key for r in res.run_requests] == ["b1"]
        assert res.run_requests[0].run_config["ops"]["raw_videos"]["config"]["source_uri"].endswith("/b1")
        assert res.dynamic_partitions_requests[0].partition_keys == ["b1"]
        cursor = res.cursor
        assert json.loads(cursor) == ["b1"]

        # b2 finishes uploading: only b2 is new
        (tmp_path / "b2" / "_READY").write_bytes(b"")
        ctx2 = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage})
        res2 = upload_sensor(ctx2)
        assert [r.partition_key for r in res2.run_requests] == ["b2"]

        # nothing new: skip with a reason
        ctx3 = dg.build_sensor_context(instance=instance, cursor=res2.cursor, resources={"storage": storage})
        res3 = upload_sensor(ctx3)
        assert not res3.run_requests and "no new complete batch" in str(res3.skip_reason)


def test_rel_requires_a_path_boundary(tmp_path):
    store = ObjectStore(tmp_path / "store")
    assert store.rel(store.uri("a/b.tar")) == "a/b.tar"
    with pytest.raises(ValueError, match="not under"):
        store.rel(ObjectStore(tmp_path / "store2").uri("shard.tar"))  # a sibling root sharing the prefix
