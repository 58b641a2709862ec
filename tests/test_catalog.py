"""The LanceDB clip catalog: idempotent upserts, partial updates, vectors, cosine search, index."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from wfm_platform import samples
from wfm_platform.storage import catalog as catalog_mod
from wfm_platform.storage.catalog import Catalog
from wfm_platform.video import probe


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _clip_rows(n: int, partition: str = "p1") -> list[dict]:
    return [
        {
            "clip_id": f"c{i:03d}",
            "video_id": "v1",
            "partition": partition,
            "start_frame": 10 * i,
            "end_frame": 10 * i + 9,
            "fps": 25.0,
            "duration_s": 0.4,
            "width": 640,
            "height": 272,
            "uri": f"file:///data/clips/{partition}/c{i:03d}.mp4",
            "status": "ok",
            "reasons": [],
            "scores": {"motion": 0.1 * i},
        }
        for i in range(n)
    ]


@pytest.fixture()
def cat(tmp_path) -> Catalog:
    return Catalog(str(tmp_path / "catalog"))


def test_empty_catalog_reads(cat):
    assert cat.count("clips") == 0 and cat.count("videos") == 0
    assert cat.clips() == [] and cat.videos() == [] and cat.get_clip("nope") is None
    assert cat.search(np.ones(8, np.float32)) == []
    with pytest.raises(ValueError, match="unknown catalog table"):
        cat.count("nope")


def test_videos_from_real_probe_are_idempotent(cat):
    d = Path(samples.fetch())
    rows = []
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        info = probe(d / name).to_dict()
        rows.append(
            {
                "video_id": name.split(".")[0],
                "source_uri": info.pop("path"),
                "partition": "up1",
                "digest": "0" * 64,
                "status": "ok",
                "reason": None,
                **{
                    k: info[k]
                    for k in (
                        "container",
                        "codec",
                        "width",
                        "height",
                        "fps",
                        "num_frames",
                        "duration_s",
                        "rotation",
                        "has_audio",
                        "size_bytes",
                    )
                },
            }
        )
    cat.upsert_videos([dict(r, ingested_at="2026-01-02T03:04:05+00:00") for r in rows])
    first = {v["video_id"]: v for v in cat.videos("up1")}
    assert first["bikes"]["width"] == 640 and first["bikes"]["num_frames"] == 250
    assert first["bikes"]["ingested_at"].isoformat() == "2026-01-02T03:04:05+00:00"

    cat.upsert_videos([dict(r, ingested_at="2026-05-01T00:00:00+00:00") for r in rows])  # rerun
    cat.upsert_videos([{"video_id": "bikes", "status": "rejected", "reason": "too short"}])
    again = {v["video_id"]: v for v in cat.videos("up1")}
    assert cat.count("videos") == 2
    assert again["bikes"]["status"] == "rejected" and again["bikes"]["codec"] == "h264"
    assert again["bikes"]["ingested_at"] == first["bikes"]["ingested_at"]  # first registration is kept
    assert cat.videos("other") == []


def test_clip_upserts_are_idempotent_and_partial_updates_keep_columns(cat):
    cat.upsert_clips(_clip_rows(5))
    cat.upsert_clips(_clip_rows(5))
    assert cat.count("clips") == 5

    cat.upsert_clips([{"clip_id": "c001", "caption": "a cyclist on a dirt road", "captioner": "test"}])
    c = cat.get_clip("c001")
    assert c["caption"] == "a cyclist on a dirt road" and c["width"] == 640 and c["scores"] == {"motion": 0.1}
    assert c["vector"] is None  # not embedded yet

    v = _unit(np.random.default_rng(0), 5, 16)
    cat.set_embeddings([f"c{i:03d}" for i in range(5)], v, "test-embedder")
    c = cat.get_clip("c001")
    assert c["caption"] == "a cyclist on a dirt road" and c["embedder"] == "test-embedder"
    np.testing.assert_allclose(c["vector"], v[1], atol=1e-6)

    # A rerun of the clips step with full rows must not wipe caption or vector (it does not name them).
    cat.upsert_clips(_clip_rows(5))
    c = cat.get_clip("c001")
    assert c["caption"] == "a cyclist on a dirt road" and c["vector"] is not None
    assert cat.count("clips") == 5

    # Explicit None clears; reasons accept a JSON list.
    cat.upsert_clips([{"clip_id": "c002", "caption": None, "reasons": '["low_motion", "text_overlay"]'}])
    assert cat.get_clip("c002")["reasons"] == ["low_motion", "text_overlay"]
    assert [r["clip_id"] for r in cat.clips(where="end_frame < 25")] == ["c000", "c001"]


def test_search_is_cosine_with_filters(cat):
    rng = np.random.default_rng(1)
    cat.upsert_clips(
        _clip_rows(40, "p1") + [dict(r, clip_id="q" + r["clip_id"], partition="p2") for r in _clip_rows(10)]
    )
    ids = [f"c{i:03d}" for i in range(40)]
    v = _unit(rng, 40, 32)
    cat.set_embeddings(ids, v * 3.0, "test")  # scale must not matter for cosine
    query = v[7] + 0.1 * _unit(rng, 1, 32)[0]

    hits = cat.search(query, k=5)
    expected = np.argsort(-(v @ query / np.linalg.norm(query)))[:5]
    assert [h["clip_id"] for h in hits] == [ids[i] for i in expected]
    np.testing.assert_allclose(
        [h["similarity"] for h in hits], (v @ query / np.linalg.norm(query))[expected], atol=1e-4
    )
    # Clips without vectors (partition p2) never come back; filters apply before the k limit.
    assert all(h["partition"] == "p1" for h in cat.search(query, k=50))
    filtered = cat.search(query, k=3, where="clip_id != 'c007'")
    assert len(filtered) == 3 and "c007" not in {h["clip_id"] for h in filtered}


def test_marking_duplicates(cat):
    cat.upsert_clips(_clip_rows(3))
    cat.mark_duplicate("c002", duplicate_of="c000")
    assert cat.get_clip("c002")["duplicate_of"] == "c000"
    assert [r["clip_id"] for r in cat.clips(where="duplicate_of IS NULL")] == ["c000", "c001"]
    cat.mark_duplicate("c002", None)
    assert cat.get_clip("c002")["duplicate_of"] is None
    with pytest.raises(KeyError, match="not in the catalog"):
        cat.mark_duplicate("missing", "c000")
    assert cat.count("clips") == 3


def test_bad_writes_are_refused_with_reasons(cat):
    cat.upsert_clips(_clip_rows(2))
    cat.set_embeddings(["c000"], np.ones((1, 8), np.float32), "e")
    with pytest.raises(ValueError, match="8-d clip vectors, got 4-d"):
        cat.set_embeddings(["c001"], np.ones((1, 4), np.float32), "other")
    with pytest.raises(KeyError, match="upsert_clips first"):
        cat.set_embeddings(["c999"], np.ones((1, 8), np.float32), "e")
    with pytest.raises(ValueError, match="one vector per clip"):
        cat.set_embeddings(["c000", "c001"], np.ones((1, 8), np.float32), "e")
    with pytest.raises(ValueError, match="unknown clips columns"):
        cat.upsert_clips([{"clip_id": "c000", "colour": "red"}])
    with pytest.raises(ValueError, match="without clip_id"):
        cat.upsert_clips([{"caption": "x"}])
    with pytest.raises(ValueError, match="NaN"):
        cat.search(np.full(8, np.nan, np.float32))


def test_vector_index_is_built_when_big_enough(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_mod, "INDEX_MIN_ROWS", 200)
    cat = Catalog(f"file://{tmp_path / 'catalog'}")
    n = 220
    rng = np.random.default_rng(2)
    cat.upsert_clips(_clip_rows(n))
    ids = [f"c{i:03d}" for i in range(n)]
    v = _unit(rng, n, 16)
    cat.set_embeddings(ids[:150], v[:150], "e")
    assert not cat._table("clips").list_indices()
    cat.set_embeddings(ids, v, "e")
    assert cat._table("clips").list_indices()
    for i in (3, 160, 219):
        assert cat.search(v[i], k=1)[0]["clip_id"] == ids[i]
    # A second handle on the same URI (another process / asset) sees the same data.
    assert Catalog(str(tmp_path / "catalog")).count("clips") == n


def _write_column(uri: str, column: str, n: int) -> None:
    cat = Catalog(uri)
    for i in range(n):
        if column == "caption":
            cat.upsert_clips([{"clip_id": f"c{i:03d}", "caption": f"caption {i}"}])
        else:
            cat.set_embeddings([f"c{i:03d}"], np.eye(8, dtype=np.float32)[i % 8][None], "e")


def test_concurrent_partial_updates_do_not_overwrite_each_other(tmp_path):
    """Captions and embeddings run as parallel Dagster steps: both writes must survive."""
    uri = str(tmp_path / "catalog")
    cat = Catalog(uri)
    cat.upsert_clips(_clip_rows(6))
    cat.set_embeddings(["c000"], np.eye(8, dtype=np.float32)[:1], "e")  # vector column exists up front
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_column, args=(uri, col, 6)) for col in ("caption", "vector")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = cat.clips()
    assert len(rows) == 6
    assert all(r["caption"] == f"caption {i}" and r["vector"] is not None for i, r in enumerate(rows))
    assert all(r["width"] == 640 for r in rows)
