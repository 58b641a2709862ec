"""Dataset versions: named, immutable, semantically versioned manifests of curated shards.

A dataset version is one JSON object at `{root}/datasets/{name}/{version}.json` that lists the exact
shard files (URI, sha256, bytes, bucket, clip ids) a training run reads, the clip ids, the digest of the
pipeline configuration and of the code that produced it, and its parent version. It is written once:
creating a version that exists is an error, and a new version whose content (shards + clips + config
digest) equals the latest one is not written again: `create` returns the latest version unchanged.

The one exception to "written once" is erasure (GDPR / CCPA, see erasure.py): an erasure creates a new
patch version without the erased clips and *redacts* older versions in place (drops the erased clip
ids and the shard entries whose files were removed, appends a `redactions` record). A redacted
version keeps its name, version, digest (of the original manifest) and every other field, so lineage
("run R read ds@1.2.0") stays answerable while no personal data survives.

Training runs record `DatasetVersion.ref` and `.digest` (see `training_record`), and read the shards
through `as_shard_manifest()`, which `curation.shards.open_dataset` / `verify_shards` accept.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from ..ids import file_digest
from .objectstore import ObjectStore

log = logging.getLogger(__name__)

DATASETS_PREFIX = "datasets"
SHARDS_ASSET = "webdataset_shards"
FIRST_VERSION = "1.0.0"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
Bump = Literal["major", "minor", "patch"]


class DatasetError(ValueError):
    """A dataset request that cannot be satisfied; the message says what to do."""


class DatasetNotFound(DatasetError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetExists(DatasetError):
    pass


def parse_version(v: str) -> tuple[int, int, int]:
    m = _SEMVER_RE.match(v or "")
    if not m:
        raise DatasetError(f"version {v!r} is not a semantic version MAJOR.MINOR.PATCH like 1.2.0")
    return int(m[1]), int(m[2]), int(m[3])


def bump_version(v: str, bump: Bump) -> str:
    major, minor, patch = parse_version(v)
    if bump == "major":
        return f"{major + 1}.0.0"
    if bump == "minor":
        return f"{major}.{minor + 1}.0"
    if bump == "patch":
        return f"{major}.{minor}.{patch + 1}"
    raise DatasetError(f"bump must be major, minor or patch, not {bump!r}")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or "@" in name:
        raise DatasetError(f"dataset name {name!r}: use letters, digits, '.', '_' or '-' (no '/', no '@')")
    return name


def parse_ref(ref: str) -> tuple[str, str | None]:
    """"name@1.2.0" -> ("name", "1.2.0"); "name" -> ("name", None) (= latest)."""
    name, _, version = str(ref).partition("@")
    check_name(name)
    if version:
        parse_version(version)
    return name, version or None


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """wfm_platform's version plus the git commit of the checkout, when there is one ("+dirty" if edited)."""
    from importlib import metadata

    try:
        version = metadata.version("wfm-platform")
    except metadata.PackageNotFoundError:
        version = "unknown"
    repo = Path(__file__).resolve().parents[2]
    commit = ""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        pass  # installed from a wheel, or no git: the package version alone
    return f"wfm_platform {version}" + (f" git {commit}" if commit else "")


def config_digest(config: Any) -> str:
    """sha256 of a pipeline configuration: a pydantic model (e.g. PipelineConfig), a dict or YAML text.

    For a PipelineConfig the filter thresholds file it points at is folded in too, so a changed
    threshold gives a different digest."""
    if config is None:
        from ..curation.config import PipelineConfig

        config = PipelineConfig.load()
    if hasattr(config, "model_dump"):
        payload: Any = {"config": config.model_dump(mode="json")}
        for attr in ("filters_path", "guard_path"):
            path = getattr(config, attr, None)
            if callable(path) and path().exists():
                payload[attr] = path().read_text()
    else:
        payload = config
    return sha256_hex(_canonical(payload))


class ShardRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str
    sha256: str
    bytes: int
    clips: tuple[str, ...]
    bucket: str = ""


class Redaction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    erasure_id: str
    time: str
    clips_removed: int
    shards_removed: int


class DatasetVersion(BaseModel):
    """One immutable dataset version (see the module docstring for the erasure exception)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str
    created_at: str
    parent: str | None = None  # the previous version ("1.1.0"), None for the first
    batches: tuple[str, ...] = ()  # the upload batches (partitions) its shards came from, if known
    shards: tuple[ShardRef, ...]
    clip_ids: tuple[str, ...]
    config_digest: str
    code_digest: str
    note: str = ""
    digest: str = ""  # sha256 of this manifest without `digest` and `redactions`
    redactions: tuple[Redaction, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        parse_version(v)
        return v

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def num_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def content_key(self) -> str:
        """What the data is: shard files, clips and pipeline config (not times, notes or code)."""
        shards = sorted((s.uri, s.sha256) for s in self.shards)
        return sha256_hex(_canonical({"shards": shards, "clips": sorted(self.clip_ids),
                                      "config": self.config_digest}))

    def compute_digest(self) -> str:
        return sha256_hex(_canonical(self.model_dump(mode="json", exclude={"digest", "redactions"})))

    def as_shard_manifest(self) -> dict:
        """This version in the shard-manifest shape `open_dataset` and `verify_shards` read."""
        shards = [{"uri": s.uri, "bucket": s.bucket, "num_samples": len(s.clips), "bytes": s.bytes,
                   "sha256": s.sha256, "clip_ids": list(s.clips)} for s in self.shards]
        buckets: dict[str, dict] = {}
        for s in shards:
            b = buckets.setdefault(s["bucket"], {"num_samples": 0, "shards": []})
            b["num_samples"] += s["num_samples"]
            b["shards"].append(s["uri"])
        return {"version": 1, "shard_set": self.ref, "num_samples": sum(len(s.clips) for s in self.shards),
                "num_shards": len(shards), "buckets": buckets, "shards": shards}

    def training_record(self) -> dict:
        """What a training run stores about the data it read (checkpoint metadata, run tags)."""
        return {"dataset": self.ref, "dataset_digest": self.digest, "num_clips": len(self.clip_ids),
                "num_shards": len(self.shards)}


class DatasetDiff(BaseModel):
    a: str
    b: str
    added_clips: list[str]
    removed_clips: list[str]
    added_shards: list[str]
    removed_shards: list[str]
    unchanged_clips: int
    config_changed: bool


def shard_refs_from_manifest(manifest: dict) -> list[ShardRef]:
    """ShardRefs of a webdataset_shards manifest (curation/shards.py write_shards)."""
    try:
        return [ShardRef(uri=e["uri"], sha256=e["sha256"], bytes=int(e["bytes"]),
                         clips=tuple(e.get("clip_ids", [])), bucket=e.get("bucket", ""))
                for e in manifest["shards"]]
    except (KeyError, TypeError) as e:
        raise DatasetError(f"not a webdataset_shards manifest (missing {e}): {str(manifest)[:200]}") from e


class DatasetRegistry:
    """Dataset versions stored under `{store}/datasets/`; optionally indexed in the catalog."""

    def __init__(self, store: ObjectStore, catalog: Any | None = None):
        self.store = store
        self.catalog = catalog

    # -- paths -------------------------------------------------------------------------------------
    @staticmethod
    def rel(name: str, version: str) -> str:
        return f"{DATASETS_PREFIX}/{check_name(name)}/{version}.json"

    # -- reads -------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted({k.split("/")[1] for k in self.store.list(DATASETS_PREFIX)
                       if k.endswith(".json") and k.count("/") == 2})

    def versions(self, name: str) -> list[str]:
        """Versions of a dataset, oldest first (semantic order, not text order)."""
        out = []
        for key in self.store.list(f"{DATASETS_PREFIX}/{check_name(name)}"):
            v = key.rsplit("/", 1)[-1].removesuffix(".json")
            if key.endswith(".json") and _SEMVER_RE.match(v):
                out.append(v)
        return sorted(out, key=parse_version)

    def get(self, ref: str) -> DatasetVersion:
        """"NAME@1.2.0" or "NAME" (the latest version)."""
        name, version = parse_ref(ref)
        if version is None:
            versions = self.versions(name)
            if not versions:
                known = ", ".join(self.names()) or "none yet"
                raise DatasetNotFound(f"no dataset named {name!r} (datasets: {known}); create it with "
                                      f"`wfm dataset create {name} --batch BATCH`")
            version = versions[-1]
        rel = self.rel(name, version)
        if not self.store.exists(rel):
            raise DatasetNotFound(f"{name}@{version} does not exist; versions: "
                                  f"{', '.join(self.versions(name)) or 'none'}")
        return self._load(rel)

    def _load(self, rel: str) -> DatasetVersion:
        try:
            return DatasetVersion.model_validate_json(self.store.read_bytes(rel))
        except ValueError as e:
            raise DatasetError(f"{self.store.uri(rel)} is not a valid dataset manifest: {e}") from e

    def latest(self, name: str) -> DatasetVersion | None:
        versions = self.versions(name)
        return self.get(f"{name}@{versions[-1]}") if versions else None

    def list(self, name: str | None = None) -> list[DatasetVersion]:
        """Every version (of one dataset, or of all), by name then semantic version."""
        names = [check_name(name)] if name else self.names()
        return [self.get(f"{n}@{v}") for n in names for v in self.versions(n)]

    def diff(self, a: str | DatasetVersion, b: str | DatasetVersion) -> DatasetDiff:
        va = a if isinstance(a, DatasetVersion) else self.get(a)
        vb = b if isinstance(b, DatasetVersion) else self.get(b)
        ca, cb = set(va.clip_ids), set(vb.clip_ids)
        sa, sb = {s.uri for s in va.shards}, {s.uri for s in vb.shards}
        return DatasetDiff(a=va.ref, b=vb.ref, added_clips=sorted(cb - ca), removed_clips=sorted(ca - cb),
                           added_shards=sorted(sb - sa), removed_shards=sorted(sa - sb),
                           unchanged_clips=len(ca & cb), config_changed=va.config_digest != vb.config_digest)

    def verify(self, ref: str | DatasetVersion, *, deep: bool = True) -> list[str]:
        """Readable problems ([] when healthy): digest mismatch, missing shard, size/sha256 mismatch, and
        with deep=True also the tar contents (members per clip) through curation.shards.verify_shards."""
        v = ref if isinstance(ref, DatasetVersion) else self.get(ref)
        problems = []
        if v.digest and not v.redactions and v.digest != v.compute_digest():  # a draft has no digest yet
            problems.append(f"{v.ref}: manifest digest mismatch (edited after it was written?)")
        if deep:
            from ..curation.shards import verify_shards

            problems += verify_shards(self.store, v.as_shard_manifest())
            return problems
        for s in v.shards:
            rel = self.store.rel(s.uri)
            if not self.store.exists(rel):
                problems.append(f"{s.uri}: missing shard")
            elif self.store.size(rel) != s.bytes:
                problems.append(f"{s.uri}: {self.store.size(rel)} bytes, manifest says {s.bytes}")
            else:
                with self.store.local_copy(rel) as local:
                    if file_digest(local) != s.sha256:
                        problems.append(f"{s.uri}: sha256 mismatch")
        return problems

    def shard_uris_in_use(self) -> set[str]:
        """Every shard URI any version (not just the latest) references: retention keeps these."""
        return {s.uri for v in self.list() for s in v.shards}

    # -- writes ------------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        shard_manifests: Sequence[dict] | None = None,
        partitions: Sequence[str] | None = None,
        *,
        bump: Bump = "minor",
        note: str = "",
        version: str | None = None,
        config: Any | None = None,
        verify: bool = False,
    ) -> DatasetVersion:
        """A new version of `name` from webdataset_shards manifests (dicts) and/or upload batches.

        The first version is 1.0.0; later ones bump the latest (`bump`), or take `version` exactly
        (an existing version is a DatasetExists error). If the content (shards, clips, config digest)
        equals the latest version's, nothing is written and the latest version is returned.
        verify=True checks every shard's size and sha256 in the store first.
        """
        check_name(name)
        manifests = list(shard_manifests or [])
        batches = list(partitions or [])
        for p in batches:
            from ..curation.shards import read_manifest

            try:
                manifests.append(read_manifest(self.store, f"{SHARDS_ASSET}/{p}"))
            except FileNotFoundError as e:
                raise DatasetError(f"batch {p!r} has no curated shards ({e}); curate it first "
                                   f"(`wfm backfill {p}`)") from e
        if not manifests:
            raise DatasetError("a dataset needs shards: give --batch BATCH (one or more) or shard manifests")
        shards: dict[str, ShardRef] = {}
        for m in manifests:
            for ref in shard_refs_from_manifest(m):
                shards[ref.uri] = ref  # the same shard from two sources counts once
        clip_ids = sorted({c for s in shards.values() for c in s.clips})
        if not clip_ids:
            raise DatasetError("the chosen shards hold no clips: nothing to version")
        for m in manifests:  # batch names from the manifests when not given as partitions
            if m.get("shard_set") and m["shard_set"] not in batches:
                batches.append(str(m["shard_set"]))

        latest = self.latest(name)
        if version is None:
            version = FIRST_VERSION if latest is None else bump_version(latest.version, bump)
        parse_version(version)
        if self.store.exists(self.rel(name, version)):
            raise DatasetExists(f"{name}@{version} already exists and versions are immutable; "
                                f"create a new version (--bump patch|minor|major)")
        if latest is not None and parse_version(version) <= parse_version(latest.version):
            raise DatasetError(f"{name}@{version} is not newer than the latest {latest.ref}")
        draft = DatasetVersion(
            name=name, version=version, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            parent=latest.version if latest else None, batches=tuple(sorted(batches)),
            shards=tuple(sorted(shards.values(), key=lambda s: s.uri)), clip_ids=tuple(clip_ids),
            config_digest=config_digest(config), code_digest=code_digest(), note=note)
        if latest is not None and latest.content_key() == draft.content_key():
            log.info("dataset %s: content equals %s, no new version written", name, latest.ref)
            return latest
        if verify:
            problems = self.verify(draft, deep=False)
            if problems:
                raise DatasetError(f"{name}@{version}: shards fail verification: {'; '.join(problems[:5])}")
        return self.write(draft)

    def write(self, draft: DatasetVersion) -> DatasetVersion:
        """Seal (digest) and store a new version once; DatasetExists if that version is already there."""
        v = draft.model_copy(update={"digest": draft.compute_digest()})
        rel = self.rel(v.name, v.version)
        data = json.dumps(v.model_dump(mode="json"), indent=2, sort_keys=True).encode()
        _write_once(self.store, rel, data)
        log.info("dataset %s written: %d clips in %d shards (%s)", v.ref, len(v.clip_ids), len(v.shards),
                 self.store.uri(rel))
        self._index(v)
        return v

    def redact(self, v: DatasetVersion, *, erasure_id: str, clip_ids: set[str], removed_uris: set[str],
               replaced: dict[str, ShardRef] | None = None) -> DatasetVersion:
        """Rewrite an existing version without the erased clips (erasure only; see the module doc).

        Shards in `removed_uris` are dropped, unless `replaced` maps them to their rewritten ShardRef."""
        replaced = replaced or {}
        shards = []
        removed = 0
        for s in v.shards:
            if s.uri in replaced:
                shards.append(replaced[s.uri])
            elif s.uri in removed_uris:
                removed += 1
            else:
                shards.append(s)
        clips = tuple(c for c in v.clip_ids if c not in clip_ids)
        red = Redaction(erasure_id=erasure_id, time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        clips_removed=len(v.clip_ids) - len(clips), shards_removed=removed)
        out = v.model_copy(update={"shards": tuple(shards), "clip_ids": clips,
                                   "redactions": (*v.redactions, red)})
        data = json.dumps(out.model_dump(mode="json"), indent=2, sort_keys=True).encode()
        self.store.write_bytes(self.rel(v.name, v.version), data)  # deliberate overwrite: GDPR erasure
        log.warning("dataset %s redacted by erasure %s: %d clips, %d shards removed", v.ref, erasure_id,
                    red.clips_removed, removed)
        self._index(out, replace=True)
        return out

    def _index(self, v: DatasetVersion, *, replace: bool = False) -> None:
        """The version as a `datasets` catalog row (Catalog.upsert_dataset), when a catalog is given.

        replace=True (erasure only) deletes the old row first: the catalog refuses to change a version."""
        if self.catalog is None or not hasattr(self.catalog, "upsert_dataset"):
            return
        from .catalog import sql_str

        row = catalog_row(v, self.store.uri(self.rel(v.name, v.version)))
        if replace and hasattr(self.catalog, "delete_where"):
            self.catalog.delete_where("datasets", f"dataset_id = {sql_str(row['dataset_id'])}")
        self.catalog.upsert_dataset(row)


def catalog_row(v: DatasetVersion, manifest_uri: str) -> dict:
    """The catalog's DATASET_SCHEMA row; the full manifest (digest, note, shards) stays at manifest_uri."""
    return {"dataset_id": v.ref, "name": v.name, "version": v.version,
            "created_at": datetime.fromisoformat(v.created_at), "parent": f"{v.name}@{v.parent}" if v.parent else None,
            "num_clips": len(v.clip_ids), "num_shards": len(v.shards), "manifest_uri": manifest_uri,
            "config_digest": v.config_digest, "code_digest": v.code_digest}


def _write_once(store: ObjectStore, rel: str, data: bytes) -> None:
    """Create `rel` only if it does not exist. Local stores: atomic (hard link of a complete temp file,
    which fails if the name exists). Remote stores: check, then one PUT (a concurrent creator of the
    same version in that window wins last; the version numbers come from one registry in practice)."""
    if store.is_plain_local:
        dst = store.local_path(rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".tmp-{os.getpid()}-{dst.name}")
        tmp.write_bytes(data)
        try:
            os.link(tmp, dst)
        except FileExistsError as e:
            raise DatasetExists(f"{store.uri(rel)} already exists; versions are immutable") from e
        finally:
            tmp.unlink(missing_ok=True)
        return
    if store.exists(rel):
        raise DatasetExists(f"{store.uri(rel)} already exists; versions are immutable")
    store.write_bytes(rel, data)


__all__ = [
    "DatasetDiff", "DatasetError", "DatasetExists", "DatasetNotFound", "DatasetRegistry", "DatasetVersion",
    "Redaction", "ShardRef", "bump_version", "code_digest", "config_digest", "parse_ref", "parse_version",
    "shard_refs_from_manifest",
]
