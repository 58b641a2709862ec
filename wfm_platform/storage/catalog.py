"""The clip catalog: LanceDB tables `videos` and `clips` (with embedding vectors) under one URI.

A local folder or an object-store URI ("s3://bucket/catalog", "gs://...", "az://..."); Lance table
versions give dataset versions for free.

Writes are merge-inserts on the key (`video_id`, `clip_id`), so rerunning a partition updates rows in
place instead of adding copies. A row dict only touches the columns it names: `{"clip_id": c,
"caption": "..."}` sets the caption and leaves every other column as it was (a key given with value None
sets that column to null). Because nothing is read back and rewritten, two assets updating different
columns of the same clips at the same time (captions and embeddings) do not overwrite each other.

Vectors live in the `clips` table as a nullable fixed-size float32 column `vector`: clips exist before
they are embedded. Its size is fixed by the first vectors written; a vector index (IVF, cosine) is built
once enough clips have vectors (below that, search is exact brute force, which is fast at that size).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

VIDEOS, CLIPS = "videos", "clips"
VECTOR = "vector"
# Below this many embedded clips brute-force search is exact and cheap; above it an IVF index pays off.
INDEX_MIN_ROWS = 256
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
_KEYS = {VIDEOS: "video_id", CLIPS: "clip_id"}
_SCHEMAS = {VIDEOS: VIDEO_SCHEMA, CLIPS: CLIP_SCHEMA}


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


class Catalog:
    """Videos and clips of the platform, in LanceDB at `uri` (a folder, file:// or an object-store URI)."""

    def __init__(self, uri: str, *, storage_options: dict[str, str] | None = None):
        self.uri = str(uri)
        local = self.uri.removeprefix("file://")
        # Consistency interval 0: every read sees the writes other processes (other Dagster steps) made.
        self._db = lancedb.connect(
            local, read_consistency_interval=timedelta(0), storage_options=storage_options
        )

    # -- table plumbing ----------------------------------------------------------------------------------
    def _table(self, name: str):
        if name not in _KEYS:
            raise ValueError(f"unknown catalog table {name!r}; tables: {', '.join(_KEYS)}")
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

    def _coerce(self, name: str, row: dict[str, Any], dim: int | None) -> dict[str, Any]:
        schema = _SCHEMAS[name]
        key = _KEYS[name]
        if not row.get(key):
            raise ValueError(f"{name} row without {key}: {sorted(row)}")
        allowed = set(schema.names) | ({VECTOR} if name == CLIPS else set())
        unknown = set(row) - allowed
        if unknown:
            raise ValueError(f"unknown {name} columns {sorted(unknown)}; known: {', '.join(sorted(allowed))}")
        out = dict(row)
        if name == CLIPS:
            if "reasons" in out:
                out["reasons"] = _as_reasons(out["reasons"])
            if "scores" in out and out["scores"] is not None and not isinstance(out["scores"], str):
                out["scores"] = json.dumps(out["scores"], sort_keys=True, default=float)
            if VECTOR in out and out[VECTOR] is not None:
                out[VECTOR] = _as_vector(out[VECTOR], dim).tolist()
        for col in ("width", "height", "rotation", "start_frame", "end_frame", "num_frames", "size_bytes"):
            if out.get(col) is not None:
                out[col] = int(out[col])
        for col in ("fps", "duration_s"):
            if out.get(col) is not None:
                out[col] = float(out[col])
        if isinstance(out.get("ingested_at"), str):  # ISO 8601 text, as manifests carry it
            out["ingested_at"] = _as_utc(datetime.fromisoformat(out["ingested_at"]))
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
        if name == VIDEOS:
            # ingested_at is the first registration: a rerun of the partition does not move it.
            existing = self._existing_keys(name, by_key)
            for k, r in by_key.items():
                if k in existing:
                    r.pop("ingested_at", None)
                elif r.get("ingested_at") is None:
                    r["ingested_at"] = r["updated_at"]
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

    def _rows(self, name: str, where: str | None) -> list[dict[str, Any]]:
        table = self._table(name)
        if table is None:
            return []
        query = table.search()
        if where:
            query = query.where(where)
        data = query.limit(None).to_arrow().sort_by(_KEYS[name])
        rows = [_decode_row(r) for r in data.to_pylist()]
        if name == CLIPS:
            for r in rows:
                r.setdefault(VECTOR, None)  # same keys before the first embedding as after
        return rows

    # -- public API --------------------------------------------------------------------------------------
    def upsert_videos(self, rows: list[dict]) -> None:
        """Insert or update videos by video_id (columns: VIDEO_SCHEMA).

        ingested_at (datetime or ISO text) is kept from the first insert; later upserts do not change it.
        """
        n = self._merge(VIDEOS, rows)
        log.debug("catalog: upserted %d videos", n)

    def upsert_clips(self, rows: list[dict]) -> None:
        """Insert or update clips by clip_id (columns: CLIP_SCHEMA + "vector").

        reasons: list[str] or a JSON list; scores: dict or JSON object string; vector: (dim,) floats.
        """
        n = self._merge(CLIPS, rows)
        if any(r.get(VECTOR) is not None for r in rows):
            self._maybe_index()
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
        self._maybe_index()

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
        if table.list_indices():
            q = q.nprobes(_NPROBES)
        if where:
            q = q.where(where, prefilter=True)
        out = []
        for r in q.to_list():
            r["similarity"] = 1.0 - float(r.pop("_distance"))
            out.append(_decode_row(r))
        return out

    def mark_duplicate(self, clip_id: str, duplicate_of: str | None) -> None:
        """Record that clip_id duplicates (is superseded by) duplicate_of; None clears it."""
        if self._merge(CLIPS, [{"clip_id": clip_id, "duplicate_of": duplicate_of}], insert=False) == 0:
            raise KeyError(f"clip {clip_id} not in the catalog")

    def set_duplicates(self, mapping: dict[str, str | None]) -> None:
        """mark_duplicate for many clips in one write; clips not in the catalog are skipped."""
        self._merge(CLIPS, [{"clip_id": c, "duplicate_of": d} for c, d in mapping.items()], insert=False)

    def clips(self, partition: str | None = None, where: str | None = None) -> list[dict]:
        """Clips (optionally of one partition and/or matching a SQL filter), ordered by clip_id."""
        return self._rows(CLIPS, _and(partition, where))

    def videos(self, partition: str | None = None) -> list[dict]:
        return self._rows(VIDEOS, _and(partition, None))

    def get_clip(self, clip_id: str) -> dict | None:
        rows = self._rows(CLIPS, f"clip_id = {sql_str(clip_id)}")
        return rows[0] if rows else None

    def count(self, table: str) -> int:
        t = self._table(table)
        return 0 if t is None else t.count_rows()

    # -- vector index ------------------------------------------------------------------------------------
    def _maybe_index(self) -> None:
        table = self._table(CLIPS)
        if table is None or self._vector_dim(table) is None:
            return
        n = table.count_rows(f"{VECTOR} IS NOT NULL")
        if n < INDEX_MIN_ROWS:
            return
        indices = [i for i in table.list_indices() if VECTOR in i.columns]
        if not indices:
            parts = max(2, int(math.sqrt(n)))
            log.info(
                "catalog %s: building IVF_FLAT cosine index over %d vectors (%d lists)", self.uri, n, parts
            )
            table.create_index(
                metric="cosine", vector_column_name=VECTOR, index_type="IVF_FLAT", num_partitions=parts
            )
            return
        stats = table.index_stats(indices[0].name)
        # New vectors are searched exactly until folded into the index; fold them in once they pile up.
        if stats is not None and stats.num_unindexed_rows > max(INDEX_MIN_ROWS, stats.num_indexed_rows // 4):
            table.optimize()


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
    """Stored form -> Python: scores JSON -> dict, vector -> float32 array."""
    if isinstance(row.get("scores"), str):
        try:
            row["scores"] = json.loads(row["scores"])
        except json.JSONDecodeError:
            pass  # keep what was stored; a bad value should not make the catalog unreadable
    if row.get(VECTOR) is not None:
        row[VECTOR] = np.asarray(row[VECTOR], dtype=np.float32)
    return row
