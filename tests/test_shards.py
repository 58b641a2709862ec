"""WebDataset shards on real clips cut from the sample footage: buckets, rollover, manifest,
read-back with webdataset + PyAV, byte-identical reruns, verify_shards, and failures mid-write."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import av
import pytest
import webdataset

from wfm_platform import samples
from wfm_platform.curation import shards
from wfm_platform.curation.shards import (
    Bucket,
    ShardSample,
    bucket_of,
    open_dataset,
    read_manifest,
    verify_shards,
    write_shards,
)
from wfm_platform.ids import clip_id, file_digest
from wfm_platform.storage.objectstore import ObjectStore
from wfm_platform.video import VideoError, iter_frames, transcode_clip, write_mp4


# -- bucket_of ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "w,h,d,expected",
    [
        (1280, 720, 4.0, "720p/16x9/lt5s"),  # short side exactly 720
        (1280, 718, 4.0, "lt720p/16x9/lt5s"),  # just under
        (1919, 1079, 7.0, "720p/16x9/5to10s"),
        (1920, 1080, 5.0, "1080p_plus/16x9/5to10s"),  # 5.0 s is the lower edge of 5to10s
        (3840, 2160, 10.0, "1080p_plus/16x9/10to30s"),
        (1080, 1920, 12.0, "1080p_plus/9x16/10to30s"),  # portrait: by short side
        (720, 1280, 30.0, "720p/9x16/30s_plus"),
        (480, 480, 4.99, "lt720p/1x1/lt5s"),
        (1024, 768, 1.0, "720p/4x3/lt5s"),
        (768, 1024, 1.0, "720p/3x4/lt5s"),
        (2560, 1080, 3.0, "1080p_plus/16x9/lt5s"),  # 21:9 -> nearest is 16:9
        (640, 272, 1.2, "lt720p/16x9/lt5s"),  # bikes.mp4, 2.35:1
        (176, 144, 4.8, "lt720p/4x3/lt5s"),  # QCIF 1.22 -> 4:3
        (2, 2, 0.0, "lt720p/1x1/lt5s"),  # tiny
    ],
)
def test_bucket_of(w, h, d, expected):
    assert bucket_of(w, h, d).key == expected


def test_bucket_of_rejects_nonsense():
    with pytest.raises(ValueError):
        bucket_of(0, 720, 1.0)
    with pytest.raises(ValueError):
        bucket_of(1280, 720, float("nan"))
    assert Bucket("720p", "16:9", "lt5s").key == "720p/16x9/lt5s"


# -- real clips -----------------------------------------------------------------------------------
def _resized(src: Path, start: int, end: int, size: tuple[int, int], dst: Path, fps: float) -> None:
    frames = (img for _, img in iter_frames(src, start=start, end=end, size=size))
    write_mp4(frames, dst, fps=fps, preset="ultrafast")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, dict]:
    """name -> {"sample": ShardSample, "frames", "size", "bucket"}; real H.264 clips from the footage."""
    d = samples.fetch()
    out_dir = tmp_path_factory.mktemp("clips")
    specs = []  # (name, src, start, end, size or None, fps, expected bucket)
    for i, (a, b) in enumerate([(0, 19), (30, 49), (76, 95), (137, 156)]):
        specs.append((f"bikes{i}", d / "bikes.mp4", a, b, None, 25.0, "lt720p/16x9/lt5s"))
    specs += [
        ("bunny720", d / "bigbuckbunny.mp4", 0, 19, None, 25.0, "720p/16x9/lt5s"),
        ("bunny1080", d / "bigbuckbunny.mp4", 40, 41, (1920, 1080), 25.0, "1080p_plus/16x9/lt5s"),
        ("cockatoo_portrait", d / "cockatoo.mp4", 0, 9, (720, 1280), 20.0, "720p/9x16/lt5s"),
        # 12 frames at 2 fps = 6 s: the 5to10s bucket without encoding a long clip.
        ("vtest_square", d / "vtest.avi", 0, 11, (480, 480), 2.0, "lt720p/1x1/5to10s"),
        ("carphone", d / "carphone_pristine.mp4", 0, 19, None, 25.0, "lt720p/4x3/lt5s"),
    ]
    out = {}
    for name, src, a, b, size, fps, bucket in specs:
        dst = out_dir / f"{name}.mp4"
        if size is None:
            transcode_clip(src, a, b, dst, fps=fps, preset="ultrafast")
        else:
            _resized(src, a, b, size, dst, fps)
        cid = clip_id(file_digest(src), a, b)
        sample = ShardSample(cid, str(dst), {"source": src.name, "start": a, "end": b}, f"caption of {name}")
        out[name] = {"sample": sample, "frames": b - a + 1, "bucket": bucket}
    return out


def _samples(clips, names=None) -> list[ShardSample]:
    return [c["sample"] for n, c in clips.items() if names is None or n in names]


def _visible_and_hidden(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- writing and reading back ---------------------------------------------------------------------
def test_manifest_and_rollover(clips, tmp_path):
    store = ObjectStore(tmp_path / "store")
    m = write_shards(_samples(clips), store, "shards/p1", max_samples=2, shard_set="p1")

    assert m["shard_set"] == "p1"
    assert m["num_samples"] == len(clips)
    expected_buckets = {c["bucket"] for c in clips.values()}
    assert set(m["buckets"]) == expected_buckets
    for name, c in clips.items():
        entry = next(e for e in m["shards"] if c["sample"].clip_id in e["clip_ids"])
        assert entry["bucket"] == c["bucket"], name

    # 4 bikes clips in one bucket with max_samples=2 -> exactly two shards of 2, sorted by clip_id.
    bikes = m["buckets"]["lt720p/16x9/lt5s"]
    assert bikes["num_samples"] == 4
    assert [u.rsplit("/", 1)[-1] for u in bikes["shards"]] == ["shard-000000.tar", "shard-000001.tar"]
    bike_entries = [e for e in m["shards"] if e["bucket"] == "lt720p/16x9/lt5s"]
    ids = [cid for e in bike_entries for cid in e["clip_ids"]]
    assert ids == sorted(c["sample"].clip_id for n, c in clips.items() if n.startswith("bikes"))
    assert [e["num_samples"] for e in bike_entries] == [2, 2]
    assert m["num_shards"] == len(m["shards"]) == len(expected_buckets) + 1

    for e in m["shards"]:
        assert e["uri"].startswith(store.uri("shards/p1/" + e["bucket"]))
        assert store.size(store.rel(e["uri"])) == e["bytes"]
        assert len(e["sha256"]) == 64
    assert read_manifest(store, "shards/p1") == m
    assert verify_shards(store, m) == []
    assert not any(".tmp-" in p for p in _visible_and_hidden(tmp_path / "store"))


def test_rollover_by_bytes(clips, tmp_path):
    store = ObjectStore(tmp_path)
    names = [n for n in clips if n.startswith("bikes")]
    m = write_shards(_samples(clips, names), store, "p", max_bytes=1)  # every sample alone
    assert m["num_shards"] == 4
    assert all(e["num_samples"] == 1 for e in m["shards"])
    assert verify_shards(store, m) == []


def test_webdataset_reads_every_sample(clips, tmp_path):
    store = ObjectStore(tmp_path)
    m = write_shards(_samples(clips), store, "p", max_samples=3)
    by_id = {c["sample"].clip_id: (n, c) for n, c in clips.items()}

    urls = [e["uri"] for e in m["shards"]]
    seen = []
    for s in webdataset.WebDataset(urls, shardshuffle=False):
        name, c = by_id[s["__key__"]]
        meta = json.loads(s["json"])
        assert meta["clip_id"] == s["__key__"]
        assert meta["bucket"] == c["bucket"]
        assert meta["source"] == c["sample"].metadata["source"]
        assert meta["start"] == c["sample"].metadata["start"]
        assert s["txt"].decode() == f"caption of {name}"
        with av.open(io.BytesIO(s["mp4"])) as container:
            frames = [f for f in container.decode(video=0)]
        assert len(frames) == c["frames"], name
        assert (frames[0].width, frames[0].height) == (meta["width"], meta["height"])
        seen.append(s["__key__"])
    assert sorted(seen) == sorted(by_id)

    # The convenience reader, with a bucket filter.
    only = list(open_dataset(m, buckets=["720p/9x16/lt5s"]))
    assert [s["__key__"] for s in only] == [clips["cockatoo_portrait"]["sample"].clip_id]
    assert len(list(open_dataset([e["uri"] for e in m["shards"]]))) == len(clips)
    with pytest.raises(ValueError):
        open_dataset(m, buckets=["no/such/bucket"])


def test_rerun_is_byte_identical_and_removes_stale(clips, tmp_path):
    store = ObjectStore(tmp_path)
    first = write_shards(_samples(clips), store, "p", max_samples=2)
    # Same input in another order, given twice over: same bytes, no duplicates.
    again = write_shards(list(reversed(_samples(clips))) + _samples(clips), store, "p", max_samples=2)
    def digests(m):
        return [(e["uri"], e["sha256"]) for e in m["shards"]]

    assert digests(again) == digests(first)
    # Reproducible regardless of the clock: every member carries the fixed mtime and owner.
    with tarfile.open(store.local_path(store.rel(again["shards"][0]["uri"]))) as t:
        fixed = (shards.TAR_MTIME, shards.TAR_USER, shards.TAR_MODE)
        assert {(ti.mtime, ti.uname, ti.mode) for ti in t} == {fixed}
    assert again["num_samples"] == len(clips)

    # A smaller rerun of the same partition: shards it doesn't produce are gone afterwards.
    keep = ["bikes0", "bunny720"]
    third = write_shards(_samples(clips, keep), store, "p", max_samples=2)
    listed = store.list("p")
    assert listed == sorted(["p/manifest.json"] + [store.rel(e["uri"]) for e in third["shards"]])
    assert third["num_samples"] == 2
    assert verify_shards(store, third) == []


def test_conflicting_duplicate_rejected(clips, tmp_path):
    s = clips["bikes0"]["sample"]
    twin = ShardSample(s.clip_id, s.mp4_path, s.metadata, "another caption")
    with pytest.raises(ValueError, match="twice"):
        write_shards([s, twin], ObjectStore(tmp_path), "p")


# -- verify_shards catches damage -----------------------------------------------------------------
def test_verify_catches_truncated_and_deleted(clips, tmp_path):
    store = ObjectStore(tmp_path)
    m = write_shards(_samples(clips), store, "p", max_samples=2)
    bikes = [e for e in m["shards"] if e["bucket"] == "lt720p/16x9/lt5s"]

    truncated = store.local_path(store.rel(bikes[0]["uri"]))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    deleted = store.rel(bikes[1]["uri"])
    store.delete(deleted)

    problems = verify_shards(store, m)
    text = "\n".join(problems)
    assert f"{bikes[1]['uri']}: missing shard" in problems
    assert f"{bikes[0]['uri']}: sha256 mismatch" in problems
    assert "truncated" in text or "unreadable" in text
    # The healthy shards raise nothing.
    others = [e["uri"] for e in m["shards"] if e not in bikes]
    assert not any(p.startswith(u) for u in others for p in problems)


def test_verify_catches_missing_member_and_count(clips, tmp_path):
    store = ObjectStore(tmp_path)
    m = write_shards(_samples(clips, ["bikes0", "bikes1"]), store, "p")
    entry = m["shards"][0]
    path = store.local_path(store.rel(entry["uri"]))
    # Rebuild the tar without one sample's caption.
    with tarfile.open(path) as src:
        dropped = f"{entry['clip_ids'][0]}.txt"
        members = [(ti, src.extractfile(ti).read()) for ti in src if ti.name != dropped]
    with tarfile.open(path, "w") as dst:
        for ti, data in members:
            dst.addfile(ti, io.BytesIO(data))
    problems = verify_shards(store, m)
    assert f"{entry['uri']}: sample {entry['clip_ids'][0]} has no .txt member" in problems

    bad = dict(m, num_samples=m["num_samples"] + 1)
    assert any("num_samples" in p for p in verify_shards(store, bad))


# -- failures never leave partial output ----------------------------------------------------------
def test_failing_iterator_writes_nothing(clips, tmp_path):
    def gen():
        yield from _samples(clips, ["bikes0", "bikes1", "bunny720"])
        raise RuntimeError("upstream broke")

    root = tmp_path / "store"
    with pytest.raises(RuntimeError, match="upstream broke"):
        write_shards(gen(), ObjectStore(root), "p", max_samples=1)
    assert not root.exists() or _visible_and_hidden(root) == []


def test_failure_mid_write_leaves_no_partial_tar_or_manifest(clips, tmp_path, monkeypatch):
    root = tmp_path / "store"
    store = ObjectStore(root)
    calls = {"n": 0}
    real = shards._read_mp4

    def flaky(path):
        calls["n"] += 1
        if calls["n"] == 3:  # inside the second shard (max_samples=2)
            raise OSError("disk went away")
        return real(path)

    monkeypatch.setattr(shards, "_read_mp4", flaky)
    with pytest.raises(OSError, match="disk went away"):
        write_shards(_samples(clips), store, "p", max_samples=2)
    files = _visible_and_hidden(root)
    assert not any(".tmp-" in f for f in files)
    assert "p/manifest.json" not in files
    # Shards committed before the failure (two one-sample buckets sort first) are whole tars.
    assert len(files) == 2
    for f in files:
        with tarfile.open(root / f) as t:
            names = t.getnames()
            assert sorted(n.rsplit(".", 1)[1] for n in names) == ["json", "mp4", "txt"]
            assert all(len(t.extractfile(n).read()) == t.getmember(n).size for n in names)


def test_failed_rerun_keeps_previous_manifest(clips, tmp_path, monkeypatch):
    store = ObjectStore(tmp_path)
    first = write_shards(_samples(clips), store, "p", max_samples=2)
    before = store.read_bytes("p/manifest.json")

    def boom(path):
        raise OSError("disk went away")

    monkeypatch.setattr(shards, "_read_mp4", boom)
    with pytest.raises(OSError):
        write_shards(_samples(clips), store, "p", max_samples=2)
    assert store.read_bytes("p/manifest.json") == before
    assert verify_shards(store, first) == []
    assert not any(".tmp-" in f for f in _visible_and_hidden(tmp_path))


def test_broken_inputs_have_readable_errors(clips, tmp_path):
    not_video = tmp_path / "notes.mp4"
    not_video.write_bytes(b"this is not a video" * 100)
    store = ObjectStore(tmp_path / "store")
    good = clips["bikes0"]["sample"]
    with pytest.raises(VideoError, match="clip deadbeef"):
        write_shards([good, ShardSample("deadbeef", str(not_video), {}, "x")], store, "p")
    with pytest.raises(VideoError, match="clip gone"):
        write_shards([ShardSample("gone", str(tmp_path / "missing.mp4"), {}, "x")], store, "p")
    with pytest.raises(ValueError, match="clip_id"):
        write_shards([ShardSample("a.b", good.mp4_path, {}, "x")], store, "p")
    with pytest.raises(ValueError, match="not JSON serializable"):
        write_shards([ShardSample(good.clip_id, good.mp4_path, {"x": object()}, "x")], store, "p")
    assert not (tmp_path / "store").exists() or _visible_and_hidden(tmp_path / "store") == []
    with pytest.raises(FileNotFoundError, match="no shard manifest"):
        read_manifest(store, "p")


def test_non_local_store_round_trip(clips, tmp_path):
    """The remote code path (stage locally, then one put; read via fsspec) on fsspec's memory:// store."""
    store = ObjectStore(f"memory://wfm-test-{tmp_path.name}")
    m = write_shards(_samples(clips, ["bikes0", "bikes1", "carphone"]), store, "p", max_samples=1)
    assert all(e["uri"].startswith("memory://") for e in m["shards"])
    assert verify_shards(store, m) == []
    keys = sorted(s["__key__"] for s in open_dataset(m, store=store))
    assert keys == sorted(clips[n]["sample"].clip_id for n in ("bikes0", "bikes1", "carphone"))
    write_shards(_samples(clips, ["carphone"]), store, "p")
    assert len([k for k in store.list("p") if k.endswith(".tar")]) == 1
    store.delete("p", recursive=True)
