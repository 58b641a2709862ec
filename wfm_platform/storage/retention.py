"""Retention: delete what is older than its policy allows, keep what datasets need, record it all.

Policies (configs/retention.yaml, validated here):
- `assets`: partitioned prefixes `{asset}/{partition}/...` and their maximum age in days. Defaults:
  raw videos 90 days; processed data (clips, scores, captions, embeddings, dedup, guarded clips,
  shards, tokens) 365 days. A whole partition expires at once, never half of it.
- `logs`: prefixes of log files (`{prefix}/...jsonl`) and their maximum age; default 30 days. The
  erasure log is kept (null): it is the proof that erasure requests were honoured, and holds only hashes.
- `datasets/` (dataset versions) is always kept, and so are the shards any dataset version references:
  a `webdataset_shards` partition with a referenced shard is kept whole (its manifest too).

Age of a partition: the newest `created_at` among the stage manifests under it (each stage writes one
last, so a rerun resets the clock); objects without a manifest (and log files) use the object's
modification time from fsspec (`mtime` / `LastModified` / `updated`). Why manifests first: copying or
restoring a bucket resets object mtimes, the recorded creation time survives.

Catalog: when a partition's `clips` expire, their clip rows (and rows deriving from them in every
table) are deleted, except clips of kept dataset versions; videos of the partition with no clip left in
a dataset go too. When only the raw videos expire, their `videos` rows stay (lineage of clips that
still live) with status "expired".

Every run (not dry runs) appends one JSON line to `logs/retention/{date}-{run}.jsonl`: policies,
per partition what was deleted (counts and bytes) and what was kept for datasets.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, field_validator

from ..config_io import REPO_ROOT
from .objectstore import ObjectStore

log = logging.getLogger(__name__)

DEFAULT_CONFIG = REPO_ROOT / "configs" / "retention.yaml"
RETENTION_LOG_PREFIX = "logs/retention"
PROCESSED = ("clips", "clip_scores", "filtered_clips", "captions", "clip_embeddings", "deduplicated_clips",
             "guarded_clips", "webdataset_shards", "video_tokens")
_NEVER = ("datasets", "logs/erasure")  # never deleted, whatever the config says


class RetentionConfig(BaseModel):
    """Maximum age in days per partitioned asset and per log prefix; null = kept forever."""

    assets: dict[str, int | None] = Field(
        default_factory=lambda: {"raw_videos": 90, **{a: 365 for a in PROCESSED}})
    logs: dict[str, int | None] = Field(
        default_factory=lambda: {"logs/retention": 30, "guardrails/violations": 30, "logs/erasure": None})

    @field_validator("assets", "logs")
    @classmethod
    def _check(cls, v: dict[str, int | None]) -> dict[str, int | None]:
        for prefix, days in v.items():
            if days is not None and days < 0:
                raise ValueError(f"{prefix}: days must be >= 0 or null (keep), got {days}")
            if prefix.strip("/") in _NEVER and days is not None:
                raise ValueError(f"{prefix} is always kept (dataset versions / erasure proofs): set it to null")
        return {k.strip("/"): d for k, d in v.items()}

    @classmethod
    def load(cls, path: str | Path | None = None) -> RetentionConfig:
        p = Path(path) if path else DEFAULT_CONFIG
        if not p.exists():
            if path:
                raise FileNotFoundError(f"retention config {p} not found")
            return cls()
        data = yaml.safe_load(p.read_text()) or {}
        try:
            return cls.model_validate(data)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from e


class PartitionAction(BaseModel):
    asset: str
    partition: str
    age_days: float
    objects: int
    bytes: int
    action: str  # "deleted" | "kept_for_datasets"
    note: str = ""


class LogAction(BaseModel):
    key: str
    age_days: float
    bytes: int


class RetentionReport(BaseModel):
    run_id: str
    now: str
    dry_run: bool
    policies: RetentionConfig
    deleted: list[PartitionAction] = Field(default_factory=list)
    kept_for_datasets: list[PartitionAction] = Field(default_factory=list)
    logs_deleted: list[LogAction] = Field(default_factory=list)
    catalog_rows_deleted: dict[str, int] = Field(default_factory=dict)
    videos_marked_expired: int = 0
    log_uri: str | None = None

    @property
    def objects_deleted(self) -> int:
        return sum(a.objects for a in self.deleted) + len(self.logs_deleted)

    @property
    def bytes_deleted(self) -> int:
        return sum(a.bytes for a in self.deleted) + sum(a.bytes for a in self.logs_deleted)


def object_mtime(store: ObjectStore, key: str) -> datetime | None:
    """Modification time of an object from fsspec (local, S3, GCS and Azure spell it differently);
    None when the object is gone (see erasure.size_if_present)."""
    try:  # through the store: transient errors are retried and SDK errors mapped, as for every other call
        info = store._call("stat", key, lambda: store.fs.info(store._path(key)))
    except FileNotFoundError:
        return None
    for field in ("mtime", "LastModified", "last_modified", "updated", "created", "creation_time"):
        v = info.get(field)
        if v is None:
            continue
        if isinstance(v, (int, float)):
            return datetime.fromtimestamp(float(v), timezone.utc)
        if isinstance(v, str):
            v = datetime.fromisoformat(v.replace("Z", "+00:00"))
        if isinstance(v, datetime):
            return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
    return None


def _parse_time(s: Any) -> datetime | None:
    if not isinstance(s, str):
        return None
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def partition_time(store: ObjectStore, keys: list[str]) -> datetime | None:
    """When a partition was (last) produced: newest manifest created_at, else newest object mtime."""
    times = []
    for k in keys:
        if k.endswith("manifest.json"):
            try:
                t = _parse_time(store.read_json(k).get("created_at"))
            except (ValueError, OSError):
                t = None
            if t:
                times.append(t)
    if not times:
        times = [t for k in keys if (t := object_mtime(store, k)) is not None]
    return max(times) if times else None


def _partitions(store: ObjectStore, asset: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in store.list(asset):
        parts = key.split("/")
        if len(parts) >= 3:  # {asset}/{partition}/...
            out.setdefault(parts[1], []).append(key)
    return out


def _clip_ids_of_partition(store: ObjectStore, catalog, partition: str) -> set[str]:
    ids: set[str] = set()
    if store.exists(f"clips/{partition}/manifest.json"):
        ids |= {c["clip_id"] for c in store.read_json(f"clips/{partition}/manifest.json").get("clips", [])}
    if catalog is not None and hasattr(catalog, "clips"):
        ids |= {c["clip_id"] for c in catalog.clips(partition=partition)}
    return ids


def _catalog_clips(catalog, partition: str) -> list[dict]:
    return catalog.clips(partition=partition) if catalog is not None and hasattr(catalog, "clips") else []


def _video_ids_of_partition(store: ObjectStore, catalog, partition: str) -> set[str]:
    ids: set[str] = set()
    if store.exists(f"raw_videos/{partition}/manifest.json"):
        ids |= {v["video_id"] for v in store.read_json(f"raw_videos/{partition}/manifest.json").get("videos", [])
                if v.get("video_id")}
    if catalog is not None and hasattr(catalog, "videos"):
        ids |= {v["video_id"] for v in catalog.videos(partition=partition)}
    return ids


def apply_retention(
    store: ObjectStore,
    catalog=None,
    policies: RetentionConfig | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
) -> RetentionReport:
    """Delete every partition and log file older than its policy; see the module docstring."""
    from .datasets import DatasetRegistry
    from .erasure import delete_lineage_rows, size_if_present

    policies = policies or RetentionConfig.load()
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    rep = RetentionReport(run_id=uuid.uuid4().hex[:12], now=now.isoformat(), dry_run=dry_run, policies=policies)
    registry = DatasetRegistry(store, catalog)
    versions = registry.list()
    kept_shards = {s.uri for v in versions for s in v.shards}
    kept_clips = {c for v in versions for c in v.clip_ids}

    expired_clip_partitions: list[str] = []
    clip_ids: set[str] = set()
    video_ids: set[str] = set()
    expired_raw_partitions: list[str] = []
    for asset, days in policies.assets.items():
        if days is None or asset in _NEVER:
            continue
        for partition, keys in sorted(_partitions(store, asset).items()):
            born = partition_time(store, keys)
            if born is None:
                continue
            age = (now - born).total_seconds() / 86400
            if age < days:
                continue
            size = sum(size_if_present(store, k) for k in keys)
            action = PartitionAction(asset=asset, partition=partition, age_days=round(age, 2), objects=len(keys),
                                     bytes=size, action="deleted")
            if asset == "webdataset_shards":
                used = sorted(store.uri(k) for k in keys if store.uri(k) in kept_shards)
                if used:
                    rep.kept_for_datasets.append(action.model_copy(update={
                        "action": "kept_for_datasets", "note": f"{len(used)} shard(s) in dataset versions"}))
                    continue
            rep.deleted.append(action)
            log.info("retention: %s/%s is %.1f days old (policy %d)%s", asset, partition, age, days,
                     " [dry run]" if dry_run else "")
            # ids before the manifests that name them are deleted
            if asset == "clips":
                expired_clip_partitions.append(partition)
                clip_ids |= _clip_ids_of_partition(store, catalog, partition) - kept_clips
                in_datasets = {c["video_id"] for c in _catalog_clips(catalog, partition) if c["clip_id"] in kept_clips}
                video_ids |= _video_ids_of_partition(store, catalog, partition) - in_datasets
            if asset == "raw_videos":
                expired_raw_partitions.append(partition)
            if not dry_run:
                for k in keys:
                    if k.endswith("/manifest.json"):
                        continue
                    store.delete(k)
                for k in keys:  # manifests last: a crash leaves a manifest, never orphans without one
                    if k.endswith("/manifest.json"):
                        store.delete(k)

    # catalog rows of what expired (dataset clips and their videos stay: "what is in dataset X")
    if catalog is not None:
        if clip_ids or video_ids:
            rep.catalog_rows_deleted, _ = delete_lineage_rows(catalog, video_ids, clip_ids, dry_run=dry_run,
                                                              clear_references=False)
        for p in expired_raw_partitions:
            if p in expired_clip_partitions or not hasattr(catalog, "videos"):
                continue
            rows = [{"video_id": v["video_id"], "status": "expired",
                     "reason": f"raw video deleted by retention ({policies.assets['raw_videos']} days)"}
                    for v in catalog.videos(partition=p) if v.get("status") != "expired"]
            rep.videos_marked_expired += len(rows)
            if rows and not dry_run:
                catalog.upsert_videos(rows)

    for prefix, days in policies.logs.items():
        if days is None or prefix in _NEVER:
            continue
        for key in store.list(prefix):
            t = object_mtime(store, key)
            if t is None:
                continue
            age = (now - t).total_seconds() / 86400
            if age >= days:
                rep.logs_deleted.append(LogAction(key=key, age_days=round(age, 2),
                                                  bytes=size_if_present(store, key)))
                if not dry_run:
                    store.delete(key)

    if not dry_run:
        record = {"run_id": rep.run_id, "time": datetime.now(timezone.utc).isoformat(), "now": rep.now,
                  "policies": policies.model_dump(),
                  "deleted": [a.model_dump() for a in rep.deleted],
                  "kept_for_datasets": [a.model_dump() for a in rep.kept_for_datasets],
                  "logs_deleted": [a.model_dump() for a in rep.logs_deleted],
                  "catalog_rows_deleted": rep.catalog_rows_deleted,
                  "videos_marked_expired": rep.videos_marked_expired}
        rel = f"{RETENTION_LOG_PREFIX}/{now.strftime('%Y-%m-%d')}-{rep.run_id}.jsonl"
        rep.log_uri = store.write_bytes(rel, (json.dumps(record, sort_keys=True) + "\n").encode())
    log.info("retention: %d partitions deleted, %d kept for datasets, %d log files deleted%s",
             len(rep.deleted), len(rep.kept_for_datasets), len(rep.logs_deleted), " [dry run]" if dry_run else "")
    return rep


__all__ = ["LogAction", "PartitionAction", "RetentionConfig", "RetentionReport", "apply_retention",
           "object_mtime", "partition_time"]
