"""A MongoDB mirror of the catalog: every upsert and delete of a catalog table, repeated in MongoDB.

Teams that query metadata from MongoDB (dashboards, other services) get the catalog's rows there; LanceDB
stays the source of truth. One collection per table, one document per row with `_id` = the row's key
(video_id, clip_id, frame_id, ...), so:

- upserts are idempotent: a partial row ($set of the columns it names) updates the document in place,
  exactly like the catalog's merge-insert; a retried write changes nothing;
- deletes propagate by key (erasure reaches the mirror);
- `sync(catalog)` rewrites the mirror from the catalog (after an outage, or to attach a mirror later).

A write that reaches LanceDB but not MongoDB raises MirrorError: the step fails, and its retry repeats both
writes (both are idempotent), so the two never drift silently.

The client is a real pymongo.MongoClient built from a URI (credentials in the URI, from an env var);
tests pass a mongomock client instead, because no MongoDB server can be installed on our machines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_BATCH = 1000


class MirrorError(RuntimeError):
    """The MongoDB mirror could not take a write (the LanceDB catalog has it)."""


def _plain(value: Any) -> Any:
    """Python/BSON-friendly values: numpy scalars and arrays become numbers and lists."""
    if isinstance(value, np.ndarray):
        return value.astype(float).tolist() if value.dtype.kind == "f" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _redact(uri: str) -> str:
    """The URI without its password, for messages."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return uri


class MongoMirror:
    """Mirror of catalog tables into MongoDB database `db`.

    client_or_uri: a "mongodb://..." / "mongodb+srv://..." URI (a pymongo.MongoClient is made with
    a short server-selection timeout, so an unreachable server fails in seconds, not 30 s) or a ready
    client object (pymongo.MongoClient, or mongomock.MongoClient in tests).
    include_vectors: copy the clip embedding vectors too (they are most of the bytes).
    """

    def __init__(self, client_or_uri: Any, db: str = "wfm", *, prefix: str = "",
                 include_vectors: bool = True, timeout_ms: int = 5000):
        if isinstance(client_or_uri, str):
            if not client_or_uri.startswith(("mongodb://", "mongodb+srv://")):
                raise ValueError(
                    f"not a MongoDB URI: {_redact(client_or_uri)!r}; expected mongodb://user:pass@host:27017"
                )
            import pymongo

            self._where = _redact(client_or_uri)
            self.client = pymongo.MongoClient(
                client_or_uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, tz_aware=True
            )
        else:
            self._where = type(client_or_uri).__module__.split(".")[0] + " client"
            self.client = client_or_uri
        self.db_name = db
        self.db = self.client[db]
        self.prefix = prefix
        self.include_vectors = include_vectors

    def describe(self) -> dict:
        return {"kind": "mongodb", "where": self._where, "db": self.db_name, "prefix": self.prefix}

    def collection(self, table: str):
        return self.db[self.prefix + table]

    def _fail(self, what: str, e: Exception) -> MirrorError:
        return MirrorError(
            f"MongoDB mirror {self._where} (db {self.db_name}) failed to {what}: {type(e).__name__}: {e}. "
            "The LanceDB catalog has the change; rerun the step (writes are idempotent) or run "
            "MongoMirror.sync(catalog) once MongoDB is reachable, or unset WFM_MONGO_URI to run without it"
        )

    def _doc(self, key: str, row: dict[str, Any]) -> dict[str, Any]:
        doc = {k: _plain(v) for k, v in row.items() if self.include_vectors or k != "vector"}
        doc.pop("_id", None)
        return doc

    def upsert(self, table: str, key: str, rows: Sequence[dict[str, Any]], *, insert: bool = True) -> int:
        """$set each row's columns on the document with _id = row[key]; insert=False only updates."""
        from pymongo import UpdateOne

        ops = [UpdateOne({"_id": r[key]}, {"$set": self._doc(key, r)}, upsert=insert) for r in rows]
        return self._bulk(table, ops, f"upsert {len(ops)} {table} rows")

    def replace(self, table: str, key: str, rows: Sequence[dict[str, Any]]) -> int:
        """Whole documents (columns absent from a row are removed from its document)."""
        from pymongo import ReplaceOne

        ops = [ReplaceOne({"_id": r[key]}, self._doc(key, r), upsert=True) for r in rows]
        return self._bulk(table, ops, f"replace {len(ops)} {table} rows")

    def _bulk(self, table: str, ops: list, what: str) -> int:
        if not ops:
            return 0
        from pymongo.errors import PyMongoError

        done = 0
        try:
            for i in range(0, len(ops), _BATCH):
                res = self.collection(table).bulk_write(ops[i : i + _BATCH], ordered=False)
                done += res.upserted_count + res.matched_count
        except PyMongoError as e:
            raise self._fail(what, e) from e
        return done

    def delete(self, table: str, keys: Iterable[str]) -> int:
        from pymongo.errors import PyMongoError

        keys = list(keys)
        n = 0
        try:
            for i in range(0, len(keys), _BATCH):
                n += self.collection(table).delete_many({"_id": {"$in": keys[i : i + _BATCH]}}).deleted_count
        except PyMongoError as e:
            raise self._fail(f"delete {len(keys)} {table} rows", e) from e
        return n

    def find(self, table: str, query: dict | None = None) -> list[dict]:
        return list(self.collection(table).find(query or {}))

    def count(self, table: str, query: dict | None = None) -> int:
        return self.collection(table).count_documents(query or {})

    def sync(self, catalog) -> dict[str, int]:
        """Make the mirror equal to the catalog: replace every row, drop documents the catalog lacks."""
        from pymongo.errors import PyMongoError

        from .catalog import _KEYS, DATA_TABLES

        out = {}
        for table in DATA_TABLES:
            key = _KEYS[table]
            t = catalog._table(table)
            rows = [] if t is None else t.to_arrow().to_pylist()  # the stored form, as upserts send it
            self.replace(table, key, rows)
            keep = {r[key] for r in rows}
            try:
                stale = [d["_id"] for d in self.collection(table).find({}, {"_id": 1}) if d["_id"] not in keep]
            except PyMongoError as e:
                raise self._fail(f"list {table}", e) from e
            self.delete(table, stale)
            out[table] = len(rows)
            if stale:
                log.info("mirror %s: removed %d %s documents the catalog no longer has", self._where,
                         len(stale), table)
        return out

    def close(self) -> None:
        self.client.close()


__all__ = ["MirrorError", "MongoMirror"]
