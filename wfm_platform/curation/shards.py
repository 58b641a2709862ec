"""WebDataset shards: tar files of (mp4, json metadata, caption), bucketed, with one manifest.

Layout under `prefix` in an object store:

    {prefix}/{resolution}/{aspect}/{duration}/shard-000000.tar   e.g. 720p/16x9/lt5s/shard-000000.tar
    {prefix}/manifest.json                                        written last

Each sample is three tar members named "<clip_id>.mp4", "<clip_id>.json", "<clip_id>.txt", which is
what `webdataset.WebDataset` groups into one sample with keys "mp4", "json", "txt".

Guarantees:
- Nothing half-written is ever visible: every tar and the manifest are staged and committed whole
  (`ObjectStore.staged`). A failed run leaves at most some complete shards and no new manifest.
- Determinism: samples are sorted by clip_id inside each bucket, shard names are counters, tar member
  mtimes/owners/modes are fixed and the JSON is serialized with sorted keys, so identical input
  gives byte-identical shards (same sha256) and a rerun overwrites the same names.
- No duplicates: a clip_id given twice is written once; stale shards that a previous run of the same
  prefix wrote and this run does not are deleted after the new manifest is committed.

Known limit: shard names are fixed by the layout, so while a rerun with *different* input is in
progress, the previous manifest can point at a shard that was already replaced (each shard is still
whole; `verify_shards` reports it as a sha256 mismatch).
"""

from __future__ import annotations

import json
import logging
import math
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import webdataset

from ..ids import file_digest
from ..storage.objectstore import ObjectStore
from ..video import VideoError, probe

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
MEMBER_EXTS = ("json", "mp4", "txt")  # TarWriter writes a sample's members in sorted key order

# Fixed tar member attributes: the same input must give the same bytes on every machine and run.
TAR_MTIME = 0
TAR_USER = "wfm"
TAR_MODE = 0o444

# Resolution buckets by the SHORT side, so a 1080x1920 portrait clip counts as 1080p.
RESOLUTIONS = ("lt720p", "720p", "1080p_plus")
_RES_EDGES = ((1080, "1080p_plus"), (720, "720p"))

# The five training aspect ratios (width / height). A clip goes to the nearest one by |log ratio|,
# which treats 2x too wide and 2x too tall alike; so 21:9 (2.33) lands in 16:9 (1.78) and a
# 176x144 QCIF frame (1.22) in 4:3.
ASPECTS: dict[str, float] = {"9:16": 9 / 16, "3:4": 3 / 4, "1:1": 1.0, "4:3": 4 / 3, "16:9": 16 / 9}

# Duration buckets (lower edge inclusive). Why these edges: a WFM training window is ~5 s
# (Cosmos: 121 frames at 24 fps), so "lt5s" clips cannot fill one window, "5to10s" fill one,
# "10to30s" give several windows, and "30s_plus" are the rare long shots left after shot splitting.
DURATIONS = ("lt5s", "5to10s", "10to30s", "30s_plus")
_DUR_EDGES = ((30.0, "30s_plus"), (10.0, "10to30s"), (5.0, "5to10s"))
# Container durations are rounded/timebase-quantized: 124.99.../25 fps must still read as 5 s.
_DUR_EPS = 1e-3

_CLIP_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")  # no "." (webdataset splits keys at the first dot), no "/"
_SHARD_RE = re.compile(r"^(lt720p|720p|1080p_plus)/\d+x\d+/[A-Za-z0-9_]+/shard-\d{6}\.tar$")

# Tar layout constants, for estimating a shard's size before writing it.
_BLOCK = 512
_RECORD = 20 * _BLOCK


@dataclass(frozen=True)
class Bucket:
    resolution: str  # "lt720p" | "720p" | "1080p_plus"
    aspect: str  # "9:16" | "3:4" | "1:1" | "4:3" | "16:9"
    duration: str  # "lt5s" | "5to10s" | "10to30s" | "30s_plus"

    @property
    def key(self) -> str:
        """Path-safe key, e.g. "720p/16x9/5to10s"."""
        return f"{self.resolution}/{self.aspect.replace(':', 'x')}/{self.duration}"


def _same(a, b) -> bool:
    """Equal, or equal numbers up to rounding (durations are rounded differently upstream)."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-2 * max(1.0, abs(float(b)))
    return a == b


def bucket_of(width: int, height: int, duration_s: float) -> Bucket:
    """The bucket of a clip of display size width x height lasting duration_s seconds."""
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid frame size {width}x{height}")
    if not math.isfinite(duration_s) or duration_s < 0:
        raise ValueError(f"invalid duration {duration_s!r} s")
    short = min(width, height)
    resolution = next((name for edge, name in _RES_EDGES if short >= edge), "lt720p")
    log_ratio = math.log(width / height)
    # Ties (exact midpoints) go to the first in ASPECTS order; min() is stable, so this is deterministic.
    aspect = min(ASPECTS, key=lambda a: abs(log_ratio - math.log(ASPECTS[a])))
    duration = next((name for edge, name in _DUR_EDGES if duration_s >= edge - _DUR_EPS), "lt5s")
    return Bucket(resolution, aspect, duration)


@dataclass
class ShardSample:
    clip_id: str
    mp4_path: str  # local path of an H.264 mp4
    metadata: dict = field(default_factory=dict)
    caption: str = ""


@dataclass
class _Prepared:
    """A sample checked and ready to write: bucket known, json already serialized."""

    clip_id: str
    mp4_path: Path
    bucket: Bucket
    json_bytes: bytes
    caption_bytes: bytes
    mp4_size: int

    def tar_bytes(self) -> int:
        """Bytes these members take in a tar: one header block each plus data padded to blocks."""
        sizes = (len(self.json_bytes), self.mp4_size, len(self.caption_bytes))
        return sum(_BLOCK + -(-s // _BLOCK) * _BLOCK for s in sizes)


def _json_default(obj):
    # numpy scalars and arrays show up in metadata from filters and scores.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON serializable")


def _prepare(sample: ShardSample) -> _Prepared:
    if not isinstance(sample.clip_id, str) or not _CLIP_ID_RE.match(sample.clip_id):
        raise ValueError(
            f"clip_id {sample.clip_id!r} must be letters, digits, '_' or '-' (it names tar members)"
        )
    path = Path(sample.mp4_path)
    try:
        info = probe(path)
    except VideoError as e:
        raise VideoError(f"clip {sample.clip_id}: {e.reason}", path) from e
    except FileNotFoundError as e:
        raise VideoError(f"clip {sample.clip_id}: file not found", path) from e
    if info.duration_s <= 0:
        raise VideoError(f"clip {sample.clip_id}: unknown duration", path)
    bucket = bucket_of(info.width, info.height, info.duration_s)
    # The facts the bucket was derived from travel with the sample, so readers can filter on them.
    facts = {
        "clip_id": sample.clip_id,
        "bucket": bucket.key,
        "width": info.width,
        "height": info.height,
        "fps": round(info.fps, 4),
        "num_frames": info.num_frames,
        "duration_s": info.duration_s,
    }
    meta = dict(sample.metadata or {})
    for k, v in facts.items():
        if k in meta and not _same(meta[k], v):
            log.warning(
                "clip %s: metadata %s=%r replaced by the probed value %r", sample.clip_id, k, meta[k], v
            )
    meta.update(facts)
    try:
        json_bytes = json.dumps(meta, sort_keys=True, ensure_ascii=False, default=_json_default).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"clip {sample.clip_id}: {e}") from e
    caption = sample.caption if sample.caption is not None else ""
    if not isinstance(caption, str):
        raise ValueError(f"clip {sample.clip_id}: caption must be str, got {type(caption).__name__}")
    return _Prepared(sample.clip_id, path, bucket, json_bytes, caption.encode(), info.size_bytes)


def _collect(samples: Iterable[ShardSample]) -> dict[Bucket, list[_Prepared]]:
    """Check every sample before writing anything; drop repeated clip_ids; group and sort by bucket."""
    seen: dict[str, _Prepared] = {}
    for sample in samples:
        prepared = _prepare(sample)
        previous = seen.get(prepared.clip_id)
        if previous is None:
            seen[prepared.clip_id] = prepared
            continue
        same = (
            previous.json_bytes == prepared.json_bytes
            and previous.caption_bytes == prepared.caption_bytes
            and previous.mp4_size == prepared.mp4_size
        )
        if not same:
            # clip ids are content hashes: two different clips with one id is an upstream bug.
            raise ValueError(f"clip_id {prepared.clip_id} given twice with different content")
        log.info("clip %s given twice; written once", prepared.clip_id)
    by_bucket: dict[Bucket, list[_Prepared]] = {}
    for p in seen.values():
        by_bucket.setdefault(p.bucket, []).append(p)
    ordered = sorted(by_bucket.items(), key=lambda kv: kv[0].key)
    return {b: sorted(ps, key=lambda p: p.clip_id) for b, ps in ordered}


def _split(samples: list[_Prepared], max_samples: int, max_bytes: int) -> list[list[_Prepared]]:
    """Cut a sorted bucket into shards of at most max_samples and (estimated) max_bytes.

    A single sample larger than max_bytes gets a shard of its own rather than being dropped.
    """
    shards: list[list[_Prepared]] = []
    current: list[_Prepared] = []
    current_bytes = 2 * _BLOCK  # end-of-archive marker
    for p in samples:
        size = p.tar_bytes()
        if current and (len(current) >= max_samples or current_bytes + size > max_bytes):
            shards.append(current)
            current, current_bytes = [], 2 * _BLOCK
        if not current and current_bytes + size > max_bytes:
            log.warning(
                "clip %s (%d bytes) alone exceeds max_bytes=%d; it gets its own shard",
                p.clip_id,
                size,
                max_bytes,
            )
        current.append(p)
        current_bytes += size
    if current:
        shards.append(current)
    return shards


def _read_mp4(path: Path) -> bytes:
    return path.read_bytes()


def _write_tar(dst: Path, samples: Sequence[_Prepared]) -> None:
    with open(dst, "wb") as f:
        with webdataset.TarWriter(
            f, user=TAR_USER, group=TAR_USER, mode=TAR_MODE, mtime=TAR_MTIME, encoder=False
        ) as sink:
            for p in samples:
                mp4 = _read_mp4(p.mp4_path)
                sink.write({"__key__": p.clip_id, "json": p.json_bytes, "mp4": mp4, "txt": p.caption_bytes})


def _shard_rels(store: ObjectStore, prefix: str) -> list[str]:
    """Shard files currently under prefix (relative to prefix), by name pattern."""
    prefix = prefix.strip("/")
    out = []
    for key in store.list(prefix):
        rel = key[len(prefix) :].lstrip("/") if prefix else key
        if _SHARD_RE.match(rel):
            out.append(rel)
    return out


def write_shards(
    samples: Iterable[ShardSample],
    store: ObjectStore,
    prefix: str,
    *,
    max_samples: int = 256,
    max_bytes: int = 1 << 30,
    shard_set: str = "",
) -> dict:
    """Write bucketed WebDataset shards and their manifest under prefix; returns the manifest.

    All samples are probed and checked before the first byte is written, so a bad clip or a failing
    iterator leaves the store untouched. Raises VideoError for an unusable mp4 and ValueError for a
    bad clip_id, caption or metadata.
    """
    if max_samples < 1:
        raise ValueError("max_samples must be >= 1")
    if max_bytes < 1:
        raise ValueError("max_bytes must be >= 1")
    prefix = prefix.strip("/")
    buckets = _collect(samples)

    manifest_buckets: dict[str, dict] = {}
    shard_entries: list[dict] = []
    written: set[str] = set()
    for bucket, members in buckets.items():
        uris = []
        for i, shard in enumerate(_split(members, max_samples, max_bytes)):
            rel_in_prefix = f"{bucket.key}/shard-{i:06d}.tar"
            rel = f"{prefix}/{rel_in_prefix}" if prefix else rel_in_prefix
            with store.staged(rel) as tmp:
                _write_tar(tmp, shard)
                # Hash the staged file: it is local even when the store is remote.
                sha, nbytes = file_digest(tmp), tmp.stat().st_size
            uri = store.uri(rel)
            written.add(rel_in_prefix)
            uris.append(uri)
            shard_entries.append(
                {
                    "uri": uri,
                    "bucket": bucket.key,
                    "num_samples": len(shard),
                    "bytes": nbytes,
                    "sha256": sha,
                    "clip_ids": [p.clip_id for p in shard],
                }
            )
            log.info("wrote %s (%d samples, %d bytes)", uri, len(shard), nbytes)
        manifest_buckets[bucket.key] = {
            "resolution": bucket.resolution,
            "aspect": bucket.aspect,
            "duration": bucket.duration,
            "num_samples": len(members),
            "shards": uris,
        }

    manifest = {
        "version": MANIFEST_VERSION,
        "shard_set": shard_set or prefix,
        "prefix": store.uri(prefix),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "num_samples": sum(e["num_samples"] for e in shard_entries),
        "num_shards": len(shard_entries),
        "buckets": manifest_buckets,
        "shards": shard_entries,
    }
    store.write_json(f"{prefix}/{MANIFEST_NAME}" if prefix else MANIFEST_NAME, manifest)

    # Only now, with the new manifest committed, can shards it does not list go away.
    for rel_in_prefix in _shard_rels(store, prefix):
        if rel_in_prefix not in written:
            stale = f"{prefix}/{rel_in_prefix}" if prefix else rel_in_prefix
            log.info("deleting stale shard %s", store.uri(stale))
            store.delete(stale)
    return manifest


def read_manifest(store: ObjectStore, prefix: str) -> dict:
    """The manifest of the shard set under prefix; FileNotFoundError / ValueError with a readable reason."""
    prefix = prefix.strip("/")
    rel = f"{prefix}/{MANIFEST_NAME}" if prefix else MANIFEST_NAME
    if not store.exists(rel):
        raise FileNotFoundError(f"no shard manifest at {store.uri(rel)}")
    try:
        manifest = store.read_json(rel)
    except json.JSONDecodeError as e:
        raise ValueError(f"manifest {store.uri(rel)} is not valid JSON: {e}") from e
    required = ("shard_set", "num_samples", "num_shards", "buckets", "shards")
    missing = [k for k in required if k not in manifest]
    if missing:
        raise ValueError(f"manifest {store.uri(rel)} lacks {', '.join(missing)}")
    return manifest


def _check_tar(path: Path, name: str, entry: dict) -> list[str]:
    """Problems inside one shard file: unreadable tar, missing/extra members, bad json, count mismatch."""
    problems: list[str] = []
    members: dict[str, dict[str, int]] = {}  # clip_id -> ext -> size
    jsons: dict[str, bytes] = {}
    mp4_heads: dict[str, bytes] = {}
    file_size = path.stat().st_size
    try:
        with tarfile.open(path, mode="r:") as tar:
            for ti in tar:
                if not ti.isfile():
                    continue
                # tarfile treats a cut-off header as the end of the archive; catch cut-off data here.
                if ti.offset_data + ti.size > file_size:
                    problems.append(f"{name}: unreadable tar (member {ti.name} is truncated)")
                    break
                base, _, ext = Path(ti.name).name.partition(".")
                members.setdefault(base, {})[ext] = ti.size
                if ext in ("json", "mp4"):
                    f = tar.extractfile(ti)
                    data = f.read() if ext == "json" else f.read(12)
                    (jsons if ext == "json" else mp4_heads)[base] = data
    except (tarfile.TarError, EOFError, OSError) as e:
        problems.append(f"{name}: unreadable tar ({e})")
        return problems
    expected = list(entry.get("clip_ids", []))
    for clip in expected:
        got = members.get(clip, {})
        for ext in MEMBER_EXTS:
            if ext not in got:
                problems.append(f"{name}: sample {clip} has no .{ext} member")
        if "json" in got:
            try:
                json.loads(jsons[clip])
            except ValueError:
                problems.append(f"{name}: {clip}.json is not valid JSON")
        # Every mp4 starts with an "ftyp" box: a cheap check that the bytes are a video at all.
        if "mp4" in got and mp4_heads.get(clip, b"")[4:8] != b"ftyp":
            problems.append(f"{name}: {clip}.mp4 is not an mp4 file")
    extra = sorted(set(members) - set(expected))
    if extra:
        problems.append(f"{name}: samples not in the manifest: {', '.join(extra[:5])}")
    if len(members) != entry.get("num_samples"):
        said = entry.get("num_samples")
        problems.append(f"{name}: {len(members)} samples in the tar, manifest says {said}")
    return problems


def verify_shards(store: ObjectStore, manifest: dict) -> list[str]:
    """Readable problems with a shard set ([] when healthy): missing shard, size or sha256 mismatch,
    unreadable tar, a sample missing its .mp4/.json/.txt, sample count mismatch."""
    problems: list[str] = []
    shards = manifest.get("shards", [])
    if manifest.get("num_shards") != len(shards):
        problems.append(f"manifest: num_shards={manifest.get('num_shards')} but {len(shards)} shards listed")
    total = sum(int(e.get("num_samples", 0)) for e in shards)
    if manifest.get("num_samples") != total:
        problems.append(f"manifest: num_samples={manifest.get('num_samples')} but shards hold {total}")
    for key, b in manifest.get("buckets", {}).items():
        in_bucket = [e for e in shards if e.get("bucket") == key]
        if b.get("num_samples") != sum(e.get("num_samples", 0) for e in in_bucket):
            problems.append(f"manifest: bucket {key} num_samples does not match its shards")
    for entry in shards:
        uri = entry.get("uri", "")
        try:
            rel = store.rel(uri)
        except ValueError:
            problems.append(f"{uri}: not under the store root {store.root}")
            continue
        if not store.exists(rel):
            problems.append(f"{uri}: missing shard")
            continue
        with store.local_copy(rel) as local:
            size = local.stat().st_size
            if size != entry.get("bytes"):
                problems.append(f"{uri}: {size} bytes, manifest says {entry.get('bytes')}")
            if file_digest(local) != entry.get("sha256"):
                problems.append(f"{uri}: sha256 mismatch")
            problems.extend(_check_tar(local, uri, entry))
    return problems


def open_dataset(
    urls_or_manifest: dict | str | Sequence[str],
    *,
    store: ObjectStore | None = None,
    buckets: Iterable[str] | None = None,
    shardshuffle: int | bool = False,
    **kwargs,
) -> webdataset.WebDataset:
    """A `webdataset.WebDataset` over a manifest (dict), one shard URL, or a list of them.

    Samples are raw: {"__key__": clip_id, "mp4": bytes, "json": bytes, "txt": bytes}; add `.decode()`
    or `.map()` as needed. `buckets` keeps only those bucket keys of a manifest. file:// URIs and
    local paths open directly; for s3://, gs://, az:// or an encrypted store pass the `store`, which then
    opens the shards (its credentials, retries and decryption).
    """
    if isinstance(urls_or_manifest, dict):
        wanted = set(buckets) if buckets is not None else None
        entries = urls_or_manifest.get("shards", [])
        urls = [e["uri"] for e in entries if wanted is None or e["bucket"] in wanted]
    elif isinstance(urls_or_manifest, (str, Path)):
        urls = [str(urls_or_manifest)]
    else:
        urls = [str(u) for u in urls_or_manifest]
    if not urls:
        raise ValueError("no shards to read (empty manifest or bucket filter)")
    if store is not None and not store.is_plain_local:
        # webdataset would shell out to CLIs (gsutil, ...) for cloud URLs and cannot decrypt: let the
        # store open them, with its credentials, retries and decryption.
        urls = store.webdataset_urls(urls)
    kwargs.setdefault("empty_check", False)
    return webdataset.WebDataset(urls, shardshuffle=shardshuffle, **kwargs)
