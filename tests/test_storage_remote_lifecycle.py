"""Dataset versions, erasure and retention with the store root on a real remote server (moto S3,
Azurite, gcp-storage-emulator on 127.0.0.1: tests/cloud_servers.py), and erasure on an encrypted store.

One code path for file://, s3://, gs://, az://: the same library calls as tests/test_datasets.py,
test_erasure.py and test_retention.py (which run on local stores), here over a remote root. Two real
videos (a face and a street, one 4:3 shard) are curated as batch b1, a bikes shot as batch b2; the
guard stage runs with its detectors off (they are slow and tested in test_postguard.py).

Catalog: LanceDB beside the artifacts on S3 and Azure (ObjectStore.lance_storage_options()); on the
GCS emulator it stays local (the emulator answers 501 to the XML-API listing Lance's object_store uses).
Also: erasure on encrypted stores (file:// with WFM_ENCRYPTION_KEY, S3 with an explicit Encryption), and
retention / erasure while another worker deletes objects they have listed.
"""

from __future__ import annotations

import io
import json
import tarfile
from datetime import datetime, timedelta, timezone

import pytest

from wfm_platform.curation import pipeline as P
from wfm_platform.curation.shards import open_dataset, read_manifest, verify_shards
from wfm_platform.storage.catalog import Catalog
from wfm_platform.storage.crypto import MAGIC, Encryption, generate_key
from wfm_platform.storage.datasets import DatasetRegistry
from wfm_platform.storage.erasure import catalog_tables, erase_video, open_table, read_erasure_log
from wfm_platform.storage.objectstore import ObjectStore
from wfm_platform.storage.retention import apply_retention
from wfm_platform.video import iter_frames, write_mp4

pytest_plugins = ["cloud_servers"]  # fixtures: moto_s3, gcs_emulator, azurite

LANCE_ON_SERVER = {"s3", "az"}  # see the module docstring


@pytest.fixture(scope="module")
def videos(tmp_path_factory, samples_dir):
    """Short real clips: a face (carphone, 176x144), a street (vtest, 240x180), a bikes shot (640x272)."""
    d = tmp_path_factory.mktemp("videos")
    write_mp4((f for _, f in iter_frames(samples_dir / "carphone_pristine.mp4", end=60)), d / "carphone.mp4", fps=15)
    write_mp4((f for _, f in iter_frames(samples_dir / "vtest.avi", start=100, end=139, size=(240, 180))),
              d / "street.mp4", fps=10)
    write_mp4((f for _, f in iter_frames(samples_dir / "bikes.mp4", start=76, end=137)), d / "bikes.mp4", fps=25)
    return d


def curate(store: ObjectStore, catalog, uploads: ObjectStore, batch: str, files: list) -> dict:
    """The curation chain of the library (what the Dagster assets call), guard detectors off."""
    from wfm_platform.curation.captions import make_captioner
    from wfm_platform.curation.config import PipelineConfig
    from wfm_platform.curation.embeddings import make_embedder

    for f in files:
        uploads.put_file(f, f"{batch}/{f.name}")
    cfg = PipelineConfig.load()
    cfg.guard.unsafe_check = cfg.guard.face_blur = False
    P.stage_raw_videos(store, catalog, batch, uploads.uri(batch), cfg)
    P.stage_clips(store, catalog, batch, cfg)
    P.stage_clip_scores(store, batch, cfg)
    P.stage_filtered_clips(store, catalog, batch, cfg)
    P.stage_captions(store, catalog, batch, make_captioner("signals"))
    P.stage_clip_embeddings(store, catalog, batch, make_embedder("visual-signature"))
    P.stage_deduplicated_clips(store, catalog, batch, cfg)
    P.stage_guarded_clips(store, catalog, batch, P.make_post_guard(cfg))
    return P.stage_webdataset_shards(store, batch, cfg)


def _members(store: ObjectStore, key: str) -> dict[str, bytes]:
    with store.local_copy(key) as p, tarfile.open(p) as t:
        return {m.name: t.extractfile(m).read() for m in t if m.isfile()}


def _world(server, tmp, *, encryption=None, catalog_remote=True):
    bucket = server.make_bucket("life")
    store = ObjectStore(f"{bucket}/store", server.storage_options, encryption=encryption)
    uploads = ObjectStore(f"{bucket}/uploads", server.storage_options, encryption=None)
    if catalog_remote:
        catalog = Catalog(store.uri("catalog"), storage_options=store.lance_storage_options(), mirror=None)
    else:
        catalog = Catalog(str(tmp / "catalog"), mirror=None)
    return store, uploads, catalog


# -- the whole lifecycle on one server ----------------------------------------------------------------
@pytest.fixture(scope="module", params=["s3", "az", "gs"])
def life(request, tmp_path_factory, videos):
    from cloud_servers import SERVER_FIXTURES

    scheme = request.param
    server = request.getfixturevalue(SERVER_FIXTURES[scheme])
    tmp = tmp_path_factory.mktemp(f"life-{scheme}")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in server.env.items():  # stage_raw_videos opens the uploads URI with the env's endpoint
            mp.setenv(k, v)
        mp.delenv("WFM_ENCRYPTION_KEY", raising=False)
        store, uploads, catalog = _world(server, tmp, catalog_remote=scheme in LANCE_ON_SERVER)
        curate(store, catalog, uploads, "b1", [videos / "carphone.mp4", videos / "street.mp4"])
        reg = DatasetRegistry(store, catalog)
        v1 = reg.create("drive", partitions=["b1"])
        problems_v1 = reg.verify(v1)  # deep: sha256 and tar contents, read back from the server
        curate(store, catalog, uploads, "b2", [videos / "bikes.mp4"])
        v2 = reg.create("drive", partitions=["b1", "b2"], verify=True)  # shallow: size + sha256 on the server
        diff = reg.diff(v1, v2)

        vid = {v["name"]: v["video_id"] for v in P.read_stage(store, "raw_videos", "b1")["videos"]}
        vid |= {v["name"]: v["video_id"] for v in P.read_stage(store, "raw_videos", "b2")["videos"]}
        clips = {c["video_id"]: c["clip_id"] for c in catalog.clips()}
        gone = vid["carphone.mp4"]
        shard_b1 = read_manifest(store, "webdataset_shards/b1")
        members_before = _members(store, store.rel(shard_b1["shards"][0]["uri"]))
        ids = {gone, clips[gone]}
        lance_with_ids = _files_mentioning(store, tmp, scheme, ids)  # proves the check below can fail
        plan = erase_video(gone, store, catalog, reason="ticket DSR-7", dry_run=True, uploads=uploads)
        keys_after_plan = store.list("")
        report = erase_video(gone, store, catalog, reason="ticket DSR-7", uploads=uploads)
        yield {"scheme": scheme, "server": server, "tmp": tmp, "store": store, "uploads": uploads,
               "catalog": catalog, "reg": reg, "v1": v1, "v2": v2, "diff": diff, "problems_v1": problems_v1,
               "vid": vid, "clips": clips, "gone": gone, "shard_b1": shard_b1, "members_before": members_before,
               "plan": plan, "report": report, "keys_after_plan": keys_after_plan, "lance_with_ids": lance_with_ids}


def _files_mentioning(store: ObjectStore, tmp, scheme: str, ids: set[str]) -> list[str]:
    """Catalog (Lance) files whose raw bytes contain one of the ids: on the server or in the local folder."""
    out = []
    if scheme in LANCE_ON_SERVER:
        for k in store.list("catalog"):
            try:
                data = store.read_bytes(k)
            except FileNotFoundError:
                # Lance removed it after the listing (seen once on moto for an _index_state
                # transaction file): a file that is gone holds no ids
                continue
            if any(i.encode() in data for i in ids):
                out.append(k)
    else:
        out = [str(f) for f in (tmp / "catalog").rglob("*") if f.is_file()
               and any(i.encode() in f.read_bytes() for i in ids)]
    return out



def test_versions_verify_and_diff_on_the_server(life):
    store, v1, v2, d = life["store"], life["v1"], life["v2"], life["diff"]
    assert life["problems_v1"] == []
    assert v1.ref == "drive@1.0.0" and v2.ref == "drive@1.1.0" and v2.parent == "1.0.0"
    assert all(s.uri.startswith(f"{store.root}/webdataset_shards/") for s in v2.shards)
    assert store.root.startswith(f"{life['scheme']}://")
    assert d.added_clips == [life["clips"][life["vid"]["bikes.mp4"]]] and d.removed_clips == []
    assert d.unchanged_clips == 2 and len(d.added_shards) == 1 and not d.config_changed
    # the version manifests live on the server, and the catalog indexes them
    assert store.list("datasets/drive")[:2] == ["datasets/drive/1.0.0.json", "datasets/drive/1.1.0.json"]
    assert {r["dataset_id"] for r in life["catalog"].datasets("drive")} >= {"drive@1.0.0", "drive@1.1.0"}


def test_erasure_dry_run_matches_the_real_run(life):
    plan, rep = life["plan"], life["report"]
    assert plan.dry_run and plan.found and plan.log_uri is None
    assert plan.clip_ids == rep.clip_ids == [life["clips"][life["gone"]]]
    assert sorted(plan.objects_deleted) == sorted(rep.objects_deleted)
    assert plan.datasets_created == rep.datasets_created == ["drive@1.1.1"]
    assert set(rep.objects_deleted) <= set(life["keys_after_plan"])
    assert rep.uploads_deleted == [life["uploads"].uri("b1/carphone.mp4")] and not rep.kept_outside


def test_nothing_of_the_erased_video_remains_on_the_server(life):
    store, catalog = life["store"], life["catalog"]
    ids = {life["gone"], life["clips"][life["gone"]]}
    keys = store.list("")
    assert keys and not [k for k in keys if ".tmp-" in k]
    for key in keys:
        assert not any(i in key for i in ids), key
        if key.startswith("catalog/"):
            continue  # Lance files, checked below as raw bytes
        data = store.read_bytes(key)
        if key.endswith((".json", ".jsonl", ".txt")):
            assert not any(i.encode() in data for i in ids), key
        if key.endswith(".tar"):
            with tarfile.open(fileobj=io.BytesIO(data)) as t:
                names = t.getnames()
            assert not any(i in n for n in names for i in ids), key
    # every catalog table (discovered), and every Lance file (old versions were purged)
    tables = catalog_tables(catalog)
    assert {"videos", "clips", "datasets"} <= set(tables)
    for name in tables:
        rows = open_table(catalog, name).to_arrow().to_pylist()
        assert not any(i in json.dumps(r, default=str) for r in rows for i in ids), name
    assert life["lance_with_ids"]  # before the erasure the ids were in the catalog's files ...
    ids_files = _files_mentioning(store, life["tmp"], life["scheme"], ids)
    assert ids_files == []  # ... afterwards in none (old Lance versions purged), on the server too
    assert life["uploads"].list("b1") == ["b1/street.mp4"]
    [entry] = read_erasure_log(store)
    assert entry["clips"] == 1 and entry["catalog_rows_deleted"]["clips"] == 1


def test_the_other_clips_still_stream_and_the_dataset_got_a_patch_version(life):
    store, reg = life["store"], life["reg"]
    street, bikes = life["clips"][life["vid"]["street.mp4"]], life["clips"][life["vid"]["bikes.mp4"]]
    m = read_manifest(store, "webdataset_shards/b1")
    assert verify_shards(store, m) == []
    [entry] = m["shards"]
    old_uri = life["shard_b1"]["shards"][0]["uri"]
    assert entry["uri"] != old_uri and not store.exists(store.rel(old_uri))  # rewritten, old tar deleted
    assert entry["uri"].endswith("/shard-000001.tar")  # the next free name, found by listing the server
    after, before = _members(store, store.rel(entry["uri"])), life["members_before"]
    assert sorted(after) == sorted(f"{street}.{e}" for e in ("json", "mp4", "txt"))
    assert all(after[n] == before[n] for n in after)  # the survivor's members are byte-identical
    assert [s["__key__"] for s in open_dataset(m, store=store)] == [street]

    latest = reg.get("drive")
    assert latest.version == "1.1.1" and latest.parent == "1.1.0" and "erasure" in latest.note
    assert sorted(latest.clip_ids) == sorted([street, bikes])
    assert reg.verify(latest) == []
    got = sorted(s["__key__"] for s in open_dataset(latest.as_shard_manifest(), store=store))
    assert got == sorted([street, bikes])
    old = reg.get("drive@1.0.0")  # redacted in place, identity kept
    assert old.digest == life["v1"].digest and old.clip_ids == (street,) and len(old.redactions) == 1
    assert reg.verify(old) == []


def test_retention_with_now_moved_forward_keeps_dataset_shards(life):
    """Runs after the erasure tests (same module fixture): a year later everything processed expires,
    except the shard sets the dataset versions reference."""
    store, catalog, reg = life["store"], life["catalog"], life["reg"]
    later = datetime.now(timezone.utc) + timedelta(days=366)
    keys_before = store.list("")
    plan = apply_retention(store, catalog, now=later, dry_run=True)
    planned = {(a.asset, a.partition) for a in plan.deleted}
    assert {("raw_videos", "b1"), ("clips", "b2"), ("captions", "b1")} <= planned
    assert {(a.asset, a.partition) for a in plan.kept_for_datasets} == {("webdataset_shards", "b1"),
                                                                        ("webdataset_shards", "b2")}
    assert plan.log_uri is None and store.list("") == keys_before  # the dry run deleted nothing

    rep = apply_retention(store, catalog, now=later)
    assert {(a.asset, a.partition) for a in rep.deleted} == planned
    left = store.list("")
    assert not [k for k in left if k.startswith(("raw_videos/", "clips/", "captions/", "clip_scores/"))]
    assert [k for k in left if k.startswith("webdataset_shards/b1/")]
    assert [k for k in left if k.startswith("webdataset_shards/b2/")]
    assert rep.log_uri and store.exists(store.rel(rep.log_uri))
    latest = reg.get("drive")
    assert reg.verify(latest) == []  # the kept shards survive whole
    assert len(list(open_dataset(latest.as_shard_manifest(), store=store))) == 2
    assert read_erasure_log(store)  # the erasure log is never expired
    # 400 days on, the first run's own log (30 days, aged by the object's mtime on the server) goes
    rep2 = apply_retention(store, catalog, now=later + timedelta(days=400))
    assert store.rel(rep.log_uri) in [lg.key for lg in rep2.logs_deleted]
    assert not store.exists(store.rel(rep.log_uri)) and reg.verify(reg.get("drive")) == []


def test_erasing_after_retention_drops_the_emptied_shard(life):
    """Runs last: the street video's stage manifests expired, but its clip lives on in a dataset shard
    and in the catalog; erasing it finds it there, drops the shard it was alone in, and a rerun finds nothing."""
    store, catalog, reg = life["store"], life["catalog"], life["reg"]
    street_vid = life["vid"]["street.mp4"]
    street, bikes = life["clips"][street_vid], life["clips"][life["vid"]["bikes.mp4"]]
    rep = erase_video(street_vid, store, catalog, reason="ticket DSR-9", uploads=life["uploads"])
    assert rep.clip_ids == [street] and rep.datasets_created == ["drive@1.1.2"]
    [rw] = rep.shards_rewritten
    assert rw.new_uri is None and not store.exists(store.rel(rw.old_uri))
    assert read_manifest(store, "webdataset_shards/b1")["num_shards"] == 0
    latest = reg.get("drive")
    assert latest.clip_ids == (bikes,) and reg.verify(latest) == []
    assert [s["__key__"] for s in open_dataset(latest.as_shard_manifest(), store=store)] == [bikes]
    assert not [k for k in store.list("") if street in k or street_vid in k]
    assert [c["clip_id"] for c in catalog.clips()] == [bikes]
    again = erase_video(street_vid, store, catalog, reason="retry", uploads=life["uploads"])
    assert not again.found and again.datasets_created == [] and reg.versions("drive")[-1] == "1.1.2"


# -- erasure on an encrypted store --------------------------------------------------------------------
@pytest.mark.parametrize("where", ["file", "s3"])
def test_erasure_rewrites_encrypted_shards(where, request, tmp_path, videos, monkeypatch):
    """With envelope encryption at rest, the rewritten shard is encrypted too and still decrypts and
    streams; nothing on the server is plaintext afterwards."""
    key = generate_key()
    enc = Encryption(key)
    if where == "file":  # the key from the environment, as the CLI and the Dagster resources get it
        monkeypatch.setenv("WFM_ENCRYPTION_KEY", key)
        store = ObjectStore(tmp_path / "store")
        assert store.encryption is not None and store.encryption.key_id == enc.key_id
        uploads = ObjectStore(tmp_path / "uploads", encryption=None)
        catalog = Catalog(str(tmp_path / "catalog"), mirror=None)
    else:  # an explicit Encryption (StorageResource.encryption_key), on the S3 server
        monkeypatch.delenv("WFM_ENCRYPTION_KEY", raising=False)
        server = request.getfixturevalue("moto_s3")
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        store, uploads, catalog = _world(server, tmp_path, encryption=enc)
    curate(store, catalog, uploads, "b1", [videos / "carphone.mp4", videos / "street.mp4"])
    reg = DatasetRegistry(store, catalog)
    v1 = reg.create("enc", partitions=["b1"], verify=True)  # plaintext sizes and sha256 through decryption
    assert reg.verify(v1) == []
    vid = {v["name"]: v["video_id"] for v in P.read_stage(store, "raw_videos", "b1")["videos"]}
    clips = {c["video_id"]: c["clip_id"] for c in catalog.clips()}
    gone, street = vid["carphone.mp4"], clips[vid["street.mp4"]]

    rep = erase_video(gone, store, catalog, reason="ticket DSR-8", uploads=uploads)
    [rw] = rep.shards_rewritten
    assert rw.new_uri and rw.removed_samples == 1 and rw.kept_samples == 1
    new_rel = store.rel(rw.new_uri)
    assert store.rel(rw.old_uri) not in store.list("webdataset_shards")
    # the stored bytes of the new shard are ciphertext; through the store it is a valid tar
    with store.fs.open(store._path(new_rel), "rb") as raw:
        assert raw.read(len(MAGIC)) == MAGIC
    assert sorted(_members(store, new_rel)) == sorted(f"{street}.{e}" for e in ("json", "mp4", "txt"))
    m = read_manifest(store, "webdataset_shards/b1")
    assert verify_shards(store, m) == []
    assert [s["__key__"] for s in open_dataset(m, store=store)] == [street]
    latest = reg.get("enc")
    assert latest.version == "1.0.1" and reg.verify(latest) == []
    assert [s["__key__"] for s in open_dataset(latest.as_shard_manifest(), store=store)] == [street]
    # every object the store wrote (manifests rewritten by the erasure included) is still ciphertext,
    # and no decrypted object mentions the erased ids
    ids = {gone, clips[gone]}
    for key in store.list(""):
        if key.startswith("catalog/"):
            continue  # Lance writes its own files (not through ObjectStore): not encrypted by us
        with store.fs.open(store._path(key), "rb") as raw:
            assert raw.read(len(MAGIC)) == MAGIC, key
        data = store.read_bytes(key)
        assert not any(i in key for i in ids), key
        if key.endswith((".json", ".jsonl")):
            assert not any(i.encode() in data for i in ids), key
    # without the key nothing reads
    with pytest.raises(Exception, match="encrypted"):
        ObjectStore(store.root, store.storage_options, encryption=None).read_bytes(store.rel(m["shards"][0]["uri"]))


# -- another worker deletes objects while retention runs -----------------------------------------------
class _RacingStore(ObjectStore):
    """Its listings include objects that another worker (an erasure, a second retention run) deletes
    right after the listing: what a shared bucket does to a long retention run."""

    def list(self, prefix: str = "", *, recursive: bool = True) -> list[str]:
        keys = super().list(prefix, recursive=recursive)
        other = ObjectStore(self.root, self.storage_options, encryption=None)
        for k in keys:
            if ".racy." in k:
                other.delete(k)
        return keys


@pytest.mark.parametrize("scheme", ["file", "s3", "az", "gs"])
def test_retention_survives_objects_deleted_while_it_runs(scheme, request, tmp_path):
    from cloud_servers import SERVER_FIXTURES

    if scheme == "file":
        store = _RacingStore(tmp_path / "store", encryption=None)
    else:
        server = request.getfixturevalue(SERVER_FIXTURES[scheme])
        store = _RacingStore(server.make_bucket(), server.storage_options, encryption=None)
    store.write_json("clips/old/manifest.json", {"created_at": "2020-01-01T00:00:00+00:00", "clips": []})
    store.write_bytes("clips/old/a.mp4", b"clip")
    store.write_bytes("clips/old/b.racy.mp4", b"clip deleted by someone else")
    store.write_bytes("logs/retention/2020-01-01-x.racy.jsonl", b"{}\n")
    rep = apply_retention(store, None, now=datetime.now(timezone.utc) + timedelta(days=400))
    [part] = rep.deleted
    assert (part.asset, part.partition, part.objects) == ("clips", "old", 3)
    assert store.list("clips") == [] and rep.log_uri and store.exists(store.rel(rep.log_uri))


@pytest.mark.parametrize("scheme", ["file", "az"])
def test_erasure_survives_objects_deleted_while_it_runs(scheme, request, tmp_path):
    """Objects naming the video (or manifests mentioning it) that vanish between the erasure's listing
    and its read: the erasure finishes and writes its log instead of stopping half-way."""
    if scheme == "file":
        store = _RacingStore(tmp_path / "store", encryption=None)
    else:
        server = request.getfixturevalue("azurite")
        store = _RacingStore(server.make_bucket(), server.storage_options, encryption=None)
    vid = "0123456789abcdef"
    store.write_json("raw_videos/b9/manifest.json", {"created_at": P.now(), "videos": [
        {"video_id": vid, "source_uri": "s3://someone-elses-bucket/x.mp4", "status": "ok"}]})
    store.write_bytes(f"raw_videos/b9/{vid}.mp4", b"\0" * 10)
    store.write_bytes(f"thumbnails/b9/{vid}.racy.jpg", b"gone before it is read")
    store.write_json("captions/b9/notes.racy.json", {"video_id": vid})
    rep = erase_video(vid, store, None, reason="t")
    assert rep.log_uri and store.exists(store.rel(rep.log_uri))
    assert store.list("raw_videos") == ["raw_videos/b9/manifest.json"] and not store.list("thumbnails")
    assert store.read_json("raw_videos/b9/manifest.json")["videos"] == []
