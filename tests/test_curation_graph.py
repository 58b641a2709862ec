"""The whole curation graph materialized on a tiny real batch with a temp DAGSTER_HOME."""

import json

import dagster as dg
import pytest

import media_factory as mf
from wfm_platform.curation.pipeline import read_stage
from wfm_platform.video import iter_frames, write_mp4

STAGES = ["raw_videos", "clips", "clip_scores", "filtered_clips", "captions", "clip_embeddings",
          "deduplicated_clips", "guarded_clips", "webdataset_shards"]


@pytest.fixture(scope="module")
def batch(tmp_path_factory, samples_dir):
    d = tmp_path_factory.mktemp("uploads") / "batch-1"
    d.mkdir()
    mf.copy_as(samples_dir / "bikes.mp4", d / "bikes clip ü.mp4")  # real cuts; unicode + space path
    # 3.5 s of handheld footage, downscaled to keep the test fast
    write_mp4((img for _, img in iter_frames(samples_dir / "cockatoo.mp4", end=69, size=(640, 360))),
              d / "cockatoo.mp4", fps=20)
    mf.copy_as(samples_dir / "carphone_pristine.mp4", d / "carphone.mp4")  # a real face, 4 s
    mf.zero_byte(d / "empty.mp4")
    mf.not_a_video(d / "readme.mp4")
    mf.audio_only(d / "tone.m4a")
    mf.tiny(samples_dir / "bikes.mp4", d / "tiny16.mp4")
    mf.truncated(samples_dir / "bikes.mp4", d / "cut_off.mp4", keep=0.5)
    mf.one_frame(samples_dir / "bikes.mp4", d / "one_frame.mp4")
    # bikes frames 76..: a 61-frame shot (2.4 s) then the next one
    mf.rotated(samples_dir / "bikes.mp4", d / "phone.mp4", frames=75, start=76)
    mf.variable_frame_rate(samples_dir / "bikes.mp4", d / "vfr.mp4", frames=100, start=76)
    mf.matroska_named_mp4(samples_dir / "bikes.mp4", d / "really_mkv.mp4", frames=75, start=76)
    (d / "_READY").write_bytes(b"")
    return d


def _resources(tmp):
    from resources import CatalogResource, StorageResource, default_resources

    res = default_resources()
    res["storage"] = StorageResource(root_uri=str(tmp / "store"), uploads_uri=str(tmp / "uploads"))
    res["catalog"] = CatalogResource(uri=str(tmp / "catalog"))
    return res


def _materialize(instance, res, partition, source, selection=None):
    from assets.curation import CURATION_ASSETS, upload_batches

    instance.add_dynamic_partitions(upload_batches.name, [partition])
    return dg.materialize(
        CURATION_ASSETS,
        selection=selection,
        partition_key=partition,
        resources=res,
        instance=instance,
        run_config={"ops": {"raw_videos": {"config": {"source_uri": str(source)}}}},
    )


@pytest.fixture(scope="module")
def curated(batch, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curated")
    res = _resources(tmp)
    (tmp / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp / "dagster_home")) as instance:
        result = _materialize(instance, res, "batch-1", batch)
        assert result.success
        checks = {(e.check_name, e.passed) for e in result.get_asset_check_evaluations()}
        mats = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
        metadata = {k: ev.materialization.metadata for k, ev in mats.items()}
        yield {"tmp": tmp, "res": res, "instance": instance, "metadata": metadata, "checks": checks,
               "store": res["storage"].store()}


def test_every_asset_materialized_with_metadata(curated):
    md = curated["metadata"]
    assert sorted(md) == sorted(STAGES)
    assert md["raw_videos"]["num_ok"].value == 7 and md["raw_videos"]["num_rejected"].value == 5
    assert "thumbnails" in md["clips"] and md["clips"]["num_clips"].value >= 3
    assert md["webdataset_shards"]["num_samples"].value >= 1


def test_blocking_checks_pass(curated):
    failed = [name for name, passed in curated["checks"] if not passed]
    names = {name for name, _ in curated["checks"]}
    assert {"clips_decodable", "scores_complete", "embeddings_valid", "shards_readable"} <= names
    assert not [n for n in failed if n in {"clips_decodable", "scores_complete", "embeddings_valid",
                                           "shards_readable", "usable_videos_stored", "captions_nonempty"}]


def test_bad_files_rejected_with_reasons(curated):
    raw = read_stage(curated["store"], "raw_videos", "batch-1")
    reasons = {v["name"]: v["reason"] for v in raw["videos"] if v["status"] != "ok"}
    assert "empty file" in reasons["empty.mp4"]
    assert "not a video" in reasons["readme.mp4"]
    assert "no video stream" in reasons["tone.m4a"]
    assert "too small" in reasons["tiny16.mp4"]
    assert "truncated or corrupt MP4" in reasons["cut_off.mp4"]


def test_awkward_but_valid_inputs_are_processed(curated):
    store = curated["store"]
    raw = {v["name"]: v for v in read_stage(store, "raw_videos", "batch-1")["videos"]}
    assert raw["phone.mp4"]["rotation"] in (90, 270) and (raw["phone.mp4"]["width"], raw["phone.mp4"]["height"]) == (272, 640)
    assert raw["vfr.mp4"]["variable_frame_rate"]
    assert "matroska" in raw["really_mkv.mp4"]["container"]
    cl = read_stage(store, "clips", "batch-1")
    by_src = {}
    for c in cl["clips"]:
        by_src.setdefault(c["source_uri"].rsplit("/", 1)[-1], []).append(c)
    # the rotated phone video is cut upright: portrait clips
    assert by_src["phone.mp4"] and all((c["width"], c["height"]) == (272, 640) for c in by_src["phone.mp4"])
    assert by_src["really_mkv.mp4"] and by_src["vfr.mp4"]
    # one frame is a usable video with no clip long enough, and says so
    no_clips = {w["source_uri"].rsplit("/", 1)[-1]: w["reason"] for w in cl["videos_without_clips"]}
    assert "no shot of at least 2 s" in no_clips["one_frame.mp4"]
    assert not cl["failed_videos"]


def test_clips_follow_real_cuts_and_clip_rules(curated):
    clips = read_stage(curated["store"], "clips", "batch-1")["clips"]
    bikes = sorted((c["start_frame"], c["end_frame"]) for c in clips if "bikes clip" in c["source_uri"])
    # bikes.mp4 shots >= 2 s (50 frames): 76-136, 137-186, 187-241 (+-2 frames at each cut)
    assert len(bikes) == 3
    for (s, e), (ts, te) in zip(bikes, [(76, 136), (137, 186), (187, 241)]):
        assert abs(s - ts) <= 2 and abs(e - te) <= 2
    assert all(c["duration_s"] >= 2.0 for c in clips)


def test_shards_read_back_with_webdataset(curated):
    import av
    import io
    import webdataset as wds

    store = curated["store"]
    m = read_stage(store, "webdataset_shards", "batch-1")
    urls = [store.local_path(store.rel(s["uri"])).as_posix() for s in m["shards"]]
    n = 0
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        assert sample["txt"].decode().strip()
        with av.open(io.BytesIO(sample["mp4"])) as c:
            frames = sum(1 for _ in c.decode(video=0))
        assert frames == meta["end_frame"] - meta["start_frame"] + 1
        n += 1
    assert n == m["num_samples"] >= 1


def test_within_batch_copies_are_duplicates(curated):
    """vfr.mp4 and really_mkv.mp4 re-encode bikes' 76-136 shot: SemDeDup keeps one copy."""
    store = curated["store"]
    clips = read_stage(store, "clips", "batch-1")["clips"]
    src = {c["clip_id"]: c["source_uri"].rsplit("/", 1)[-1] for c in clips}
    copies = {cid for cid, c in src.items()
              if next(x for x in clips if x["clip_id"] == cid)["start_frame"] in (0, 76)
              and src[cid] in ("vfr.mp4", "really_mkv.mp4", "bikes clip ü.mp4")
              and next(x for x in clips if x["clip_id"] == cid)["num_frames"] in range(59, 64)}
    dd = read_stage(store, "deduplicated_clips", "batch-1")
    kept_copies = copies & set(dd["kept"])
    assert len(copies) == 3 and len(kept_copies) == 1, (copies, dd)


def test_catalog_has_videos_and_clips(curated):
    cat = curated["res"]["catalog"].catalog()
    vids = cat.videos(partition="batch-1")
    assert {v["status"] for v in vids} >= {"ok"}
    clips = cat.clips(partition="batch-1")
    assert clips and all(c["clip_id"] for c in clips)


def test_rerun_is_idempotent(curated, batch):
    store, instance, res = curated["store"], curated["instance"], curated["res"]
    before = read_stage(store, "clips", "batch-1")["clips"]
    shards_before = read_stage(store, "webdataset_shards", "batch-1")
    cat = res["catalog"].catalog()
    n_clips_before = cat.count("clips")
    dd_before = read_stage(store, "deduplicated_clips", "batch-1")
    result = _materialize(instance, res, "batch-1", batch)
    assert result.success
    after = read_stage(store, "clips", "batch-1")["clips"]
    assert [c["clip_id"] for c in after] == [c["clip_id"] for c in before]
    assert cat.count("clips") == n_clips_before  # no duplicate rows
    dd = read_stage(store, "deduplicated_clips", "batch-1")
    # a rerun is not a duplicate of itself: same decisions as the first run
    assert sorted(dd["kept"]) == sorted(dd_before["kept"])
    assert {(d["clip_id"], d["duplicate_of"]) for d in dd["duplicates"]} == {
        (d["clip_id"], d["duplicate_of"]) for d in dd_before["duplicates"]}
    shards_after = read_stage(store, "webdataset_shards", "batch-1")
    assert [s["sha256"] for s in shards_after["shards"]] == [s["sha256"] for s in shards_before["shards"]]
    assert not [k for k in store.list("") if ".tmp-" in k]


def test_second_batch_with_reencoded_clip_is_deduplicated_against_catalog(curated, samples_dir, tmp_path):
    """A re-encode of a batch-1 clip arriving in batch 2 is a duplicate of the catalog's clip."""
    store, instance, res = curated["store"], curated["instance"], curated["res"]
    kept = read_stage(store, "deduplicated_clips", "batch-1")["kept"]
    passed = {c["clip_id"]: c for c in read_stage(store, "filtered_clips", "batch-1")["passed"]}
    src = passed[kept[0]]
    d = tmp_path / "batch-2"
    d.mkdir()
    frames = (img for _, img in iter_frames(store.local_path(store.rel(src["uri"]))))
    write_mp4(frames, d / "reupload.mp4", fps=src["fps"], crf=30)
    result = _materialize(instance, res, "batch-2", d)
    assert result.success
    dd = read_stage(store, "deduplicated_clips", "batch-2")
    dup_of = {x["duplicate_of"] for x in dd["duplicates"]}
    assert dd["num_duplicates"] >= 1 and dup_of & set(kept), dd


def test_crash_mid_stage_leaves_nothing_half_written(batch, tmp_path, monkeypatch):
    """A process dying inside `clips` (not an ordinary error: those are recorded per video) leaves no
    partial clip and no manifest visible; the rerun completes."""
    from wfm_platform.curation import pipeline as P
    from wfm_platform.video import encode

    res = _resources(tmp_path)
    (tmp_path / "dh").mkdir()
    real_write = encode._SegmentWriter.write
    calls = {"n": 0}

    def dying_write(self, img):
        calls["n"] += 1
        if calls["n"] == 100:  # in the middle of the second clip (the first has 61 frames)
            raise KeyboardInterrupt("simulated kill")
        return real_write(self, img)

    with dg.instance_for_test(temp_dir=str(tmp_path / "dh")) as instance:
        res_first = _materialize(instance, res, "crashy", batch, selection=["raw_videos"])
        assert res_first.success
        monkeypatch.setattr(encode._SegmentWriter, "write", dying_write)
        store = res["storage"].store()
        with __import__("pytest").raises(KeyboardInterrupt):
            P.stage_clips(store, res["catalog"].catalog(), "crashy", res["pipeline_config"].load())
        keys = store.list("")
        assert not store.exists("clips/crashy/manifest.json")
        assert not [k for k in keys if ".tmp-" in k]
        done = [k for k in keys if k.startswith("clips/crashy/") and k.endswith(".mp4")]
        assert len(done) == 1  # the first clip was committed whole; the second never appears
        monkeypatch.setattr(encode._SegmentWriter, "write", real_write)
        m = P.stage_clips(store, res["catalog"].catalog(), "crashy", res["pipeline_config"].load())
        assert m["num_clips"] >= 3 and not m["failed_videos"]


def test_faces_blurred_before_sharding(curated):
    """carphone has a real face: it is blurred in the clip that goes into the shards."""
    import cv2

    from wfm_platform.guardrails.faces import DlibHogFaceDetector, HaarFaceDetector
    from wfm_platform.video import sample_frames

    store = curated["store"]
    g = read_stage(store, "guarded_clips", "batch-1")
    assert g["enabled"] and g["clips_with_faces"] >= 1 and not g["errors"]
    src = {c["clip_id"]: c["source_uri"] for c in read_stage(store, "clips", "batch-1")["clips"]}
    face_clip = next(c for c in g["clips"] if src[c["clip_id"]].endswith("carphone.mp4"))
    assert face_clip["faces_blurred"] >= 1
    assert face_clip["uri"] != face_clip["source_clip_uri"]
    m = read_stage(store, "webdataset_shards", "batch-1")
    assert face_clip["clip_id"] in {cid for s in m["shards"] for cid in s["clip_ids"]}

    def faces_found(uri):
        det = [HaarFaceDetector(), DlibHogFaceDetector()]
        frames = sample_frames(store.local_path(store.rel(uri)), 0, 60, 6)
        n = 0
        for _, img in frames:
            big = cv2.resize(img, (img.shape[1] * 3, img.shape[0] * 3))  # 176x144: upscale for the detectors
            n += any(len(d.detect(big)) for d in det)
        return n

    assert faces_found(face_clip["source_clip_uri"]) >= 3
    assert faces_found(face_clip["uri"]) == 0
    log_lines = [k for k in store.list("guardrails/violations")]
    assert log_lines  # the blur was recorded in the violation log
