"""The MongoDB mirror of the catalog.

No MongoDB server can be installed on our machines (none in Debian, PyPI or npm without a download at run
time), so these tests run the mirror against **mongomock**, an in-memory fake of pymongo's client. The
pymongo code path itself (MongoClient from a URI, its errors) is exercised against a closed port.
"""

from __future__ import annotations

import socket

import mongomock
import numpy as np
import pytest

from wfm_platform.storage.catalog import Catalog
from wfm_platform.storage.mirror import MirrorError, MongoMirror


@pytest.fixture()
def mock_mongo():
    return mongomock.MongoClient()  # a mock: no real MongoDB server can run here


@pytest.fixture()
def mirrored(tmp_path, mock_mongo):
    mirror = MongoMirror(mock_mongo, "wfm_test")
    return Catalog(str(tmp_path / "catalog"), mirror=mirror), mirror


def _clips(n):
    return [{"clip_id": f"c{i}", "video_id": "v1", "partition": "p1", "width": 640, "height": 272,
             "status": "clipped", "scores": {"motion": 0.1 * i}} for i in range(n)]


def test_upserts_are_mirrored_idempotently_with_partial_updates(mirrored):
    cat, mirror = mirrored
    cat.upsert_videos([{"video_id": "v1", "partition": "p1", "source_uri": "file:///up/a.mp4", "status": "ok"}])
    cat.upsert_clips(_clips(3))
    cat.upsert_clips(_clips(3))  # rerun: same documents, no copies
    assert mirror.count("clips") == 3 and mirror.count("videos") == 1
    cat.upsert_clips([{"clip_id": "c1", "caption": "a cyclist on a dirt road"}])
    cat.set_embeddings(["c0", "c1"], np.eye(4, dtype=np.float32)[:2], "e")
    doc = mirror.find("clips", {"_id": "c1"})[0]
    # the partial updates merged into the document, like the catalog's merge-insert
    assert doc["caption"] == "a cyclist on a dirt road" and doc["width"] == 640 and doc["embedder"] == "e"
    assert doc["vector"] == [0.0, 1.0, 0.0, 0.0] and doc["scores"] == '{"motion": 0.1}'
    assert mirror.find("videos")[0]["source_uri"] == "file:///up/a.mp4"

    cat.set_metadata("clip", "c1", {"faces_blurred": 2})
    cat.upsert_annotations([{"clip_id": "c1", "video_id": "v1", "kind": "label", "label": "bike", "source": "qa"}])
    cat.upsert_dataset({"name": "d", "version": "1.0.0", "manifest_uri": "file:///m.json", "num_clips": 3})
    assert mirror.find("metadata")[0]["_id"] == "clip:c1:faces_blurred"
    assert mirror.count("annotations", {"clip_id": "c1"}) == 1 and mirror.count("datasets") == 1
    # a duplicate marking of a clip that does not exist is not invented in the mirror
    cat.set_duplicates({"c2": "c0", "ghost": "c0"})
    assert mirror.count("clips") == 3 and mirror.find("clips", {"_id": "c2"})[0]["duplicate_of"] == "c0"
    # index bookkeeping stays out of the mirror
    assert "_index_state" not in mirror.db.list_collection_names()


def test_deletes_propagate(mirrored):
    cat, mirror = mirrored
    cat.upsert_clips(_clips(4))
    cat.set_metadata("clip", "c2", {"k": 1})
    assert cat.delete_where("clips", "clip_id IN ('c1', 'c2')") == 2
    cat.delete_where("metadata", "clip_id = 'c2'")
    assert sorted(d["_id"] for d in mirror.find("clips")) == ["c0", "c3"]
    assert mirror.count("metadata") == 0


def test_sync_repairs_a_mirror_that_missed_writes(tmp_path, mock_mongo):
    cat = Catalog(str(tmp_path / "catalog"), mirror=None)  # written while the mirror was not configured
    cat.upsert_clips(_clips(3))
    mirror = MongoMirror(mock_mongo, "wfm_test")
    mirror.collection("clips").insert_one({"_id": "stale", "clip_id": "stale"})  # erased meanwhile
    counts = mirror.sync(cat)
    assert counts["clips"] == 3
    assert sorted(d["_id"] for d in mirror.find("clips")) == ["c0", "c1", "c2"]
    assert mirror.find("clips", {"_id": "c2"})[0]["height"] == 272
    assert mirror.sync(cat)["clips"] == 3 and mirror.count("clips") == 3  # idempotent


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_mongodb_fails_loudly_after_the_catalog_write(tmp_path):
    """Real pymongo client against a closed port: a clear MirrorError, the LanceDB write kept."""
    mirror = MongoMirror(f"mongodb://wfm:secret@127.0.0.1:{_closed_port()}/", "wfm", timeout_ms=300)
    cat = Catalog(str(tmp_path / "catalog"), mirror=mirror)
    with pytest.raises(MirrorError, match="failed to upsert 2 clips rows.*rerun the step") as e:
        cat.upsert_clips(_clips(2))
    assert "secret" not in str(e.value)  # the password never reaches logs
    assert cat.count("clips") == 2  # the catalog (source of truth) has the write; a retry repeats both


def test_mirror_is_attached_from_the_environment(tmp_path, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("WFM_MONGO_URI", f"mongodb://u:pw@127.0.0.1:{port}/")
    monkeypatch.setenv("WFM_MONGO_DB", "curation")
    cat = Catalog(str(tmp_path / "catalog"))
    assert cat.mirror.describe() == {"kind": "mongodb", "where": f"mongodb://***@127.0.0.1:{port}/",
                                     "db": "curation", "prefix": ""}
    assert Catalog(str(tmp_path / "catalog"), mirror=None).mirror is None
    monkeypatch.delenv("WFM_MONGO_URI")
    assert Catalog(str(tmp_path / "catalog")).mirror is None


def test_bad_uri_is_refused():
    with pytest.raises(ValueError, match="not a MongoDB URI.*mongodb://user:pass@host"):
        MongoMirror("postgres://x@y/z")


def test_catalog_resource_builds_the_mirror(tmp_path, monkeypatch):
    from resources.catalog import CatalogResource, catalog_metadata

    monkeypatch.delenv("WFM_MONGO_URI", raising=False)
    res = CatalogResource(uri=str(tmp_path / "catalog"))
    cat = res.catalog()
    assert cat.mirror is None
    cat.upsert_clips(_clips(2))
    md = catalog_metadata(cat)
    assert md["catalog_rows"].value["clips"] == 2 and md["catalog_clips_embedded"].value == 0
    res = CatalogResource(uri=str(tmp_path / "catalog"), mongo_uri="mongodb://127.0.0.1:1/", mongo_db="x")
    assert res.catalog().mirror.describe()["db"] == "x"
