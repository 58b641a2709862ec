"""Erasure on a real curated batch: two real videos (a face, a street) in one batch and one shard."""

import json
import tarfile

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import media_factory as mf
from wfm_platform.curation import pipeline as P
from wfm_platform.curation.shards import open_dataset, read_manifest, verify_shards
from wfm_platform.storage.catalog import Catalog
from wfm_platform.storage.datasets import DatasetRegistry
from wfm_platform.storage.erasure import ErasureError, catalog_tables, erase_video, open_table, read_erasure_log
from wfm_platform.storage.objectstore import ObjectStore
from wfm_platform.video import iter_frames, write_mp4


def curate_batch(tmp, samples_dir, batch="b1"):
    """carphone (a real face, 176x144) + 4 s of vtest.avi at 240x180: both 4:3 < 5 s, so one bucket and
    one shard. The whole curation chain runs (face blur on, unsafe check off to keep it fast)."""
    from wfm_platform.curation.captions import make_captioner
    from wfm_platform.curation.config import PipelineConfig
    from wfm_platform.curation.embeddings import make_embedder

    up = tmp / "uploads" / batch
    up.mkdir(parents=True)
    mf.copy_as(samples_dir / "carphone_pristine.mp4", up / "carphone.mp4")
    write_mp4((img for _, img in iter_frames(samples_dir / "vtest.avi", start=100, end=139, size=(240, 180))),
              up / "street.mp4", fps=10)
    store, catalog = ObjectStore(tmp / "store"), Catalog(str(tmp / "catalog"))
    cfg = PipelineConfig.load()
    cfg.guard.unsafe_check = False
    P.stage_raw_videos(store, catalog, batch, str(up), cfg)
    P.stage_clips(store, catalog, batch, cfg)
    P.stage_clip_scores(store, batch, cfg)
    P.stage_filtered_clips(store, catalog, batch, cfg)
    P.stage_captions(store, catalog, batch, make_captioner("signals"))
    P.stage_clip_embeddings(store, catalog, batch, make_embedder("visual-signature"))
    P.stage_deduplicated_clips(store, catalog, batch, cfg)
    P.stage_guarded_clips(store, catalog, batch, P.make_post_guard(cfg))
    P.stage_webdataset_shards(store, batch, cfg)
    return store, catalog, ObjectStore(tmp / "uploads")


def _tar_members(path):
    with tarfile.open(path) as t:
        return {m.name: t.extractfile(m).read() for m in t if m.isfile()}


@pytest.fixture(scope="module")
def erased(tmp_path_factory, samples_dir):
    tmp = tmp_path_factory.mktemp("erasure")
    store, catalog, uploads = curate_batch(tmp, samples_dir)
    raw = P.read_stage(store, "raw_videos", "b1")["videos"]
    vid = {v["name"]: v["video_id"] for v in raw}
    gone, stays = vid["carphone.mp4"], vid["street.mp4"]
    clips = {c["video_id"]: c["clip_id"] for c in catalog.clips()}
    assert set(clips) == {gone, stays}  # one clip each (single shots)
    # token files where the video_tokens asset writes them ({batch}/{tokenizer}/{clip_id}.npz)
    for cid in clips.values():
        store.write_bytes(f"video_tokens/b1/cv4x8x8/{cid}.npz", b"tokens of " + cid.encode())
    store.write_json("video_tokens/b1/cv4x8x8/manifest.json",
                     {"created_at": P.now(), "rows": [{"clip_id": c} for c in clips.values()]})
    reg = DatasetRegistry(store, catalog)
    v1 = reg.create("street-faces", partitions=["b1"])
    shard_before = read_manifest(store, "webdataset_shards/b1")
    old_tar = store.local_path(store.rel(shard_before["shards"][0]["uri"]))
    members_before = _tar_members(old_tar)
    catalog_before = {n: open_table(catalog, n).count_rows() for n in catalog_tables(catalog)}

    plan = erase_video(gone, store, catalog, reason="ticket DSR-1", dry_run=True, uploads=uploads)
    keys_after_plan = store.list("")
    report = erase_video(gone, store, catalog, reason="ticket DSR-1", uploads=uploads)
    again = erase_video(gone, store, catalog, reason="ticket DSR-1 (retry)", uploads=uploads)
    return dict(tmp=tmp, store=store, catalog=catalog, uploads=uploads, gone=gone, stays=stays, clips=clips,
                v1=v1, reg=reg, plan=plan, report=report, again=again, members_before=members_before,
                catalog_before=catalog_before, keys_after_plan=keys_after_plan, shard_before=shard_before)


def test_dry_run_plans_but_changes_nothing(erased):
    plan, rep = erased["plan"], erased["report"]
    assert plan.dry_run and plan.found and plan.log_uri is None
    assert plan.clip_ids == rep.clip_ids == [erased["clips"][erased["gone"]]]
    assert sorted(plan.objects_deleted) == sorted(rep.objects_deleted)
    assert plan.datasets_created == rep.datasets_created == ["street-faces@1.0.1"]
    assert plan.catalog_rows_deleted == rep.catalog_rows_deleted
    # after the dry run every object was still there (the real run then deleted them)
    assert set(rep.objects_deleted) <= set(erased["keys_after_plan"])


def test_nothing_of_the_erased_video_remains(erased):
    store, catalog = erased["store"], erased["catalog"]
    ids = {erased["gone"], erased["clips"][erased["gone"]]}
    # object keys, and the bytes of every text object (manifests, logs) and every tar member name
    for key in store.list(""):
        assert not any(i in key for i in ids), key
        data = store.read_bytes(key)
        if key.endswith((".json", ".jsonl", ".txt")):
            assert not any(i.encode() in data for i in ids), key
        if key.endswith(".tar"):
            names = _tar_members(store.local_path(key))
            assert not any(i in n for n in names for i in ids), key
    # catalog rows in every table (discovered, not a fixed list) ...
    tables = catalog_tables(catalog)
    assert {"videos", "clips"} <= set(tables)
    for name in tables:
        rows = open_table(catalog, name).to_arrow().to_pylist()
        assert not any(i in json.dumps(r, default=str) for r in rows for i in ids), name
    # ... and on disk: old Lance table versions were cleaned up, so no file keeps the ids
    for f in (erased["tmp"] / "catalog").rglob("*"):
        if f.is_file():
            assert not any(i.encode() in f.read_bytes() for i in ids), f
    # the embeddings npz lost the erased row
    with np.load(store.local_path("clip_embeddings/b1/embeddings.npz")) as z:
        assert list(z["ids"]) == [erased["clips"][erased["stays"]]] and z["vectors"].shape[0] == 1
    # the original upload is gone, the other one is not
    assert erased["uploads"].list("b1") == ["b1/street.mp4"]
    assert erased["report"].uploads_deleted and not erased["report"].kept_outside


def test_the_other_video_survives_byte_identical_in_a_new_shard(erased):
    store, stays_clip = erased["store"], erased["clips"][erased["stays"]]
    manifest = read_manifest(store, "webdataset_shards/b1")
    assert verify_shards(store, manifest) == []
    assert manifest["num_samples"] == 1 and manifest["erasures"] == [erased["report"].erasure_id]
    [entry] = manifest["shards"]
    old_uri = erased["shard_before"]["shards"][0]["uri"]
    assert entry["uri"] != old_uri and not store.exists(store.rel(old_uri))  # new name, old tar deleted
    assert entry["uri"].endswith("shard-000001.tar")
    after = _tar_members(store.local_path(store.rel(entry["uri"])))
    before = erased["members_before"]
    assert sorted(after) == sorted(f"{stays_clip}.{e}" for e in ("json", "mp4", "txt"))
    assert all(after[n] == before[n] for n in after)  # the survivor's members are byte-identical
    got = list(open_dataset(manifest, store=store))
    assert [s["__key__"] for s in got] == [stays_clip]
    # the rest of the catalog is intact
    assert [c["clip_id"] for c in erased["catalog"].clips()] == [stays_clip]
    assert [v["video_id"] for v in erased["catalog"].videos()] == [erased["stays"]]


def test_datasets_get_a_new_version_and_old_ones_are_redacted(erased):
    reg, store = erased["reg"], erased["store"]
    v1, stays_clip = erased["v1"], erased["clips"][erased["stays"]]
    latest = reg.get("street-faces")
    assert latest.version == "1.0.1" and latest.parent == "1.0.0"
    assert latest.clip_ids == (stays_clip,) and "erasure" in latest.note
    assert reg.verify(latest) == []
    assert [s["__key__"] for s in open_dataset(latest.as_shard_manifest(), store=store)] == [stays_clip]
    old = reg.get("street-faces@1.0.0")  # still there (immutability of identity) but redacted
    assert old.digest == v1.digest and old.created_at == v1.created_at and old.config_digest == v1.config_digest
    assert old.clip_ids == (stays_clip,) and len(old.redactions) == 1
    assert old.redactions[0].erasure_id == erased["report"].erasure_id and old.redactions[0].clips_removed == 1
    assert [s.uri for s in old.shards] == [s.uri for s in latest.shards]  # points at the rewritten shard
    d = reg.diff("street-faces@1.0.0", "street-faces@1.0.1")
    assert d.added_clips == d.removed_clips == []


def test_erasure_log_has_hashes_not_ids_and_rerun_is_harmless(erased):
    store, again = erased["store"], erased["again"]
    entries = read_erasure_log(store)
    assert len(entries) == 2  # the dry run logs nothing
    first = entries[0]
    assert first["reason"] == "ticket DSR-1" and first["clips"] == 1 and first["objects_deleted"] > 5
    assert first["catalog_rows_deleted"]["clips"] == 1 and first["catalog_rows_deleted"]["videos"] == 1
    import hashlib

    assert first["video_id_sha256"] == hashlib.sha256(erased["gone"].encode()).hexdigest()
    assert not again.found and again.objects_deleted == [] and again.datasets_created == []
    assert entries[1]["found"] is False
    assert DatasetRegistry(store).versions("street-faces") == ["1.0.0", "1.0.1"]


def test_bad_requests_fail_clearly(erased):
    store = erased["store"]
    with pytest.raises(ErasureError, match="not a platform video id"):
        erase_video("", store, reason="x")
    with pytest.raises(ErasureError, match="not a platform video id"):
        erase_video("a/b", store, reason="x")
    with pytest.raises(ErasureError, match="needs a reason"):
        erase_video(erased["stays"], store, reason="  ")


def test_a_source_outside_the_stores_is_reported_not_silently_kept(tmp_path, erased):
    """A raw_videos manifest whose source lives elsewhere: the erasure says so (it cannot delete it)."""
    store = ObjectStore(tmp_path / "s")
    vid = "0123456789abcdef"
    store.write_json("raw_videos/b9/manifest.json", {"created_at": P.now(), "videos": [
        {"video_id": vid, "source_uri": "s3://someone-elses-bucket/x.mp4", "status": "ok"}]})
    store.write_bytes(f"raw_videos/b9/{vid}.mp4", b"\0" * 10)
    rep = erase_video(vid, store, None, reason="t")
    assert rep.kept_outside == ["s3://someone-elses-bucket/x.mp4"]
    assert store.list("raw_videos") == ["raw_videos/b9/manifest.json"]
    assert store.read_json("raw_videos/b9/manifest.json")["videos"] == []


def test_cli_erase_the_last_video(erased):
    """Runs last in this module: erases the surviving video through the CLI (the shard set empties)."""
    from wfm_platform.storage.datasets_cli import erase_command

    app = typer.Typer()
    app.command()(erase_command)
    tmp = erased["tmp"]
    args = ["--store", str(tmp / "store"), "--catalog", str(tmp / "catalog"), "--uploads", str(tmp / "uploads")]
    r = CliRunner().invoke(app, ["--video", erased["stays"], "--dry-run", "--json", *args])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["dry_run"] and out["clip_ids"] == [erased["clips"][erased["stays"]]]
    assert out["shards_rewritten"][0]["new_uri"] is None  # the last sample: the shard would go
    r = CliRunner().invoke(app, ["--video", erased["stays"], *args])
    assert r.exit_code == 0 and "erased video" in r.output and "street-faces@1.0.2" in r.output
    r = CliRunner().invoke(app, ["--video", "x", *args])
    assert r.exit_code == 2 and "not a platform video id" in r.output
    store = erased["store"]
    assert read_manifest(store, "webdataset_shards/b1")["num_shards"] == 0
    assert not [k for k in store.list("") if k.endswith(".tar")]
    assert erased["catalog"].clips() == [] and erased["uploads"].list("b1") == []
