"""Erasure (GDPR / CCPA right to be forgotten): remove a source video and everything derived from it.

`erase_video(video_id, store, catalog, reason=...)` follows the lineage of one video:

1. Find it: its clips from the catalog (`clips.video_id`) AND from the `clips/*/manifest.json` stage
   manifests (the catalog may be behind), its partitions and source URIs from `raw_videos` manifests
   and the `videos` table.
2. Shards: every WebDataset shard holding one of its clips is rewritten without those members (the
   other members keep byte-identical contents) under a new name, then the shard-set manifest is
   rewritten (new sha256/bytes/counts), then the old tar is deleted. A shard left empty is dropped.
3. Dataset versions: a dataset whose latest version references the clips gets a NEW patch version
   without them (note "erasure <erasure_id>"). Older versions are redacted in place: erased clip ids
   dropped, shard entries pointed at the rewritten shards (or dropped when the shard is gone), a
   `redactions` record appended. That is how immutability and erasure are reconciled: a version's
   identity (name, version, original digest, config/code digests) is immutable; personal data in it
   is not, because the law requires its removal.
4. Objects: every key under the store root containing the video id or a clip id is deleted (raw
   copy, clips, analysis samples, thumbnails, guarded clips, video tokens, ...); the raw upload too when
   it lives in this store or in `uploads`. JSON manifests, JSON-lines logs (violation log, retention
   log) and the embeddings .npz files that mention the ids are rewritten without those records.
5. Catalog: rows whose `video_id` / `clip_id` column matches (or whose `*_sha256` column holds the
   sha256 of one of the ids, as the violation log does) are deleted from EVERY table, discovered at
   run time; other string columns equal to an id (`duplicate_of`) are set to null. Old Lance table
   versions are then cleaned up, so the deleted rows do not survive in time-travel history.
6. Log: one JSON line in `logs/erasure/` with the erasure id, sha256 of the video id (not the id),
   counts and hashes; never content.

Dry run does steps 1-6 as a plan: same report, nothing written or deleted.
Idempotent: a second run finds nothing left and logs a zero-count entry.
Catalog cleanup note: old Lance versions are removed immediately, so `Catalog` time travel to before
an erasure is not possible afterwards (that is the point).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tarfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from ..ids import file_digest
from .datasets import DatasetRegistry, ShardRef, bump_version
from .objectstore import ObjectStore

log = logging.getLogger(__name__)

ERASURE_LOG_PREFIX = "logs/erasure"
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,}$")  # ids are matched as substrings of keys: never a short one
_SHARD_NAME_RE = re.compile(r"^shard-(\d{6})\.tar$")
_DROP = object()
# Columns/fields that name the record itself: a record whose own id is erased goes away entirely.
_OWN_ID_FIELDS = ("clip_id", "video_id", "source")


class ErasureError(ValueError):
    pass


def sha256_text(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


class ShardRewrite(BaseModel):
    old_uri: str
    new_uri: str | None  # None: every member was erased, the shard is gone
    removed_samples: int
    kept_samples: int
    new_sha256: str | None = None


class ErasureReport(BaseModel):
    erasure_id: str
    time: str
    video_id: str
    reason: str
    dry_run: bool
    found: bool
    partitions: list[str] = Field(default_factory=list)
    clip_ids: list[str] = Field(default_factory=list)
    objects_deleted: list[str] = Field(default_factory=list)
    bytes_deleted: int = 0
    objects_redacted: list[str] = Field(default_factory=list)
    shards_rewritten: list[ShardRewrite] = Field(default_factory=list)
    datasets_created: list[str] = Field(default_factory=list)
    datasets_redacted: list[str] = Field(default_factory=list)
    catalog_rows_deleted: dict[str, int] = Field(default_factory=dict)
    catalog_values_cleared: dict[str, int] = Field(default_factory=dict)
    uploads_deleted: list[str] = Field(default_factory=list)
    kept_outside: list[str] = Field(default_factory=list)  # source files outside our stores: delete them there
    log_uri: str | None = None

    def log_record(self) -> dict:
        """The audit line: hashes and counts, never the ids or content themselves."""
        return {
            "erasure_id": self.erasure_id, "time": self.time, "reason": self.reason,
            "video_id_sha256": sha256_text(self.video_id), "found": self.found,
            "clips": len(self.clip_ids),
            "clip_ids_sha256": sha256_text("\n".join(sorted(self.clip_ids))),
            "partitions": self.partitions,
            "objects_deleted": len(self.objects_deleted), "bytes_deleted": self.bytes_deleted,
            "objects_deleted_sha256": sha256_text("\n".join(sorted(self.objects_deleted))),
            "objects_redacted": len(self.objects_redacted),
            "shards_rewritten": [{"old_uri": s.old_uri, "new_uri": s.new_uri, "removed": s.removed_samples,
                                  "new_sha256": s.new_sha256} for s in self.shards_rewritten],
            "datasets_created": self.datasets_created, "datasets_redacted": self.datasets_redacted,
            "catalog_rows_deleted": self.catalog_rows_deleted,
            "catalog_values_cleared": self.catalog_values_cleared,
            "uploads_deleted": len(self.uploads_deleted), "kept_outside": len(self.kept_outside),
        }


# ---------------------------------------------------------------------------------------------------
# catalog access (switch to Catalog.tables() / delete_where() once CATALOG provides them)
# ---------------------------------------------------------------------------------------------------
def catalog_tables(catalog) -> list[str]:
    """Every table in the catalog, discovered at run time."""
    if hasattr(catalog, "tables"):
        return list(catalog.tables())
    db = catalog._db
    names = db.list_tables() if hasattr(db, "list_tables") else db.table_names()
    names = getattr(names, "tables", names)  # newer LanceDB returns a response object
    return sorted(names)


def open_table(catalog, name: str):
    return catalog._db.open_table(name)


def _sql_in(column: str, values) -> str:
    from .catalog import sql_in

    return sql_in(column, sorted(values))


def delete_lineage_rows(catalog, video_ids: set[str], clip_ids: set[str], *, dry_run: bool = False,
                        clear_references: bool = True, purge_history: bool = True
                        ) -> tuple[dict[str, int], dict[str, int]]:
    """Delete rows deriving from the videos/clips in every catalog table; returns (deleted, cleared).

    Rows match by their `video_id` / `clip_id` columns, or a `*_sha256` column holding the sha256 of an
    id. With clear_references, other string columns equal to an id (e.g. duplicate_of) become null.
    purge_history drops old Lance table versions so deleted rows are gone from disk, not just hidden."""
    import pyarrow as pa

    ids = set(video_ids) | set(clip_ids)
    hashed = {sha256_text(i) for i in ids}
    deleted: dict[str, int] = {}
    cleared: dict[str, int] = {}
    if not ids:
        return deleted, cleared
    for name in catalog_tables(catalog):
        table = open_table(catalog, name)
        schema = table.schema
        conds = []
        if "video_id" in schema.names and video_ids:
            conds.append(_sql_in("video_id", video_ids))
        if "clip_id" in schema.names and clip_ids:
            conds.append(_sql_in("clip_id", clip_ids))
        conds += [_sql_in(f.name, hashed) for f in schema if f.name.endswith("_sha256")
                  and pa.types.is_string(f.type)]
        changed = False
        if conds:
            where = " OR ".join(f"({c})" for c in conds)
            n = table.count_rows(where)
            if n:
                deleted[name] = n
                if not dry_run:
                    if hasattr(catalog, "delete_where"):
                        catalog.delete_where(name, where)  # the MongoDB mirror follows
                    else:
                        table.delete(where)
                    changed = True
        if clear_references:
            own = {"video_id", "clip_id"}
            for f in schema:
                if f.name in own or f.name.endswith("_sha256") or not pa.types.is_string(f.type):
                    continue
                where = _sql_in(f.name, ids)
                n = table.count_rows(where)
                if not n:
                    continue
                cleared[f"{name}.{f.name}"] = n
                if dry_run:
                    continue
                try:
                    table.update(where=where, values={f.name: None})
                except Exception:  # a non-nullable column: the row cannot keep a reference, drop it
                    log.warning("catalog %s.%s is not nullable: deleting %d referencing rows", name, f.name, n)
                    table.delete(where)
                changed = True
        if changed and purge_history:
            # Deleted rows still live in older table versions (time travel); GDPR wants them gone.
            if hasattr(catalog, "purge_history"):
                catalog.purge_history(name)
            else:
                open_table(catalog, name).optimize(cleanup_older_than=timedelta(0))
    return deleted, cleared


# ---------------------------------------------------------------------------------------------------
# lineage discovery
# ---------------------------------------------------------------------------------------------------
def _stage_manifests(store: ObjectStore, asset: str) -> list[str]:
    return [k for k in store.list(asset) if k.endswith("/manifest.json") and k.count("/") == 2]


def find_lineage(video_id: str, store: ObjectStore, catalog=None) -> tuple[set[str], set[str], set[str]]:
    """(clip ids, partitions, source URIs) of a video, from the catalog and the stage manifests."""
    clip_ids: set[str] = set()
    partitions: set[str] = set()
    sources: set[str] = set()
    if catalog is not None:
        from .catalog import sql_str

        names = catalog_tables(catalog)
        if "clips" in names:
            t = open_table(catalog, "clips")
            for r in t.search().where(f"video_id = {sql_str(video_id)}").select(["clip_id", "partition"]) \
                    .limit(None).to_list():
                clip_ids.add(r["clip_id"])
                partitions.add(r["partition"])
        if "videos" in names:
            t = open_table(catalog, "videos")
            for r in t.search().where(f"video_id = {sql_str(video_id)}").select(["partition", "source_uri"]) \
                    .limit(None).to_list():
                partitions.add(r["partition"])
                if r.get("source_uri"):
                    sources.add(r["source_uri"])
    for key in _stage_manifests(store, "raw_videos"):
        for v in store.read_json(key).get("videos", []):
            if v.get("video_id") == video_id:
                partitions.add(key.split("/")[1])
                if v.get("source_uri"):
                    sources.add(v["source_uri"])
    for key in _stage_manifests(store, "clips"):
        for c in store.read_json(key).get("clips", []):
            if c.get("video_id") == video_id:
                clip_ids.add(c["clip_id"])
                partitions.add(key.split("/")[1])
    partitions.discard(None)
    return clip_ids, partitions, sources


# ---------------------------------------------------------------------------------------------------
# shards
# ---------------------------------------------------------------------------------------------------
def filter_tar(src: Path, dst: Path, drop: set[str]) -> tuple[int, int]:
    """Copy a WebDataset tar without the samples whose key is in `drop`; (kept, removed) samples.

    Members are copied with their own headers and bytes, so what stays is byte-identical."""
    kept, removed = set(), set()
    with tarfile.open(src, "r:") as tin, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as tout:
        for ti in tin:
            key = Path(ti.name).name.split(".", 1)[0]  # webdataset's sample key: name up to the first dot
            if key in drop:
                removed.add(key)
                continue
            kept.add(key)
            tout.addfile(ti, tin.extractfile(ti) if ti.isfile() else None)
    return len(kept), len(removed)


def _new_shard_rel(store: ObjectStore, old_rel: str, taken: set[str]) -> str:
    """The next free shard-NNNNNN.tar in the old shard's folder (keeps the shard-name pattern that
    write_shards uses to find and clean its own shards on a rerun)."""
    folder = old_rel.rsplit("/", 1)[0]
    used = [int(m[1]) for k in store.list(folder, recursive=False) + sorted(taken)
            if (m := _SHARD_NAME_RE.match(k.rsplit("/", 1)[-1])) and k.rsplit("/", 1)[0] == folder]
    rel = f"{folder}/shard-{max(used, default=-1) + 1:06d}.tar"
    taken.add(rel)
    return rel


def rewrite_shard_sets(store: ObjectStore, clip_ids: set[str], erasure_id: str, *, dry_run: bool
                       ) -> tuple[list[ShardRewrite], dict[str, ShardRef | None], list[str]]:
    """Rewrite every webdataset_shards set holding any of clip_ids. Returns (rewrites, old uri ->
    new ShardRef or None, manifests rewritten)."""
    rewrites: list[ShardRewrite] = []
    mapping: dict[str, ShardRef | None] = {}
    manifests: list[str] = []
    taken: set[str] = set()
    for key in _stage_manifests(store, "webdataset_shards"):
        manifest = store.read_json(key)
        if not any(set(e.get("clip_ids", [])) & clip_ids for e in manifest.get("shards", [])):
            continue
        new_entries, old_rels = [], []
        for e in manifest["shards"]:
            drop = set(e.get("clip_ids", [])) & clip_ids
            if not drop:
                new_entries.append(e)
                continue
            old_rel = store.rel(e["uri"])
            keep = [c for c in e["clip_ids"] if c not in drop]
            if not keep:
                rewrites.append(ShardRewrite(old_uri=e["uri"], new_uri=None, removed_samples=len(drop),
                                             kept_samples=0))
                mapping[e["uri"]] = None
                old_rels.append(old_rel)
                continue
            new_rel = _new_shard_rel(store, old_rel, taken)
            entry = {**e, "uri": store.uri(new_rel), "clip_ids": keep, "num_samples": len(keep)}
            if not dry_run:
                with store.local_copy(old_rel) as src, store.staged(new_rel) as tmp:
                    n_kept, _ = filter_tar(src, tmp, drop)
                    if n_kept != len(keep):
                        raise ErasureError(f"{e['uri']}: {n_kept} samples left in the tar, manifest says "
                                           f"{len(keep)}; run `verify_shards` and rebuild the shard set")
                    entry.update(sha256=file_digest(tmp), bytes=tmp.stat().st_size)
            new_entries.append(entry)
            old_rels.append(old_rel)
            rewrites.append(ShardRewrite(old_uri=e["uri"], new_uri=entry["uri"], removed_samples=len(drop),
                                         kept_samples=len(keep), new_sha256=entry.get("sha256")))
            mapping[e["uri"]] = ShardRef(uri=entry["uri"], sha256=entry.get("sha256", ""),
                                         bytes=int(entry.get("bytes", 0)), clips=tuple(keep),
                                         bucket=entry.get("bucket", ""))
        # Buckets and totals follow the shards that are left.
        buckets = {}
        for bkey, b in manifest.get("buckets", {}).items():
            in_b = [e for e in new_entries if e.get("bucket") == bkey]
            if in_b:
                buckets[bkey] = {**b, "num_samples": sum(e["num_samples"] for e in in_b),
                                 "shards": [e["uri"] for e in in_b]}
        manifest.update(shards=new_entries, buckets=buckets, num_shards=len(new_entries),
                        num_samples=sum(e["num_samples"] for e in new_entries),
                        erasures=[*manifest.get("erasures", []), erasure_id])
        manifests.append(key)
        if not dry_run:
            store.write_json(key, manifest)  # new tars are committed; now the manifest points at them
            for rel in old_rels:
                store.delete(rel)  # last: a crash before this leaves an orphan tar, never a dangling manifest
    return rewrites, mapping, manifests


# ---------------------------------------------------------------------------------------------------
# JSON / JSON-lines / npz redaction
# ---------------------------------------------------------------------------------------------------
def size_if_present(store: ObjectStore, key: str) -> int:
    """Bytes of a listed object; 0 when it vanished since the listing. Erasure and retention walk a
    shared bucket while other workers (another erasure, a retention run, a rerun stage) delete objects
    in it; such an object needs no deleting, and failing on it would stop the run half-way, with no
    log line for what it had already deleted."""
    try:
        return store.size(key)
    except FileNotFoundError:
        return 0


def read_if_present(store: ObjectStore, key: str) -> bytes | None:
    """The bytes of a listed object; None when it vanished since the listing (see size_if_present)."""
    try:
        return store.read_bytes(key)
    except FileNotFoundError:
        return None


def _mentions(text: str, ids: set[str]) -> bool:
    return any(i in text for i in ids)


def redact_json(obj: Any, ids: set[str]) -> Any:
    """obj without anything about the ids: records (dicts) whose own clip_id/video_id is erased are
    dropped, dict keys equal to an id are dropped (captions/scores keyed by clip), other strings that
    mention an id become None. Returns _DROP when obj itself is such a record."""
    if isinstance(obj, dict):
        for f in _OWN_ID_FIELDS:
            if isinstance(obj.get(f), str) and obj[f] in ids:
                return _DROP
        out = {}
        for k, v in obj.items():
            if k in ids:
                continue
            r = redact_json(v, ids)
            if r is not _DROP:
                out[k] = r
        # Counters of lists this record holds follow what is left (num_clips <- clips, ...).
        for k in list(out):
            if k.startswith("num_") and isinstance(out[k], int):
                target = k[4:]
                if isinstance(out.get(target), (list, dict)):
                    out[k] = len(out[target])
        if isinstance(out.get("videos"), list) and "num_ok" in out:  # raw_videos manifest
            vids = out["videos"]
            out.update(num_files=len(vids), num_ok=sum(v.get("status") == "ok" for v in vids),
                       num_rejected=sum(v.get("status") != "ok" for v in vids))
        return out
    if isinstance(obj, list):
        out_list = []
        for v in obj:
            r = redact_json(v, ids)
            if r is _DROP or (isinstance(r, str) and _mentions(r, ids)):
                continue
            out_list.append(r)
        return out_list
    if isinstance(obj, str) and _mentions(obj, ids):
        return None
    return obj


def _redact_npz(data: bytes, ids: set[str]) -> bytes | None:
    """An embeddings npz ({ids, vectors}) without the erased rows; None when it has none of them."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if "ids" not in arrays:
        return None
    keep = np.array([str(i) not in ids for i in arrays["ids"]], dtype=bool)
    if keep.all():
        return None
    n = len(keep)
    out = {k: (a[keep] if a.ndim and a.shape[0] == n else a) for k, a in arrays.items()}
    buf = io.BytesIO()
    np.savez(buf, **out)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------
def erase_video(
    video_id: str,
    store: ObjectStore,
    catalog=None,
    *,
    reason: str,
    dry_run: bool = False,
    uploads: ObjectStore | None = None,
    registry: DatasetRegistry | None = None,
) -> ErasureReport:
    """Remove a source video and everything derived from it (see the module docstring)."""
    if not isinstance(video_id, str) or not _ID_RE.match(video_id):
        raise ErasureError(f"video id {video_id!r} is not a platform video id (the 16 hex digits in "
                           "`wfm catalog` / raw_videos manifests); refusing to match on it")
    if not reason or not reason.strip():
        raise ErasureError("an erasure needs a reason (e.g. the request ticket), recorded in the erasure log")
    registry = registry or DatasetRegistry(store, catalog)
    rep = ErasureReport(erasure_id=uuid.uuid4().hex[:16], time=datetime.now(timezone.utc).isoformat(),
                        video_id=video_id, reason=reason.strip(), dry_run=dry_run, found=False)
    clip_ids, partitions, sources = find_lineage(video_id, store, catalog)
    ids = {video_id} | clip_ids
    rep.clip_ids, rep.partitions = sorted(clip_ids), sorted(p for p in partitions if p)
    log.info("erasure %s: video %s, %d clips in %s%s", rep.erasure_id, video_id, len(clip_ids),
             rep.partitions, " (dry run)" if dry_run else "")

    # 2. shards first: afterwards no readable shard holds the clips.
    rewrites, shard_map, shard_manifests = rewrite_shard_sets(store, clip_ids, rep.erasure_id, dry_run=dry_run)
    rep.shards_rewritten = rewrites
    rep.objects_redacted += shard_manifests

    # 3. dataset versions: a new patch version where the latest is affected, old ones redacted.
    removed_uris = set(shard_map)
    replaced = {u: r for u, r in shard_map.items() if r is not None}
    for name in registry.names():
        versions = registry.list(name)
        affected = [v for v in versions
                    if set(v.clip_ids) & clip_ids or any(s.uri in removed_uris for s in v.shards)]
        if not affected:
            continue
        latest = versions[-1]
        if latest in affected:
            new_shards = tuple(replaced.get(s.uri, s) for s in latest.shards
                               if s.uri not in removed_uris or s.uri in replaced)
            new_version = bump_version(latest.version, "patch")
            rep.datasets_created.append(f"{name}@{new_version}")
            if not dry_run:
                draft = latest.model_copy(update={
                    "version": new_version, "parent": latest.version, "created_at": rep.time,
                    "shards": new_shards, "clip_ids": tuple(c for c in latest.clip_ids if c not in clip_ids),
                    "note": f"erasure {rep.erasure_id}: one source video removed", "digest": "",
                    "redactions": ()})
                registry.write(draft)
        for v in affected:
            rep.datasets_redacted.append(v.ref)
            if not dry_run:
                registry.redact(v, erasure_id=rep.erasure_id, clip_ids=clip_ids, removed_uris=removed_uris,
                                replaced=replaced)

    # 4. objects: keys naming an id go; manifests, logs and embeddings mentioning one are rewritten.
    skip_prefixes = ["datasets/", f"{ERASURE_LOG_PREFIX}/"]
    cat_uri = _catalog_root(catalog)
    if cat_uri and cat_uri.startswith(store.root + "/"):
        skip_prefixes.append(store.rel(cat_uri) + "/")  # the catalog's own files: handled in step 5
    skip_prefixes = tuple(skip_prefixes)
    for key in store.list(""):
        if key.startswith(skip_prefixes) or key in shard_manifests:
            continue
        if _mentions(key, ids):
            rep.bytes_deleted += size_if_present(store, key)
            rep.objects_deleted.append(key)
            if not dry_run:
                store.delete(key)
            continue
        new: bytes | None = None
        if key.endswith((".json", ".jsonl")) or (key.endswith(".npz") and key.startswith("clip_embeddings/")):
            data = read_if_present(store, key)
            if data is None:
                continue  # deleted by another worker since the listing: nothing left to redact
        if key.endswith(".json"):
            if _mentions(data.decode("utf-8", "replace"), ids):
                obj = redact_json(json.loads(data), ids)
                if obj is _DROP:  # the whole object is a record of an erased clip
                    rep.objects_deleted.append(key)
                    rep.bytes_deleted += len(data)
                    if not dry_run:
                        store.delete(key)
                    continue
                if isinstance(obj, dict):
                    obj["erasures"] = [*obj.get("erasures", []), rep.erasure_id]
                new = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        elif key.endswith(".jsonl"):
            needles = ids | {sha256_text(i) for i in ids}  # the violation log keeps sha256(clip_id)
            lines = data.decode("utf-8", "replace").splitlines(keepends=True)
            kept = [ln for ln in lines if not _mentions(ln, needles)]
            if len(kept) != len(lines):
                new = "".join(kept).encode()
        elif key.endswith(".npz") and key.startswith("clip_embeddings/"):
            new = _redact_npz(data, ids)
        if new is not None:
            rep.objects_redacted.append(key)
            if not dry_run:
                store.write_bytes(key, new)

    # the raw upload, wherever we can reach it
    for src in sorted(sources):
        target = next((s for s in (store, uploads) if s is not None and src.startswith(s.root + "/")), None)
        if target is None:
            rep.kept_outside.append(src)
            log.warning("erasure %s: source %s is outside the store and uploads; delete it there",
                        rep.erasure_id, src)
            continue
        rel = target.rel(src)
        if target.exists(rel):
            rep.uploads_deleted.append(src)
            if not dry_run:
                target.delete(rel)

    # 5. catalog last: until here a crashed erasure can be rerun and still finds the clips.
    if catalog is not None:
        rep.catalog_rows_deleted, rep.catalog_values_cleared = delete_lineage_rows(
            catalog, {video_id}, clip_ids, dry_run=dry_run)

    rep.found = bool(clip_ids or rep.objects_deleted or rep.catalog_rows_deleted or rep.uploads_deleted
                     or rep.objects_redacted)
    # 6. the audit line (hashes and counts only)
    if not dry_run:
        day = rep.time[:10]
        rel = f"{ERASURE_LOG_PREFIX}/{day}-{rep.erasure_id}.jsonl"  # one object per erasure: no lost appends
        rep.log_uri = store.write_bytes(rel, (json.dumps(rep.log_record(), sort_keys=True) + "\n").encode())
    log.info("erasure %s: %d objects deleted, %d redacted, %d shards rewritten, datasets %s, catalog %s",
             rep.erasure_id, len(rep.objects_deleted), len(rep.objects_redacted), len(rep.shards_rewritten),
             rep.datasets_created, rep.catalog_rows_deleted)
    return rep


def _catalog_root(catalog) -> str | None:
    if catalog is None or not getattr(catalog, "uri", None):
        return None
    from .objectstore import _norm_root

    return _norm_root(str(catalog.uri))


def read_erasure_log(store: ObjectStore) -> list[dict]:
    out = []
    for key in store.list(ERASURE_LOG_PREFIX):
        if key.endswith(".jsonl"):
            out += [json.loads(ln) for ln in store.read_bytes(key).decode().splitlines() if ln.strip()]
    return sorted(out, key=lambda r: r["time"])


__all__ = ["ErasureError", "ErasureReport", "ShardRewrite", "catalog_tables", "delete_lineage_rows",
           "erase_video", "filter_tar", "find_lineage", "read_erasure_log", "read_if_present", "redact_json",
           "size_if_present"]
