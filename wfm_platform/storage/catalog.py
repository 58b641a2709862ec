"""The clip catalog: LanceDB tables for the platform's data model under one URI.

A local folder or an object-store URI ("s3://bucket/catalog", "gs://...", "az://..."). Tables (keys in
brackets; every row that derives from a video or clip carries `video_id` / `clip_id`, which is what
erasure deletes by):

  videos       [video_id]       one row per uploaded file, probed by content
  clips        [clip_id]        one row per clip (video, frame range) + scores, caption, `vector`
  frames       [frame_id]       frames of a clip that the pipeline used: thumbnail, caption frames
  metadata     [meta_id]        key/value metadata of any entity (entity_type, entity_id, key, value_json)
  annotations  [annotation_id]  labels on clips (kind, label, data_json, source)
  datasets     [dataset_id]     named, immutable dataset versions (name@version -> manifest)

Writes are merge-inserts on the key, so rerunning a partition updates rows in place instead of adding
copies. A row dict only touches the columns it names: `{"clip_id": c, "caption": "..."}` sets the
caption and leaves every other column as it was (a key given with value None sets that column to null).
Because nothing is read back and rewritten, two assets updating different columns of the same clips at
the same time (captions and embeddings) do not overwrite each other.

Vectors live in the `clips` table as a nullable fixed-size float32 column `vector`: clips exist before
they are embedded. Its size is fixed by the first vectors written.

Indexes maintain themselves after every write (no manual step): a vector index (IVF, cosine) once
INDEX_MIN_ROWS clips have vectors, rebuilt (new IVF lists) when the embedded rows grew by REBUILD_GROWTH
since the last build; a full-text index on captions as soon as there are captions; both folded up to date
with `optimize()` (which also compacts small fragments) when the rows they do not cover exceed
OPTIMIZE_GROWTH of those they do; B-tree indexes on every table's key and video_id / clip_id columns
(lookups, merges, erasure) from SCALAR_INDEX_MIN_ROWS rows on. What was built when is kept in the
`_index_state` table; `stats()` / `wfm catalog stats` show it with each index's live coverage.

When a MongoDB mirror is attached (argument `mirror`, or WFM_MONGO_URI in the environment), every upsert
and delete is repeated there after it succeeded in LanceDB (see storage/mirror.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

VIDEOS, CLIPS, FRAMES, METADATA, ANNOTATIONS, DATASETS = (
    "videos", "clips", "frames", "metadata", "annotations", "datasets"
)
INDEX_STATE = "_index_state"  # bookkeeping of index builds; not a data table
VECTOR = "vector"
CAPTION = "caption"
# Below this many embedded clips brute-force search is exact and cheap; above it an IVF index pays off.
INDEX_MIN_ROWS = 256
# Rebuild the IVF index (retrain its lists for the new size) when embedded rows grew by this share
# since the last build: lists trained on a quarter of the data fit the rest badly.
REBUILD_GROWTH = 1.0
# Fold new rows into the indexes (and compact files) when the rows an index does not cover exceed this
# share of those it covers: uncovered rows are searched by brute force, fine while they are few.
OPTIMIZE_GROWTH = 0.2
# ... but not for fewer rows than this: a brute-force pass over a few dozen rows costs nothing.
OPTIMIZE_MIN_ROWS = 64
# Key and video_id / clip_id columns get B-tree indexes from this many rows on (below, a scan is fast).
SCALAR_INDEX_MIN_ROWS = 10_000
# Many small appends leave many small files; compact once there are this many.
MAX_SMALL_FRAGMENTS = 32
_NPROBES = 20

_TS = pa.timestamp("us", tz="UTC")
VIDEO_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string()),
        pa.field("partition", pa.string()),
        pa.field("digest", pa.string()),
        pa.field("container", pa.string()),
        pa.field("codec", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("fps", pa.float64()),
        pa.field("num_frames", pa.int64()),
        pa.field("duration_s", pa.float64()),
        pa.field("rotation", pa.int32()),
        pa.field("has_audio", pa.bool_()),
        pa.field("size_bytes", pa.int64()),
        pa.field("status", pa.string()),  # "ok" | "rejected"
        pa.field("reason", pa.string()),
        pa.field("ingested_at", _TS),
        pa.field("updated_at", _TS),
    ]
)
CLIP_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string()),
        pa.field("partition", pa.string()),
        pa.field("start_frame", pa.int64()),
        pa.field("end_frame", pa.int64()),
        pa.field("fps", pa.float64()),
        pa.field("duration_s", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("uri", pa.string()),
        pa.field("status", pa.string()),
        pa.field("reasons", pa.list_(pa.string())),
        pa.field("scores", pa.string()),  # JSON object
        pa.field("caption", pa.string()),
        pa.field("captioner", pa.string()),
        pa.field("embedder", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("updated_at", _TS),
    ]
)  # + VECTOR: fixed_size_list<float32>[dim], added with the first vectors
FRAME_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string(), nullable=False),  # "{clip_id}:{kind}:{frame_index}"
        pa.field("clip_id", pa.string()),
        pa.field("video_id", pa.string()),
        pa.field("partition", pa.string()),
        pa.field("kind", pa.string()),  # why the frame was used: "thumbnail", "caption", ...
        pa.field("frame_index", pa.int64()),  # index in the clip
        pa.field("source_frame", pa.int64()),  # index in the source video
        pa.field("timestamp_s", pa.float64()),  # time in the clip
        pa.field("uri", pa.string()),  # stored image of the frame, when there is one
        pa.field("data_json", pa.string()),  # per-frame measurements, JSON object
        pa.field("updated_at", _TS),
    ]
)
METADATA_SCHEMA = pa.schema(
    [
        pa.field("meta_id", pa.string(), nullable=False),  # "{entity_type}:{entity_id}:{key}"
        pa.field("entity_type", pa.string()),  # "video" | "clip" | "dataset" | ...
        pa.field("entity_id", pa.string()),
        pa.field("key", pa.string()),
        pa.field("value_json", pa.string()),
        pa.field("video_id", pa.string()),
        pa.field("clip_id", pa.string()),
        pa.field("updated_at", _TS),
    ]
)
ANNOTATION_SCHEMA = pa.schema(
    [
        pa.field("annotation_id", pa.string(), nullable=False),
        pa.field("clip_id", pa.string()),
        pa.field("video_id", pa.string()),
        pa.field("kind", pa.string()),  # "label", "bbox", "caption", ...
        pa.field("label", pa.string()),
        pa.field("data_json", pa.string()),
        pa.field("source", pa.string()),  # who made it: a person, a model, a pipeline stage
        pa.field("created_at", _TS),
        pa.field("updated_at", _TS),
    ]
)
DATASET_SCHEMA = pa.schema(
    [
        pa.field("dataset_id", pa.string(), nullable=False),  # "{name}@{version}"
        pa.field("name", pa.string()),
        pa.field("version", pa.string()),  # semantic version
        pa.field("created_at", _TS),
        pa.field("manifest_uri", pa.string()),
        pa.field("num_clips", pa.int64()),
        pa.field("num_shards", pa.int64()),
        pa.field("config_digest", pa.string()),
        pa.field("code_digest", pa.string()),
        pa.field("parent", pa.string()),  # dataset_id this version was derived from, if any
        pa.field("updated_at", _TS),
    ]
)
INDEX_STATE_SCHEMA = pa.schema(
    [
        pa.field("index_key", pa.string(), nullable=False),  # "{table}.{column}"
        pa.field("table_name", pa.string()),
        pa.field("column", pa.string()),
        pa.field("kind", pa.string()),  # "vector" | "fts"
        pa.field("rows_at_build", pa.int64()),
        pa.field("built_at", _TS),
        pa.field("builds", pa.int64()),
        pa.field("rows_at_optimize", pa.int64()),
        pa.field("optimized_at", _TS),
        pa.field("optimizations", pa.int64()),
        pa.field("updated_at", _TS),
    ]
)
_KEYS = {
    VIDEOS: "video_id",
    CLIPS: "clip_id",
    FRAMES: "frame_id",
    METADATA: "meta_id",
    ANNOTATIONS: "annotation_id",
    DATASETS: "dataset_id",
    INDEX_STATE: "index_key",
}
_SCHEMAS = {
    VIDEOS: VIDEO_SCHEMA,
    CLIPS: CLIP_SCHEMA,
    FRAMES: FRAME_SCHEMA,
    METADATA: METADATA_SCHEMA,
    ANNOTATIONS: ANNOTATION_SCHEMA,
    DATASETS: DATASET_SCHEMA,
    INDEX_STATE: INDEX_STATE_SCHEMA,
}
DATA_TABLES = (VIDEOS, CLIPS, FRAMES, METADATA, ANNOTATIONS, DATASETS)
# JSON text columns: a row may give a dict/list (or the short name on the left) instead of the text.
_JSON_COLS = {
    CLIPS: {"scores": "scores"},
    FRAMES: {"data": "data_json", "data_json": "data_json"},
    METADATA: {"value": "value_json", "value_json": "value_json"},
    ANNOTATIONS: {"data": "data_json", "data_json": "data_json"},
}
# Columns that keep the time of the first insert: later upserts do not move them.
_FIRST_SEEN = {VIDEOS: "ingested_at", ANNOTATIONS: "created_at", DATASETS: "created_at"}
_INT_COLS = ("width", "height", "rotation", "start_frame", "end_frame", "num_frames", "size_bytes",
             "frame_index", "source_frame", "num_clips", "num_shards", "rows_at_build", "builds",
             "rows_at_optimize", "optimizations")
_FLOAT_COLS = ("fps", "duration_s", "timestamp_s")
_TIME_COLS = ("ingested_at", "created_at", "built_at", "optimized_at")
_FROM_ENV = object()


def sql_str(value: str) -> str:
    """A SQL string literal for LanceDB filters."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_in(column: str, values: Iterable[str]) -> str:
    vals = list(values)
    if not vals:
        return "FALSE"
    return f"{column} IN ({', '.join(sql_str(v) for v in vals)})"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def frame_id(clip_id: str, kind: str, frame_index: int) -> str:
    return f"{clip_id}:{kind}:{int(frame_index)}"


def meta_id(entity_type: str, entity_id: str, key: str) -> str:
    return f"{entity_type}:{entity_id}:{key}"


def dataset_id(name: str, version: str) -> str:
    return f"{name}@{version}"


def annotation_id(row: dict[str, Any]) -> str:
    """Content id of an annotation (clip, kind, label, data, source): re-importing it does not duplicate it."""
    data = row.get("data_json", row.get("data"))
    if data is not None and not isinstance(data, str):
        data = json.dumps(data, sort_keys=True, default=str)
    text = json.dumps([row.get("clip_id"), row.get("video_id"), row.get("kind"), row.get("label"), data,
                       row.get("source")])
    return "ann-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _mirror_from_env():
    uri = os.environ.get("WFM_MONGO_URI")
    if not uri:
        return None
    from .mirror import MongoMirror

    return MongoMirror(uri, os.environ.get("WFM_MONGO_DB", "wfm"))


class Catalog:
    """The platform's catalog tables in LanceDB at `uri` (a folder, file:// or an object-store URI).

    mirror: a storage.mirror.MongoMirror (or anything with its upsert/delete methods) that every write
    is repeated to; by default one from WFM_MONGO_URI / WFM_MONGO_DB when set; None for no mirror.
    """

    def __init__(self, uri: str, *, storage_options: dict[str, str] | None = None, mirror: Any = _FROM_ENV):
        self.uri = str(uri)
        local = self.uri.removeprefix("file://")
        # Consistency interval 0: every read sees the writes other processes (other Dagster steps) made.
        self._db = lancedb.connect(
            local, read_consistency_interval=timedelta(0), storage_options=storage_options
        )
        self.mirror = _mirror_from_env() if mirror is _FROM_ENV else mirror

    # -- table plumbing ----------------------------------------------------------------------------------
    def _table(self, name: str, *, any_table: bool = False):
        if name not in _KEYS and not any_table:
            raise ValueError(f"unknown catalog table {name!r}; tables: {', '.join(DATA_TABLES)}")
        try:
            return self._db.open_table(name)
        except ValueError:  # LanceDB: "Table '...' was not found"
            return None

    def _create(self, name: str):
        return self._db.create_table(name, schema=_SCHEMAS[name], exist_ok=True)

    @staticmethod
    def _vector_dim(table) -> int | None:
        if VECTOR not in table.schema.names:
            return None
        return table.schema.field(VECTOR).type.list_size

    def _ensure_vector_column(self, table, dim: int) -> None:
        have = self._vector_dim(table)
        if have is None:
            try:
                table.add_columns(pa.field(VECTOR, _vector_type(dim)))
                log.info("catalog %s: added %d-d vector column", self.uri, dim)
            except Exception:  # Lance does not export a type for a lost add-column race
                # Another process may have added the column meanwhile: fine if so, else a real error.
                table.checkout_latest()
                if self._vector_dim(table) is None:
                    raise
            have = self._vector_dim(table)
        if have != dim:
            raise ValueError(
                f"catalog {self.uri} holds {have}-d clip vectors, got {dim}-d: vectors of different "
                "embedders are not comparable; use a new catalog (or clear the vector column) to switch"
            )

    def _derive_key(self, name: str, row: dict[str, Any]) -> dict[str, Any]:
        """Tables whose key is made of other columns get it filled in when the row does not give it."""
        key = _KEYS[name]
        if row.get(key):
            return row
        out = dict(row)
        if name == FRAMES and out.get("clip_id") and out.get("kind") and out.get("frame_index") is not None:
            out[key] = frame_id(out["clip_id"], out["kind"], out["frame_index"])
        elif name == METADATA and all(out.get(c) for c in ("entity_type", "entity_id", "key")):
            out[key] = meta_id(out["entity_type"], out["entity_id"], out["key"])
        elif name == DATASETS and out.get("name") and out.get("version"):
            out[key] = dataset_id(out["name"], out["version"])
        elif name == ANNOTATIONS and (out.get("clip_id") or out.get("video_id")):
            out[key] = annotation_id(out)
        return out

    def _coerce(self, name: str, row: dict[str, Any], dim: int | None) -> dict[str, Any]:
        schema = _SCHEMAS[name]
        key = _KEYS[name]
        row = self._derive_key(name, row)
        if not row.get(key):
            raise ValueError(f"{name} row without {key}: {sorted(row)}")
        aliases = _JSON_COLS.get(name, {})
        allowed = set(schema.names) | set(aliases) | ({VECTOR} if name == CLIPS else set())
        unknown = set(row) - allowed
        if unknown:
            raise ValueError(f"unknown {name} columns {sorted(unknown)}; known: {', '.join(sorted(allowed))}")
        out = dict(row)
        for alias, col in aliases.items():
            if alias in out:
                value = out.pop(alias)
                # JSON text stays as given under the column's own name; any object (a str too, under
                # the short name: it is a JSON string value) is encoded.
                if value is not None and (alias != col or not isinstance(value, str)):
                    value = json.dumps(value, sort_keys=True, default=_json_default)
                out[col] = value
        if name == CLIPS:
            if "reasons" in out:
                out["reasons"] = _as_reasons(out["reasons"])
            if VECTOR in out and out[VECTOR] is not None:
                out[VECTOR] = _as_vector(out[VECTOR], dim).tolist()
        for col in _INT_COLS:
            if out.get(col) is not None:
                out[col] = int(out[col])
        for col in _FLOAT_COLS:
            if out.get(col) is not None:
                out[col] = float(out[col])
        for col in _TIME_COLS:
            if isinstance(out.get(col), str):  # ISO 8601 text, as manifests carry it
                out[col] = _as_utc(datetime.fromisoformat(out[col]))
            elif isinstance(out.get(col), datetime):
                out[col] = _as_utc(out[col])
        out["updated_at"] = _now()
        return out

    def _merge(self, name: str, rows: Sequence[dict[str, Any]], *, insert: bool = True) -> int:
        """Merge rows on the key, touching only the columns each row names. Returns rows written."""
        if not rows:
            return 0
        key = _KEYS[name]
        table = self._table(name) or self._create(name)
        dims = {len(r[VECTOR]) for r in rows if r.get(VECTOR) is not None}
        if len(dims) > 1:
            raise ValueError(f"vectors of different sizes in one write: {sorted(dims)}")
        if dims:
            self._ensure_vector_column(table, dims.pop())
        dim = self._vector_dim(table)
        coerced = [self._coerce(name, r, dim) for r in rows]
        # The last row wins when a key repeats in one call (merge_insert refuses duplicate source keys).
        by_key = {r[key]: r for r in coerced}
        first_seen = _FIRST_SEEN.get(name)
        if first_seen:
            # e.g. ingested_at is the first registration: a rerun of the partition does not move it.
            existing = self._existing_keys(name, by_key)
            for k, r in by_key.items():
                if k in existing:
                    r.pop(first_seen, None)
                elif r.get(first_seen) is None:
                    r[first_seen] = r["updated_at"]
        schema = table.schema
        # One merge per column set: a row's missing columns must stay untouched, not become null.
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for r in by_key.values():
            cols = tuple(c for c in schema.names if c in r)
            groups.setdefault(cols, []).append(r)
        written = 0
        for cols, group in groups.items():
            data = pa.Table.from_pylist(group, schema=pa.schema([schema.field(c) for c in cols]))
            builder = table.merge_insert(key).when_matched_update_all()
            if insert:
                builder = builder.when_not_matched_insert_all()
            res = builder.execute(data)
            written += res.num_updated_rows + res.num_inserted_rows
        if self.mirror is not None and name != INDEX_STATE:
            # After LanceDB accepted the write: the catalog is the source of truth, the mirror a copy.
            self.mirror.upsert(name, key, list(by_key.values()), insert=insert)
        return written

    def _existing_keys(self, name: str, keys: Iterable[str]) -> set[str]:
        table = self._table(name)
        keys = list(keys)
        if table is None or not keys:
            return set()
        col = _KEYS[name]
        found: set[str] = set()
        for i in range(0, len(keys), 1000):  # keep the SQL filter a sane size
            part = keys[i : i + 1000]
            res = table.search().where(sql_in(col, part)).select([col]).limit(len(part)).to_arrow()
            found.update(res[col].to_pylist())
        return found

    def _rows(self, name: str, where: str | None, limit: int | None = None) -> list[dict[str, Any]]:
        table = self._table(name)
        if table is None:
            return []
        query = table.search()
        if where:
            query = query.where(where)
        data = query.limit(None).to_arrow().sort_by(_KEYS[name])
        if limit is not None:
            data = data.slice(0, limit)
        rows = [_decode_row(r) for r in data.to_pylist()]
        if name == CLIPS:
            for r in rows:
                r.setdefault(VECTOR, None)  # same keys before the first embedding as after
        return rows

    # -- public API: videos and clips --------------------------------------------------------------------
    def upsert_videos(self, rows: list[dict]) -> None:
        """Insert or update videos by video_id (columns: VIDEO_SCHEMA).

        ingested_at (datetime or ISO text) is kept from the first insert; later upserts do not change it.
        """
        n = self._merge(VIDEOS, rows)
        self._maintain(VIDEOS)
        log.debug("catalog: upserted %d videos", n)

    def upsert_clips(self, rows: list[dict]) -> None:
        """Insert or update clips by clip_id (columns: CLIP_SCHEMA + "vector").

        reasons: list[str] or a JSON list; scores: dict or JSON object string; vector: (dim,) floats.
        """
        n = self._merge(CLIPS, rows)
        self._maintain(CLIPS)
        log.debug("catalog: upserted %d clips", n)

    def set_embeddings(self, clip_ids: Sequence[str], vectors: np.ndarray, embedder: str) -> None:
        """Store one vector per existing clip (and which embedder made it); other columns stay as they are."""
        vectors = np.asarray(vectors, dtype=np.float32)
        ids = list(clip_ids)
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise ValueError(f"need one vector per clip: {len(ids)} ids, vectors of shape {vectors.shape}")
        missing = set(ids) - self._existing_keys(CLIPS, ids)
        if missing:
            raise KeyError(f"clips not in the catalog (upsert_clips first): {sorted(missing)[:5]}")
        rows = [{"clip_id": c, VECTOR: v, "embedder": embedder} for c, v in zip(ids, vectors)]
        self._merge(CLIPS, rows, insert=False)
        self._maintain(CLIPS)

    def search(self, vector: np.ndarray, k: int = 10, *, where: str | None = None) -> list[dict]:
        """The k clips nearest to `vector` by cosine, best first, each with "similarity" (1 = same direction).

        `where` is a SQL filter over clip columns, applied before the search (e.g. "duplicate_of IS NULL").
        Clips without a vector are never returned.
        """
        table = self._table(CLIPS)
        dim = self._vector_dim(table) if table is not None else None
        if dim is None:
            return []
        query = _as_vector(vector, dim)
        q = table.search(query, vector_column_name=VECTOR).distance_type("cosine").limit(k)
        if self._index_on(table, VECTOR) is not None:
            q = q.nprobes(_NPROBES)
        if where:
            q = q.where(where, prefilter=True)
        out = []
        for r in q.to_list():
            r["similarity"] = 1.0 - float(r.pop("_distance"))
            out.append(_decode_row(r))
        return out

    def neighbors(self, clip_id: str, k: int = 10, *, where: str | None = None) -> list[dict]:
        """The k clips nearest to an embedded clip (the clip itself left out), best first."""
        clip = self.get_clip(clip_id)
        if clip is None:
            raise KeyError(f"clip {clip_id} not in the catalog")
        if clip.get(VECTOR) is None:
            raise ValueError(f"clip {clip_id} has no embedding yet: materialize clip_embeddings for its partition")
        other = f"clip_id != {sql_str(clip_id)}"
        return self.search(clip[VECTOR], k=k, where=f"({where}) AND {other}" if where else other)

    def search_text(self, text: str, k: int = 10, *, where: str | None = None) -> list[dict]:
        """Clips whose caption matches `text` (full-text, BM25 ranked), best first, each with "score"."""
        if not text or not text.strip():
            raise ValueError("empty caption query")
        table = self._table(CLIPS)
        if table is None or table.count_rows(f"{CAPTION} IS NOT NULL") == 0:
            return []
        if self._index_on(table, CAPTION) is None:  # a catalog written before indexes maintained themselves
            self._maintain(CLIPS)
            table = self._table(CLIPS)
        q = table.search(text, query_type="fts", fts_columns=CAPTION).limit(k)
        if where:
            q = q.where(where, prefilter=True)
        out = []
        for r in q.to_list():
            r["score"] = float(r.pop("_score"))
            out.append(_decode_row(r))
        return out

    def find_clips(
        self,
        *,
        partition: str | None = None,
        min_width: int | None = None,
        min_height: int | None = None,
        caption: str | None = None,
        status: str | None = None,
        where: str | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Clips by partition, least resolution, status and caption words (full-text), with a SQL filter.

        With `caption`, rows come best match first; without, ordered by clip_id.
        """
        parts = []
        if min_width is not None:
            parts.append(f"width >= {int(min_width)}")
        if min_height is not None:
            parts.append(f"height >= {int(min_height)}")
        if status is not None:
            parts.append(f"status = {sql_str(status)}")
        if where:
            parts.append(f"({where})")
        filt = _and(partition, " AND ".join(parts) or None)
        if caption:
            return self.search_text(caption, k=limit or 10_000, where=filt)
        return self._rows(CLIPS, filt, limit)

    def mark_duplicate(self, clip_id: str, duplicate_of: str | None) -> None:
        """Record that clip_id duplicates (is superseded by) duplicate_of; None clears it."""
        if not self._existing_keys(CLIPS, [clip_id]):
            raise KeyError(f"clip {clip_id} not in the catalog")
        self._merge(CLIPS, [{"clip_id": clip_id, "duplicate_of": duplicate_of}], insert=False)
        self._maintain(CLIPS)

    def set_duplicates(self, mapping: dict[str, str | None]) -> None:
        """mark_duplicate for many clips in one write; clips not in the catalog are skipped."""
        present = self._existing_keys(CLIPS, mapping)
        self._merge(CLIPS, [{"clip_id": c, "duplicate_of": d} for c, d in mapping.items() if c in present],
                    insert=False)
        self._maintain(CLIPS)

    def clips(self, partition: str | None = None, where: str | None = None) -> list[dict]:
        """Clips (optionally of one partition and/or matching a SQL filter), ordered by clip_id."""
        return self._rows(CLIPS, _and(partition, where))

    def videos(self, partition: str | None = None, where: str | None = None) -> list[dict]:
        return self._rows(VIDEOS, _and(partition, where))

    def get_clip(self, clip_id: str) -> dict | None:
        rows = self._rows(CLIPS, f"clip_id = {sql_str(clip_id)}")
        return rows[0] if rows else None

    def get_video(self, video_id: str) -> dict | None:
        rows = self._rows(VIDEOS, f"video_id = {sql_str(video_id)}")
        return rows[0] if rows else None

    def count(self, table: str, where: str | None = None) -> int:
        t = self._table(table)
        return 0 if t is None else t.count_rows(where) if where else t.count_rows()

    # -- public API: frames, key/value metadata, annotations ---------------------------------------------
    def upsert_frames(self, rows: list[dict]) -> None:
        """Insert or update frames (FRAME_SCHEMA; frame_id derived from clip_id, kind, frame_index).

        data / data_json: per-frame measurements (dict or JSON text).
        """
        self._merge(FRAMES, rows)
        self._maintain(FRAMES)

    def frames(self, clip_id: str | None = None, where: str | None = None) -> list[dict]:
        parts = [f"clip_id = {sql_str(clip_id)}"] if clip_id is not None else []
        if where:
            parts.append(f"({where})")
        rows = self._rows(FRAMES, " AND ".join(parts) or None)
        return sorted(rows, key=lambda r: (r["clip_id"] or "", r["kind"] or "", r["frame_index"] or 0))

    def upsert_metadata(self, rows: list[dict]) -> None:
        """Insert or update key/value rows (METADATA_SCHEMA; value: anything JSON, or value_json text).

        meta_id is derived from (entity_type, entity_id, key): setting a key again replaces its value.
        Give video_id / clip_id on rows about a video or clip (erasure deletes by them).
        """
        self._merge(METADATA, rows)
        self._maintain(METADATA)

    def set_metadata(self, entity_type: str, entity_id: str, values: dict[str, Any], *,
                     video_id: str | None = None, clip_id: str | None = None) -> None:
        """Key/value metadata of one entity, e.g. set_metadata("clip", cid, {"faces_blurred": 2}, clip_id=cid)."""
        if entity_type == "clip" and clip_id is None:
            clip_id = entity_id
        if entity_type == "video" and video_id is None:
            video_id = entity_id
        self.upsert_metadata([
            {"entity_type": entity_type, "entity_id": entity_id, "key": k, "value": v,
             "video_id": video_id, "clip_id": clip_id}
            for k, v in values.items()
        ])

    def metadata(self, entity_id: str | None = None, *, entity_type: str | None = None,
                 where: str | None = None) -> list[dict]:
        """Key/value rows (value_json decoded into "value"), ordered by meta_id."""
        parts = []
        if entity_id is not None:
            parts.append(f"entity_id = {sql_str(entity_id)}")
        if entity_type is not None:
            parts.append(f"entity_type = {sql_str(entity_type)}")
        if where:
            parts.append(f"({where})")
        return self._rows(METADATA, " AND ".join(parts) or None)

    def upsert_annotations(self, rows: list[dict]) -> list[str]:
        """Insert or update annotations (ANNOTATION_SCHEMA; data: anything JSON). Returns their ids.

        Without annotation_id, the id is a hash of the content, so importing the same labels twice
        does not duplicate them. created_at is kept from the first insert.
        """
        rows = [self._derive_key(ANNOTATIONS, r) for r in rows]
        self._merge(ANNOTATIONS, rows)
        self._maintain(ANNOTATIONS)
        return [r.get("annotation_id") for r in rows]

    def annotations(self, clip_id: str | None = None, where: str | None = None) -> list[dict]:
        parts = [f"clip_id = {sql_str(clip_id)}"] if clip_id is not None else []
        if where:
            parts.append(f"({where})")
        return self._rows(ANNOTATIONS, " AND ".join(parts) or None)

    # -- public API: datasets ----------------------------------------------------------------------------
    def upsert_dataset(self, row: dict) -> None:
        """Register a dataset version (DATASET_SCHEMA; dataset_id derived from name and version).

        Versions are immutable: writing the same name@version again with the same content is a no-op,
        with different content it is refused (make a new version instead).
        """
        row = self._derive_key(DATASETS, row)
        if not row.get("name") or not row.get("version"):
            raise ValueError(f"dataset row needs name and version: {sorted(row)}")
        did = row.get("dataset_id")
        if did != dataset_id(row["name"], row["version"]):
            raise ValueError(f"dataset_id {did!r} does not match {dataset_id(row['name'], row['version'])!r}")
        old = self._rows(DATASETS, f"dataset_id = {sql_str(did)}")
        if old:
            new = self._coerce(DATASETS, row, None)
            changed = sorted(c for c in new if c not in ("updated_at", "created_at") and new[c] != old[0].get(c))
            if changed:
                raise ValueError(
                    f"dataset {did} exists and versions are immutable (different {', '.join(changed)}): "
                    "create a new version"
                )
            return
        self._merge(DATASETS, [row])
        self._maintain(DATASETS)

    def datasets(self, name: str | None = None) -> list[dict]:
        """Dataset versions (of one name, or all), oldest first."""
        rows = self._rows(DATASETS, f"name = {sql_str(name)}" if name is not None else None)
        return sorted(rows, key=lambda r: (r["name"], r["created_at"], r["version"]))

    def get_dataset(self, name: str, version: str) -> dict | None:
        rows = self._rows(DATASETS, f"dataset_id = {sql_str(dataset_id(name, version))}")
        return rows[0] if rows else None

    # -- public API: lineage, deletion, stats -----------------------------------------------------------
    def describe_clip(self, clip_id: str) -> dict | None:
        """Where a clip came from: the clip, its source video, its frames, metadata and annotations."""
        clip = self.get_clip(clip_id)
        if clip is None:
            return None
        vid = clip.get("video_id")
        meta = self.metadata(where=f"clip_id = {sql_str(clip_id)} OR entity_id = {sql_str(clip_id)}")
        return {
            "clip": clip,
            "video": self.get_video(vid) if vid else None,
            "video_metadata": self.metadata(vid, entity_type="video") if vid else [],
            "frames": self.frames(clip_id),
            "metadata": meta,
            "annotations": self.annotations(clip_id),
        }

    def tables(self) -> list[str]:
        """Data tables that exist in this catalog (other LanceDB tables in it too, e.g. violations)."""
        names: list[str] = []
        token = None
        while True:
            res = self._db.list_tables(page_token=token)
            names.extend(res.tables)
            token = res.page_token
            if not token:
                break
        return sorted(n for n in names if n != INDEX_STATE)

    def columns(self, table: str) -> list[str]:
        t = self._table(table, any_table=True)
        return [] if t is None else list(t.schema.names)

    def rows(self, table: str, where: str | None = None, limit: int | None = None) -> list[dict]:
        """Rows of any catalog table matching a SQL filter."""
        if table in _KEYS:
            return self._rows(table, where, limit)
        t = self._table(table, any_table=True)
        if t is None:
            return []
        q = t.search()
        if where:
            q = q.where(where)
        return [_decode_row(r) for r in q.limit(limit).to_list()]

    def delete_where(self, table: str, where: str, *, purge: bool = False) -> int:
        """Delete the rows of `table` matching the SQL filter `where`; returns how many. The mirror follows.

        Lance keeps old table versions (time travel), so deleted rows stay readable there until the
        versions are cleaned up: purge=True removes every older version right away (what erasure needs;
        readers holding an old version at that moment fail and must reopen).
        """
        if not where or not where.strip():
            raise ValueError("delete_where needs a filter; to empty a table, say so with where='TRUE'")
        t = self._table(table, any_table=True)
        if t is None:
            return 0
        key = _KEYS.get(table)
        keys: list[str] = []
        if key is not None:
            keys = t.search().where(where).select([key]).limit(None).to_arrow()[key].to_pylist()
            n = len(keys)
        else:
            n = t.count_rows(where)
        if n:
            t.delete(where)
            log.info("catalog %s: deleted %d rows of %s where %s", self.uri, n, table, where)
            if self.mirror is not None and key is not None:
                self.mirror.delete(table, keys)
        if purge:
            self.purge_history(table)
        return n

    def purge_history(self, table: str | None = None) -> None:
        """Rebuild the indexes, compact, and drop every older Lance version of a table (all when None).

        After deletes for erasure: index files built before the delete still encode the deleted rows
        (captions' terms, vectors), so they are rebuilt from what is left; then the old data and index
        files go with the old versions. Costs an index rebuild: after erasing many videos, delete each
        with purge=False and call this once.
        """
        for name in [table] if table else self.tables():
            t = self._table(name, any_table=True)
            if t is not None:
                if name in _KEYS:
                    self._rebuild_indexes(name, t)
                with warnings.catch_warnings():  # the risk it warns of is the one documented above
                    warnings.filterwarnings("ignore", message=".*removes every version except the latest")
                    t.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)

    def _rebuild_indexes(self, name: str, table) -> None:
        from lancedb.index import FTS, IvfFlat

        for idx in table.list_indices():
            col = idx.columns[0]
            n = table.count_rows(f"{col} IS NOT NULL")
            if col == VECTOR and n >= INDEX_MIN_ROWS:
                table.create_index(VECTOR, config=IvfFlat(distance_type="cosine",
                                                          num_partitions=max(2, int(math.sqrt(n)))), replace=True)
            elif col == CAPTION and n:
                table.create_index(CAPTION, config=FTS(), replace=True)
            elif _index_kind(col) == "btree" and n:
                table.create_scalar_index(col, index_type="BTREE", replace=True)
            else:  # too few rows left for this index: brute force until it is built again
                table.drop_index(idx.name)
                continue
            self._built(name, col, _index_kind(col), n)

    def index_state(self) -> list[dict]:
        """One row per index: when it was built / optimized and at how many rows, with its live coverage."""
        out = []
        state = {r["index_key"]: r for r in self._rows(INDEX_STATE, None)}
        for name in DATA_TABLES:
            t = self._table(name)
            if t is None:
                continue
            for idx in t.list_indices():
                stats = t.index_stats(idx.name)
                col = idx.columns[0]
                row = dict(state.get(f"{name}.{col}", {}))
                row.update(
                    table_name=name,
                    column=col,
                    name=idx.name,
                    index_type=str(idx.index_type),
                    num_indexed_rows=stats.num_indexed_rows if stats else None,
                    num_unindexed_rows=stats.num_unindexed_rows if stats else None,
                )
                out.append(row)
        return out

    def stats(self) -> dict:
        """Row counts per table, clips with vectors / captions, and the index state (for `wfm catalog stats`)."""
        counts = {name: self.count(name) for name in DATA_TABLES}
        clips = self._table(CLIPS)
        embedded = clips.count_rows(f"{VECTOR} IS NOT NULL") if clips is not None and VECTOR in clips.schema.names else 0
        captioned = clips.count_rows(f"{CAPTION} IS NOT NULL") if clips is not None else 0
        return {
            "uri": self.uri,
            "tables": counts,
            "clips_embedded": embedded,
            "clips_captioned": captioned,
            "vector_dim": self._vector_dim(clips) if clips is not None else None,
            "indexes": self.index_state(),
            "mirror": getattr(self.mirror, "describe", lambda: None)() if self.mirror is not None else None,
        }

    # -- index maintenance -------------------------------------------------------------------------------
    @staticmethod
    def _index_on(table, column: str):
        for idx in table.list_indices():
            if column in idx.columns:
                return idx
        return None

    def _state(self, key: str) -> dict:
        rows = self._rows(INDEX_STATE, f"index_key = {sql_str(key)}")
        return rows[0] if rows else {}

    def _record(self, table: str, column: str, kind: str, **values) -> None:
        self._merge(INDEX_STATE, [{"index_key": f"{table}.{column}", "table_name": table, "column": column,
                                   "kind": kind, **values}])

    def _maintain(self, name: str) -> None:
        """Create, rebuild or fold in indexes and compact files as the table grows (see module doc)."""
        table = self._table(name)
        if table is None:
            return
        try:
            if name == CLIPS:
                self._maintain_vector(table)
                self._maintain_fts(table)
            self._maintain_scalar(name, table)
            reasons = []
            for idx in table.list_indices():
                stats = table.index_stats(idx.name)
                # Rows an index does not cover yet are searched by brute force; fold them in once they pile up.
                if stats is not None and _behind(stats):
                    reasons.append(f"index on {idx.columns[0]} misses {stats.num_unindexed_rows} rows")
            small = table.stats()["fragment_stats"]["num_small_fragments"]
            if small >= MAX_SMALL_FRAGMENTS:
                reasons.append(f"{small} small files")
            if reasons:
                log.info("catalog %s: optimizing %s (%s)", self.uri, name, "; ".join(reasons))
                table.optimize()
                n = table.count_rows()
                for idx in table.list_indices():
                    col = idx.columns[0]
                    st = self._state(f"{name}.{col}")
                    self._record(name, col, st.get("kind") or _index_kind(col), rows_at_optimize=n,
                                 optimized_at=_now(), optimizations=int(st.get("optimizations") or 0) + 1)
        except Exception as e:  # the write itself succeeded; the next write tries again
            log.warning("catalog %s: index maintenance of %s failed (%s: %s); retried on the next write",
                        self.uri, name, type(e).__name__, e)

    def _built(self, name: str, column: str, kind: str, n: int) -> None:
        st = self._state(f"{name}.{column}")
        self._record(name, column, kind, rows_at_build=n, built_at=_now(), builds=int(st.get("builds") or 0) + 1)

    def _maintain_vector(self, table) -> None:
        if self._vector_dim(table) is None:
            return
        n = table.count_rows(f"{VECTOR} IS NOT NULL")
        if n < INDEX_MIN_ROWS:
            return
        idx = self._index_on(table, VECTOR)
        built = int(self._state(f"{CLIPS}.{VECTOR}").get("rows_at_build") or 0)
        if idx is None or (built and n >= built * (1 + REBUILD_GROWTH)):
            parts = max(2, int(math.sqrt(n)))
            log.info("catalog %s: %s IVF_FLAT cosine index over %d vectors (%d lists)", self.uri,
                     "building" if idx is None else "rebuilding", n, parts)
            from lancedb.index import IvfFlat

            table.create_index(VECTOR, config=IvfFlat(distance_type="cosine", num_partitions=parts),
                               replace=True)
            self._built(CLIPS, VECTOR, "vector", n)

    def _maintain_fts(self, table) -> None:
        if self._index_on(table, CAPTION) is not None:
            return
        n = table.count_rows(f"{CAPTION} IS NOT NULL")
        if n:
            from lancedb.index import FTS

            log.info("catalog %s: building full-text index on captions (%d rows)", self.uri, n)
            table.create_index(CAPTION, config=FTS(), replace=True)
            self._built(CLIPS, CAPTION, "fts", n)

    def _maintain_scalar(self, name: str, table) -> None:
        """B-tree indexes on the key and on video_id / clip_id (lookups, merges, erasure) once tables are big."""
        if name == INDEX_STATE:
            return
        cols = [c for c in dict.fromkeys([_KEYS[name], "video_id", "clip_id"]) if c in table.schema.names]
        todo = [c for c in cols if self._index_on(table, c) is None]
        if not todo:
            return
        n = table.count_rows()
        if n < SCALAR_INDEX_MIN_ROWS:
            return
        for col in todo:
            log.info("catalog %s: building B-tree index on %s.%s (%d rows)", self.uri, name, col, n)
            table.create_scalar_index(col, index_type="BTREE", replace=True)
            self._built(name, col, "btree", n)


def _index_kind(column: str) -> str:
    return {VECTOR: "vector", CAPTION: "fts"}.get(column, "btree")


def _behind(stats) -> bool:
    """Whether an index misses enough rows (new or rewritten since it was built) to fold them in."""
    missing = stats.num_unindexed_rows
    return missing >= OPTIMIZE_MIN_ROWS and missing > OPTIMIZE_GROWTH * stats.num_indexed_rows


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, datetime):
        return o.isoformat()
    return str(o)


def _and(partition: str | None, where: str | None) -> str | None:
    parts = []
    if partition is not None:
        parts.append(f"partition = {sql_str(partition)}")
    if where:
        parts.append(f"({where})")
    return " AND ".join(parts) or None


def _as_vector(v: Any, dim: int | None) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float32).reshape(-1)
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"vector has {arr.shape[0]} values, the catalog's vectors have {dim}")
    if not np.isfinite(arr).all():
        raise ValueError("vector has NaN or infinite values")
    return arr


def _as_reasons(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return [str(x) for x in json.loads(text)]
        return [text] if text else []
    return [str(x) for x in value]


def _decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """Stored form -> Python: JSON columns -> objects ("scores", "data", "value"), vector -> float32 array."""
    if isinstance(row.get("scores"), str):
        try:
            row["scores"] = json.loads(row["scores"])
        except json.JSONDecodeError:
            pass  # keep what was stored; a bad value should not make the catalog unreadable
    for col, name in (("data_json", "data"), ("value_json", "value")):
        if col in row:
            try:
                row[name] = json.loads(row[col]) if row[col] is not None else None
            except json.JSONDecodeError:
                row[name] = row[col]
    if row.get(VECTOR) is not None:
        row[VECTOR] = np.asarray(row[VECTOR], dtype=np.float32)
    return row
