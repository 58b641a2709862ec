"""Catalog tables of the data model (frames, metadata, annotations, datasets), deletion for erasure,
and indexes that build and re-optimize themselves as the clips table grows."""

from __future__ import annotations

import numpy as np
import pytest

from wfm_platform.storage import catalog as catalog_mod
from wfm_platform.storage.catalog import Catalog


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture()
def cat(tmp_path) -> Catalog:
    return Catalog(str(tmp_path / "catalog"), mirror=None)


def _two_videos(cat: Catalog) -> None:
    cat.upsert_videos([{"video_id": v, "partition": "p1", "source_uri": f"file:///up/{v}.mp4", "status": "ok"}
                       for v in ("va", "vb")])
    cat.upsert_clips([{"clip_id": f"{v}-c{i}", "video_id": v, "partition": "p1", "start_frame": 10 * i,
                       "end_frame": 10 * i + 9, "fps": 25.0, "width": 640, "height": 272, "status": "passed",
                       "caption": f"clip {i} of {v}"} for v in ("va", "vb") for i in range(3)])


def test_frames_metadata_annotations_keys_and_idempotency(cat):
    _two_videos(cat)
    frames = [{"clip_id": "va-c0", "video_id": "va", "kind": "caption", "frame_index": i, "source_frame": i,
               "timestamp_s": i / 25, "data": {"brightness": 0.5 + i}} for i in range(3)]
    cat.upsert_frames(frames)
    cat.upsert_frames(frames)  # a rerun
    rows = cat.frames("va-c0")
    assert [r["frame_id"] for r in rows] == ["va-c0:caption:0", "va-c0:caption:1", "va-c0:caption:2"]
    assert rows[1]["data"] == {"brightness": 1.5} and rows[1]["timestamp_s"] == pytest.approx(0.04)

    cat.set_metadata("clip", "va-c0", {"video_type": "natural", "faces_blurred": 2, "tags": ["road", "bike"]})
    cat.set_metadata("clip", "va-c0", {"faces_blurred": 0})  # replaces one key, keeps the others
    cat.set_metadata("video", "va", {"camera": "dashcam"})
    meta = {m["key"]: m for m in cat.metadata("va-c0")}
    assert {k: m["value"] for k, m in meta.items()} == {"video_type": "natural", "faces_blurred": 0,
                                                       "tags": ["road", "bike"]}
    assert meta["tags"]["value_json"] == '["road", "bike"]' and meta["tags"]["clip_id"] == "va-c0"
    assert cat.metadata("va", entity_type="video")[0]["video_id"] == "va"
    assert cat.count("metadata") == 4

    ann = {"clip_id": "vb-c1", "video_id": "vb", "kind": "bbox", "label": "person", "source": "annotator-7",
           "data": {"xyxy": [1, 2, 30, 40], "frame": 5}}
    ids = cat.upsert_annotations([ann])
    first = cat.annotations("vb-c1")[0]
    assert cat.upsert_annotations([ann]) == ids and cat.count("annotations") == 1  # same content, same id
    again = cat.annotations("vb-c1")[0]
    assert again["created_at"] == first["created_at"] and again["data"] == {"frame": 5, "xyxy": [1, 2, 30, 40]}
    cat.upsert_annotations([dict(ann, label="cyclist")])
    assert sorted(a["label"] for a in cat.annotations("vb-c1")) == ["cyclist", "person"]

    with pytest.raises(ValueError, match="unknown frames columns"):
        cat.upsert_frames([{"clip_id": "va-c0", "kind": "x", "frame_index": 0, "colour": "red"}])
    with pytest.raises(ValueError, match="metadata row without meta_id"):
        cat.upsert_metadata([{"entity_type": "clip", "key": "k", "value": 1}])  # no entity_id


def test_describe_clip_joins_its_lineage(cat):
    _two_videos(cat)
    cat.upsert_frames([{"clip_id": "va-c2", "video_id": "va", "kind": "thumbnail", "frame_index": 4,
                        "uri": "file:///store/thumbs/va-c2.jpg"}])
    cat.set_metadata("clip", "va-c2", {"video_type": "natural"}, video_id="va")
    cat.upsert_annotations([{"clip_id": "va-c2", "video_id": "va", "kind": "label", "label": "rain", "source": "qa"}])
    d = cat.describe_clip("va-c2")
    assert d["clip"]["start_frame"] == 20 and d["video"]["source_uri"] == "file:///up/va.mp4"
    assert [f["kind"] for f in d["frames"]] == ["thumbnail"] and d["metadata"][0]["value"] == "natural"
    assert d["annotations"][0]["label"] == "rain"
    assert cat.describe_clip("nope") is None


def test_datasets_are_immutable_versions(cat):
    row = {"name": "driving", "version": "1.0.0", "manifest_uri": "file:///store/datasets/driving/1.0.0.json",
           "num_clips": 6, "num_shards": 2, "config_digest": "c" * 64, "code_digest": "d" * 64, "parent": None,
           "created_at": "2026-11-01T00:00:00+00:00"}
    cat.upsert_dataset(row)
    cat.upsert_dataset(dict(row))  # the same version again: a no-op
    assert cat.count("datasets") == 1
    with pytest.raises(ValueError, match="immutable.*num_clips"):
        cat.upsert_dataset(dict(row, num_clips=5))
    cat.upsert_dataset(dict(row, version="1.1.0", num_clips=5, parent="driving@1.0.0",
                            manifest_uri="file:///store/datasets/driving/1.1.0.json",
                            created_at="2026-11-02T00:00:00+00:00"))
    cat.upsert_dataset(dict(row, name="indoor", version="0.1.0"))
    assert [d["dataset_id"] for d in cat.datasets("driving")] == ["driving@1.0.0", "driving@1.1.0"]
    assert len(cat.datasets()) == 3
    assert cat.get_dataset("driving", "1.1.0")["parent"] == "driving@1.0.0"
    assert cat.get_dataset("driving", "9.9.9") is None
    with pytest.raises(ValueError, match="needs name and version"):
        cat.upsert_dataset({"name": "x"})


def _files_with(root, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_delete_where_removes_rows_and_their_history(cat, tmp_path):
    _two_videos(cat)
    cat.upsert_clips([{"clip_id": "va-c1", "caption": "a zanzibarquokka crossing"}])
    assert _files_with(tmp_path / "catalog", b"zanzibarquokka")  # the erased text is on disk before
    assert [c["clip_id"] for c in cat.search_text("zanzibarquokka")] == ["va-c1"]
    cat.upsert_frames([{"clip_id": f"{v}-c0", "video_id": v, "kind": "thumbnail", "frame_index": 0}
                       for v in ("va", "vb")])
    cat.set_metadata("video", "va", {"owner": "alice"})
    cat.set_embeddings([f"va-c{i}" for i in range(3)], np.eye(8, dtype=np.float32)[:3], "e")
    assert set(cat.tables()) >= {"videos", "clips", "frames", "metadata"} and "_index_state" not in cat.tables()

    deleted = {t: cat.delete_where(t, "video_id = 'va'", purge=True)
               for t in cat.tables() if "video_id" in cat.columns(t)}
    assert deleted["videos"] == 1 and deleted["clips"] == 3 and deleted["frames"] == 1 and deleted["metadata"] == 1
    for t in deleted:
        assert cat.count(t, "video_id = 'va'") == 0
        # no older Lance version is left to time-travel back to the erased rows
        table = cat._table(t)
        assert len(table.list_versions()) == 1
    assert cat.count("clips") == 3 and cat.get_clip("vb-c0") is not None
    # nothing of the erased rows is left in any file: data, old versions, index files (rebuilt)
    assert _files_with(tmp_path / "catalog", b"zanzibarquokka") == []
    assert _files_with(tmp_path / "catalog", b"va-c2") == []
    assert cat.search_text("zanzibarquokka") == [] and len(cat.search_text("clip", k=10)) == 3
    assert [i["builds"] for i in cat.index_state() if i["column"] == "caption"] == [2]  # rebuilt after erasure
    assert cat.search(np.eye(8, dtype=np.float32)[0], k=5) == []  # the only vectors were va's
    assert cat.delete_where("clips", "video_id = 'nobody'") == 0
    with pytest.raises(ValueError, match="needs a filter"):
        cat.delete_where("clips", "")


def _clip_rows(start: int, n: int, words: list[str]) -> list[dict]:
    return [{"clip_id": f"c{i:04d}", "video_id": f"v{i // 10}", "partition": "p", "width": 640, "height": 360,
             "caption": f"a {words[i % len(words)]} scene number {i}"} for i in range(start, start + n)]


def test_indexes_build_then_reoptimize_then_rebuild_as_clips_grow(cat):
    words = ["forest", "harbour", "desert", "kitchen", "highway"]
    rng = np.random.default_rng(0)
    vecs = _unit(rng, 620, 16)
    ids = [f"c{i:04d}" for i in range(620)]

    def grow(start, n):
        cat.upsert_clips(_clip_rows(start, n, words))
        cat.set_embeddings(ids[start:start + n], vecs[start:start + n], "random")

    def state():
        return {(i["table_name"], i["column"]): i for i in cat.index_state()}

    grow(0, 200)  # below INDEX_MIN_ROWS: brute force only, but captions get their full-text index at once
    st = state()
    assert ("clips", "vector") not in st and st[("clips", "caption")]["builds"] == 1

    grow(200, 100)  # 300 >= 256 embedded: IVF index built over all of them
    st = state()[("clips", "vector")]
    assert st["builds"] == 1 and st["rows_at_build"] == 300 and st["num_unindexed_rows"] == 0

    grow(300, 90)  # +30 % not in the index (> OPTIMIZE_GROWTH): folded in by optimize(), no retrain
    st = state()[("clips", "vector")]
    assert st["builds"] == 1 and st["optimizations"] >= 1 and st["num_unindexed_rows"] == 0
    assert st["num_indexed_rows"] == 390
    assert state()[("clips", "caption")]["num_unindexed_rows"] == 0

    grow(390, 230)  # 620 >= 2 x 300 rows at the last build: lists retrained for the new size
    st = state()[("clips", "vector")]
    assert st["builds"] == 2 and st["rows_at_build"] == 620 and st["num_unindexed_rows"] == 0

    # queries still return the right rows, through the indexes
    for i in (5, 299, 450, 619):
        assert cat.search(vecs[i], k=1)[0]["clip_id"] == ids[i]
    hits = cat.search_text("harbour", k=1000)
    assert len(hits) == 124 and all("harbour" in h["caption"] for h in hits)
    assert {h["clip_id"] for h in cat.search_text("scene number 433", k=3)} >= {"c0433"}
    found = cat.find_clips(caption="desert", where="clip_id < 'c0100'", limit=100)
    assert sorted(h["clip_id"] for h in found) == [f"c{i:04d}" for i in range(2, 100, 5)]
    assert cat.neighbors(ids[7], k=3)[0]["clip_id"] != ids[7]
    s = cat.stats()
    assert s["tables"]["clips"] == 620 and s["clips_embedded"] == 620 and s["vector_dim"] == 16


def test_index_maintenance_failure_never_fails_the_write(cat, monkeypatch, caplog):
    monkeypatch.setattr(catalog_mod, "INDEX_MIN_ROWS", 4)

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Catalog, "_maintain_vector", broken)
    cat.upsert_clips(_clip_rows(0, 5, ["x"]))
    cat.set_embeddings([f"c{i:04d}" for i in range(5)], np.eye(8, dtype=np.float32)[:5], "e")
    assert cat.count("clips", "vector IS NOT NULL") == 5
    assert "index maintenance of clips failed (RuntimeError: disk full)" in caplog.text


def test_btree_indexes_on_keys_and_lineage_columns_once_tables_are_big(cat, monkeypatch):
    monkeypatch.setattr(catalog_mod, "SCALAR_INDEX_MIN_ROWS", 50)
    rows = [{"clip_id": f"c{i // 4}", "video_id": f"v{i // 20}", "kind": "caption", "frame_index": i % 4}
            for i in range(40)]
    cat.upsert_frames(rows)
    assert not cat._table("frames").list_indices()  # 40 rows: a scan is fine
    cat.upsert_frames([dict(r, clip_id=f"d{i // 4}", video_id="v9") for i, r in enumerate(rows)])
    indexed = {(i["column"], i["index_type"]) for i in cat.index_state() if i["table_name"] == "frames"}
    assert indexed == {("frame_id", "BTree"), ("clip_id", "BTree"), ("video_id", "BTree")}
    assert cat.count("frames", "video_id = 'v9'") == 40 and len(cat.frames("c3")) == 4
    assert cat.delete_where("frames", "video_id = 'v9'") == 40 and cat.count("frames") == 40


def test_text_search_refuses_empty_query(cat):
    assert cat.search_text("anything") == []  # no clips yet
    with pytest.raises(ValueError, match="empty caption query"):
        cat.search_text("  ")
