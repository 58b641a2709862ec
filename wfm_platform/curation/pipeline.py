"""The curation stages as plain functions over an object store and a catalog.

Each stage reads the previous stage's manifest from `{root}/{asset}/{partition}/manifest.json`,
does its work item by item (one bad video or clip records a reason and the batch goes on), writes
its outputs and, last, its own manifest. The Dagster assets and the `wfm curate` command call
these functions; nothing here knows about Dagster.

Stage order (asset names): raw_videos -> clips -> clip_scores -> filtered_clips -> captions,
clip_embeddings -> deduplicated_clips -> guarded_clips (face blur, unsafe check) -> webdataset_shards.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..ids import clip_id as make_clip_id
from ..ids import file_digest, video_id
from ..storage.errors import TransientStorageError
from ..storage.objectstore import ObjectStore
from ..video import VideoError, probe
from ..video.encode import transcode_segments
from ..video.thumbs import jpeg_bytes
from .config import PipelineConfig

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)

READY_MARKER = "_READY"
_SKIP_NAMES = {READY_MARKER, ".DS_Store", "Thumbs.db"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def manifest_rel(asset: str, partition: str) -> str:
    return f"{asset}/{partition}/manifest.json"


def read_stage(store: ObjectStore, asset: str, partition: str) -> dict:
    rel = manifest_rel(asset, partition)
    if not store.exists(rel):
        raise FileNotFoundError(
            f"{asset} has not been materialized for partition {partition!r} ({store.uri(rel)} missing): "
            f"materialize it first"
        )
    return store.read_json(rel)


def _tick(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _reason(e: BaseException) -> str:
    if isinstance(e, VideoError):
        return e.reason
    return f"unexpected {type(e).__name__}: {e}"


def list_batch_files(source: ObjectStore, extensions: list[str] | None = None) -> list[str]:
    """Files of an upload batch, relative keys, sorted; markers, hidden and staging files skipped."""
    out = []
    for key in source.list(""):
        name = key.rsplit("/", 1)[-1]
        if name in _SKIP_NAMES or name.startswith("."):
            continue
        if extensions and Path(name).suffix.lower() not in {e.lower() for e in extensions}:
            continue
        out.append(key)
    return out


# --------------------------------------------------------------------------------------------
# raw_videos
# --------------------------------------------------------------------------------------------
def stage_raw_videos(
    store: ObjectStore,
    catalog,
    partition: str,
    source_uri: str,
    cfg: PipelineConfig,
    progress: Progress | None = None,
) -> dict:
    """Probe every file of the batch by content, copy usable videos into the store, register all."""
    from .uploads import read_sidecar, split_sidecars

    source = ObjectStore(source_uri)
    # [sidecars] `{stem}.json` next to a video is its metadata (prompt of a generated video), not a video
    files, sidecars, orphans = split_sidecars(list_batch_files(source))
    if cfg.video_extensions:
        files = [f for f in files if Path(f).suffix.lower() in {e.lower() for e in cfg.video_extensions}]
    rows: list[dict] = []
    seen: dict[str, str] = {}
    for i, rel in enumerate(files):
        src_uri = source.uri(rel)
        row: dict = {"source_uri": src_uri, "name": rel, "partition": partition, "ingested_at": now()}
        try:
            with source.local_copy(rel) as local:
                digest = file_digest(local)
                row.update(digest=digest, video_id=video_id(digest), size_bytes=local.stat().st_size)
                if digest in seen:
                    raise VideoError(f"same content as {seen[digest]} in this batch")
                info = probe(local, count_frames=True)
                row.update({k: v for k, v in info.to_dict().items() if k not in {"path"}})
                ext = Path(rel).suffix.lower() or ".bin"
                stored = f"raw_videos/{partition}/{row['video_id']}{ext}"
                if not (store.exists(stored) and store.size(stored) == row["size_bytes"]):
                    store.put_file(local, stored)
                row.update(uri=store.uri(stored), status="ok", reason="")
                seen[digest] = rel
            if rel in sidecars:  # [sidecars] a bad sidecar is reported; the video itself stays usable
                try:
                    row.update(sidecar=read_sidecar(source, sidecars[rel]), sidecar_uri=source.uri(sidecars[rel]))
                except (OSError, ValueError) as e:  # missing, unreadable, not JSON, wrong fields
                    row["sidecar_error"] = str(e)
                    log.warning("raw_videos %s: %s", rel, row["sidecar_error"])
        except TransientStorageError:
            raise  # a storage outage fails the step (Dagster retries it); it never drops data
        except Exception as e:  # one bad file never stops the batch
            row.update(status="rejected", reason=_reason(e))
            row.setdefault("video_id", "")
            log.warning("raw_videos %s: %s", rel, row["reason"])
        rows.append(row)
        _tick(progress, i + 1, len(files))
    if catalog is not None:
        catalog.upsert_videos([_video_catalog_row(r) for r in rows if r.get("video_id")])
        # [sidecars] generated videos say so in the catalog: generated, prompt, model, checkpoint, seed
        catalog.upsert_metadata([{"entity_type": "video", "entity_id": r["video_id"], "video_id": r["video_id"],
                                  "key": k, "value": v} for r in rows if r["status"] == "ok" and "sidecar" in r
                                 for k, v in {**r["sidecar"], "sidecar_uri": r["sidecar_uri"]}.items()])
    if orphans:
        log.warning("raw_videos %s: %d sidecar(s) without a video of the same name: %s", partition, len(orphans),
                    ", ".join(orphans[:5]))
    manifest = {
        "asset": "raw_videos",
        "partition": partition,
        "source_uri": source.root,
        "created_at": now(),
        "videos": rows,
        "num_files": len(rows),
        "num_ok": sum(r["status"] == "ok" for r in rows),
        "num_rejected": sum(r["status"] != "ok" for r in rows),
        "num_sidecars": sum("sidecar" in r for r in rows),  # [sidecars]
        "orphan_sidecars": orphans,
    }
    store.write_json(manifest_rel("raw_videos", partition), manifest)
    return manifest


_VIDEO_COLS = (
    "video_id source_uri partition digest container codec width height fps num_frames duration_s "
    "rotation has_audio size_bytes status reason ingested_at"
).split()


def _video_catalog_row(r: dict) -> dict:
    out = {k: r.get(k) for k in _VIDEO_COLS}
    for k in ("width", "height", "num_frames", "rotation", "size_bytes"):
        out[k] = int(out[k] or 0)
    for k in ("fps", "duration_s"):
        out[k] = float(out[k] or 0.0)
    out["has_audio"] = bool(out["has_audio"])
    for k in ("container", "codec", "digest", "reason"):
        out[k] = out[k] or ""
    return out


# --------------------------------------------------------------------------------------------
# clips
# --------------------------------------------------------------------------------------------
def stage_clips(
    store: ObjectStore,
    catalog,
    partition: str,
    cfg: PipelineConfig,
    progress: Progress | None = None,
) -> dict:
    """Shot detection, Cosmos clip rules, H.264 transcode of every clip (one decode pass a video)."""
    from .filters import FilterConfig, SampleCollector, sample_to_bytes
    from .shots import apply_clip_rules, detect_shots

    fcfg = FilterConfig.from_yaml(cfg.filters_path())
    raw = read_stage(store, "raw_videos", partition)
    videos = [v for v in raw["videos"] if v["status"] == "ok"]
    clips: list[dict] = []
    failed: list[dict] = []
    without: list[dict] = []  # processed fine, but every shot was too short to keep
    stats = Counter()
    timings = Counter()
    for i, v in enumerate(videos):
        try:
            with store.local_copy(store.rel(v["uri"])) as local:
                t0 = time.perf_counter()
                result = detect_shots(local)
                timings["shot_detection_s"] += time.perf_counter() - t0
                fps = result.fps or v["fps"]
                shots = apply_clip_rules(
                    result.shots, fps, cfg.clips.min_duration_s, cfg.clips.max_duration_s
                )
                if not shots:
                    longest = max((x.num_frames for x in result.shots), default=0) / fps
                    without.append({
                        "video_id": v["video_id"],
                        "source_uri": v["source_uri"],
                        "reason": f"no shot of at least {cfg.clips.min_duration_s:g} s "
                        f"({len(result.shots)} shot(s), longest {longest:.2f} s)",
                    })
                stats["shots"] += len(result.shots)
                stats["transitions"] += len(result.transitions)
                stats["shots_dropped_short"] += sum(
                    1 for s in result.shots if (s.end_frame - s.start_frame + 1) / fps < cfg.clips.min_duration_s
                )
                todo, rows = [], []
                for s in shots:
                    cid = make_clip_id(v["digest"], s.start_frame, s.end_frame)
                    rel = f"clips/{partition}/{cid}.mp4"
                    n = s.end_frame - s.start_frame + 1
                    rows.append(
                        {
                            "clip_id": cid,
                            "video_id": v["video_id"],
                            "partition": partition,
                            "source_uri": v["source_uri"],
                            "start_frame": s.start_frame,
                            "end_frame": s.end_frame,
                            "num_frames": n,
                            "fps": fps,
                            "duration_s": round(n / fps, 4),
                            "uri": store.uri(rel),
                            "thumbnail_uri": store.uri(f"clips/{partition}/thumbs/{cid}.jpg"),
                        }
                    )
                    # Idempotent resume: a committed clip (with its analysis frames) is kept.
                    if not (clip_complete(store, rel, n) and store.exists(_sample_rel(partition, cid))):
                        todo.append((s, rel))
                t0 = time.perf_counter()
                mids = {
                    (s.start_frame + s.end_frame) // 2: f"clips/{partition}/thumbs/{r['clip_id']}.jpg"
                    for s, r in zip(shots, rows)
                }
                thumbs: dict[str, np.ndarray] = {}
                # The transcode pass decodes every frame anyway: the filters' and embedder's frames
                # are sampled from it here, so no later stage decodes the clip again.
                collectors = [
                    (s.start_frame, s.end_frame, rel, SampleCollector.for_config(s.start_frame, s.end_frame, fps, fcfg))
                    for s, rel in todo
                ]
                starts = [c[0] for c in collectors]

                def grab(idx, img, _mids=mids, _thumbs=thumbs):
                    if idx in _mids:
                        _thumbs[_mids[idx]] = img
                    k = bisect.bisect_right(starts, idx) - 1
                    if k >= 0 and idx <= collectors[k][1]:
                        collectors[k][3].push(idx, img)

                with contextlib.ExitStack() as stack:
                    segs = []
                    for s, rel in todo:
                        # Local store: each clip is committed (renamed) as soon as its last frame is
                        # encoded, so a crash keeps finished clips. Remote: staged, uploaded at the end.
                        dst = store.local_path(rel) if store.is_plain_local else stack.enter_context(store.staged(rel))
                        segs.append((s.start_frame, s.end_frame, dst))
                    written = transcode_segments(
                        local,
                        segs,
                        fps=fps,
                        crf=cfg.clips.crf,
                        preset=cfg.clips.preset,
                        max_side=cfg.clips.max_side,
                        on_frame=grab,
                    )
                    short = [str(t) for t, n in written.items() if n == 0]
                    if short:
                        raise VideoError(f"source ended before {len(short)} clip(s) could be cut (truncated?)")
                timings["transcode_s"] += time.perf_counter() - t0
                for _, _, rel, col in collectors:
                    cid = rel.rsplit("/", 1)[-1][: -len(".mp4")]
                    store.write_bytes(_sample_rel(partition, cid), sample_to_bytes(col.sample))
                for rel_thumb, img in thumbs.items():
                    store.write_bytes(rel_thumb, jpeg_bytes(_thumb(img)))
                w, h = _clip_size(v["width"], v["height"], cfg.clips.max_side)
                for r in rows:
                    r.update(width=w, height=h, status="clipped")
                clips.extend(rows)
        except TransientStorageError:
            raise  # a storage outage fails the step (Dagster retries it); it never drops data
        except Exception as e:
            failed.append({"video_id": v["video_id"], "source_uri": v["source_uri"], "reason": _reason(e)})
            log.warning("clips %s: %s", v["source_uri"], _reason(e))
        _tick(progress, i + 1, len(videos))
    if catalog is not None and clips:
        catalog.upsert_clips([_clip_catalog_row(c) for c in clips])
        catalog.upsert_frames([_frame_row(c, (c["end_frame"] - c["start_frame"]) // 2, "thumbnail",
                                          uri=c["thumbnail_uri"]) for c in clips])
    manifest = {
        "asset": "clips",
        "partition": partition,
        "created_at": now(),
        "clips": clips,
        "failed_videos": failed,
        "videos_without_clips": without,
        "num_clips": len(clips),
        "num_videos": len(videos),
        "stats": dict(stats),
        "timings": {k: round(t, 3) for k, t in timings.items()},
        "config": cfg.clips.model_dump(),
    }
    store.write_json(manifest_rel("clips", partition), manifest)
    return manifest


def _sample_rel(partition: str, cid: str) -> str:
    """Analysis frames of a clip, sampled during its transcode (see filters.SampleCollector)."""
    return f"clips/{partition}/samples/{cid}.npz"


def load_sample(store: ObjectStore, partition: str, cid: str):
    """The clip's analysis frames, or None when they were not kept (then decode the clip)."""
    from .filters import sample_from_bytes

    rel = _sample_rel(partition, cid)
    return sample_from_bytes(store.read_bytes(rel)) if store.exists(rel) else None


def _clip_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Size of a transcoded clip: yuv420p needs even sides; max_side caps the longer one."""
    from ..video import fit_size

    if max_side and max(width, height) > max_side:
        return fit_size(width, height, max_side)
    return width - width % 2, height - height % 2


def _thumb(img: np.ndarray, height: int = 180) -> np.ndarray:
    import cv2

    w = max(1, round(img.shape[1] * height / img.shape[0]))
    return cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA)


def clip_complete(store: ObjectStore, rel: str, frames: int) -> bool:
    if not store.exists(rel):
        return False
    try:
        with store.local_copy(rel) as p:
            return probe(p, count_frames=True).num_frames == frames
    except TransientStorageError:
        raise  # a storage outage fails the step (Dagster retries it); it never drops data
    except Exception:
        return False


_CLIP_COLS = (
    "clip_id video_id partition start_frame end_frame fps duration_s width height uri status"
).split()


def _frame_row(c: dict, index: int, kind: str, **extra) -> dict:
    """A catalog `frames` row: frame `index` of clip c (counted in the clip) and why it was used."""
    return {"clip_id": c["clip_id"], "video_id": c.get("video_id"), "partition": c.get("partition"), "kind": kind,
            "frame_index": int(index), "source_frame": int(c["start_frame"]) + int(index),
            "timestamp_s": round(int(index) / float(c["fps"]), 4), **extra}


def _clip_catalog_row(c: dict, **extra) -> dict:
    out = {k: c.get(k) for k in _CLIP_COLS}
    out.update(extra)
    return out


@contextlib.contextmanager
def _clip_errors(stage: str, clip_id: str, errors: list[dict]):
    """Around one clip's work: an error is recorded in `errors` and logged, and the batch goes on; a
    storage outage (TransientStorageError) still fails the step (Dagster retries it), never drops data."""
    try:
        yield
    except TransientStorageError:
        raise
    except Exception as e:  # one bad clip never stops the batch
        errors.append({"clip_id": clip_id, "reason": _reason(e)})
        log.warning("%s %s: %s", stage, clip_id, _reason(e))


# --------------------------------------------------------------------------------------------
# clip_scores and filtered_clips
# --------------------------------------------------------------------------------------------
def stage_clip_scores(
    store: ObjectStore, partition: str, cfg: PipelineConfig, progress: Progress | None = None
) -> dict:
    from .filters import FilterConfig, get_ocr, score_clip, score_sample

    clips = read_stage(store, "clips", partition)["clips"]
    fcfg = FilterConfig.from_yaml(cfg.filters_path())
    ocr = get_ocr()
    scores: dict[str, dict] = {}
    errors: list[dict] = []
    t0 = time.perf_counter()
    for i, c in enumerate(clips):
        with _clip_errors("clip_scores", c["clip_id"], errors):
            sample = load_sample(store, partition, c["clip_id"])
            if sample is not None:
                scores[c["clip_id"]] = score_sample(sample, fcfg, ocr=ocr, width=c["width"], height=c["height"])
            else:
                with store.local_copy(store.rel(c["uri"])) as p:
                    scores[c["clip_id"]] = score_clip(p, fps=c["fps"], config=fcfg, ocr=ocr)
        _tick(progress, i + 1, len(clips))
    manifest = {
        "asset": "clip_scores",
        "partition": partition,
        "created_at": now(),
        "scores": scores,
        "errors": errors,
        "num_scored": len(scores),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    store.write_json(manifest_rel("clip_scores", partition), manifest)
    return manifest


def stage_filtered_clips(store: ObjectStore, catalog, partition: str, cfg: PipelineConfig) -> dict:
    from .filters import FilterConfig, apply_filters

    clips = read_stage(store, "clips", partition)["clips"]
    scored = read_stage(store, "clip_scores", partition)
    fcfg = FilterConfig.from_yaml(cfg.filters_path())
    errors = {e["clip_id"]: e["reason"] for e in scored["errors"]}
    passed, rejected = [], []
    for c in clips:
        cid = c["clip_id"]
        if cid not in scored["scores"]:
            rejected.append({**c, "reasons": [f"not scored: {errors.get(cid, 'missing scores')}"]})
            continue
        ok, reasons = apply_filters(scored["scores"][cid], fcfg)
        (passed if ok else rejected).append({**c, "reasons": reasons})
    if catalog is not None:
        import json

        rows = [
            _clip_catalog_row(
                c,
                status="passed" if c in passed else "rejected",
                reasons=json.dumps(c["reasons"]),
                scores=json.dumps(scored["scores"].get(c["clip_id"], {}), default=str),
            )
            for c in passed + rejected
        ]
        if rows:
            catalog.upsert_clips(rows)
            catalog.upsert_metadata([{"entity_type": "clip", "entity_id": c["clip_id"], "clip_id": c["clip_id"],
                                      "video_id": c["video_id"], "key": "video_type", "value": s["video_type"]}
                                     for c in clips if "video_type" in (s := scored["scores"].get(c["clip_id"], {}))])
    reason_counts = Counter(r.split(" ", 1)[0] for c in rejected for r in c["reasons"])
    manifest = {
        "asset": "filtered_clips",
        "partition": partition,
        "created_at": now(),
        "passed": passed,
        "rejected": rejected,
        "num_passed": len(passed),
        "num_rejected": len(rejected),
        "reason_counts": dict(reason_counts),
        "thresholds": fcfg.model_dump(mode="json"),
    }
    store.write_json(manifest_rel("filtered_clips", partition), manifest)
    return manifest


# --------------------------------------------------------------------------------------------
# captions
# --------------------------------------------------------------------------------------------
def stage_captions(
    store: ObjectStore, catalog, partition: str, captioner, progress: Progress | None = None
) -> dict:
    from .captions import prompt_caption

    passed = read_stage(store, "filtered_clips", partition)["passed"]
    scores = read_stage(store, "clip_scores", partition)["scores"]
    # [sidecars] a video uploaded with a prompt (generated videos) is captioned by that prompt
    prompts = {v["video_id"]: v["sidecar"]["prompt"] for v in read_stage(store, "raw_videos", partition)["videos"]
               if v["status"] == "ok" and (v.get("sidecar") or {}).get("prompt", "").strip()}
    captions: dict[str, dict] = {}
    errors: list[dict] = []
    for i, c in enumerate(passed):
        hints = dict(scores.get(c["clip_id"], {}), duration_s=c["duration_s"])
        with _clip_errors("captions", c["clip_id"], errors):
            if c.get("video_id") in prompts:
                cap = prompt_caption(prompts[c["video_id"]])
            else:
                with store.local_copy(store.rel(c["uri"])) as p:
                    cap = captioner.caption(p, fps=c["fps"], hints=hints)
            captions[c["clip_id"]] = {
                "text": cap.text,
                "captioner": cap.captioner,
                "frames_used": list(cap.frames_used),
                # [sidecars] "prompt" (the upload's sidecar) or "captioner"
                "source": (getattr(cap, "details", None) or {}).get("source", "captioner"),
            }
        _tick(progress, i + 1, len(passed))
    if catalog is not None and captions:
        # only the caption columns: the catalog merges by key, other columns stay as they are
        catalog.upsert_clips(
            [{"clip_id": cid, "caption": c["text"], "captioner": c["captioner"]} for cid, c in captions.items()]
        )
        by_id = {c["clip_id"]: c for c in passed}
        catalog.upsert_frames([_frame_row(by_id[cid], i, "caption") for cid, c in captions.items()
                               for i in c["frames_used"]])
    manifest = {
        "asset": "captions",
        "partition": partition,
        "created_at": now(),
        "captioner": getattr(captioner, "name", type(captioner).__name__),
        "captions": captions,
        "errors": errors,
        "num_captioned": len(captions),
        "num_from_prompt": sum(c["source"] == "prompt" for c in captions.values()),  # [sidecars]
    }
    store.write_json(manifest_rel("captions", partition), manifest)
    return manifest


# --------------------------------------------------------------------------------------------
# clip_embeddings and deduplicated_clips
# --------------------------------------------------------------------------------------------
def stage_clip_embeddings(
    store: ObjectStore, catalog, partition: str, embedder, progress: Progress | None = None
) -> dict:
    passed = read_stage(store, "filtered_clips", partition)["passed"]
    ids, vecs, errors = [], [], []
    for i, c in enumerate(passed):
        with _clip_errors("clip_embeddings", c["clip_id"], errors):
            sample = load_sample(store, partition, c["clip_id"])
            if sample is not None and sample.rgb:
                v = np.asarray(embedder.embed_frames([sample.rgb[k] for k in sorted(sample.rgb)]), np.float32)
            else:
                with store.local_copy(store.rel(c["uri"])) as p:
                    v = np.asarray(embedder.embed_clip(p), dtype=np.float32)
            if not np.all(np.isfinite(v)):
                raise ValueError("embedding has non-finite values")
            ids.append(c["clip_id"])
            vecs.append(v)
        _tick(progress, i + 1, len(passed))
    dim = int(getattr(embedder, "dim", vecs[0].shape[0] if vecs else 0))
    arr = np.stack(vecs) if vecs else np.zeros((0, dim), np.float32)
    rel = f"clip_embeddings/{partition}/embeddings.npz"
    import io

    buf = io.BytesIO()
    np.savez(buf, ids=np.array(ids, dtype=object).astype(str), vectors=arr)
    store.write_bytes(rel, buf.getvalue())
    if catalog is not None and ids:
        catalog.set_embeddings(ids, arr, embedder=getattr(embedder, "name", "unknown"))
    manifest = {
        "asset": "clip_embeddings",
        "partition": partition,
        "created_at": now(),
        "embedder": getattr(embedder, "name", type(embedder).__name__),
        "dim": dim,
        "num_embedded": len(ids),
        "vectors_uri": store.uri(rel),
        "errors": errors,
    }
    store.write_json(manifest_rel("clip_embeddings", partition), manifest)
    return manifest


def load_embeddings(store: ObjectStore, partition: str) -> tuple[list[str], np.ndarray]:
    import io

    m = read_stage(store, "clip_embeddings", partition)
    with np.load(io.BytesIO(store.read_bytes(store.rel(m["vectors_uri"])))) as z:
        return [str(x) for x in z["ids"]], z["vectors"].astype(np.float32)


def stage_deduplicated_clips(store: ObjectStore, catalog, partition: str, cfg: PipelineConfig) -> dict:
    from .dedup import dedup_against_catalog, duplicate_rate, semdedup

    passed = {c["clip_id"]: c for c in read_stage(store, "filtered_clips", partition)["passed"]}
    ids, vecs = load_embeddings(store, partition)
    res = [int(passed[i].get("width", 0)) * int(passed[i].get("height", 0)) for i in ids]
    if not ids:
        decisions = []
    elif cfg.dedup.against_catalog and catalog is not None:
        decisions = dedup_against_catalog(catalog, ids, vecs, res, eps=cfg.dedup.eps)
    else:
        decisions = semdedup(ids, vecs, res, eps=cfg.dedup.eps)
    kept = [d.clip_id for d in decisions if d.keep]
    dups = [
        {"clip_id": d.clip_id, "duplicate_of": d.duplicate_of, "similarity": d.similarity}
        for d in decisions
        if not d.keep
    ]
    manifest = {
        "asset": "deduplicated_clips",
        "partition": partition,
        "created_at": now(),
        "kept": kept,
        "duplicates": dups,
        "num_kept": len(kept),
        "num_duplicates": len(dups),
        "duplicate_rate": round(duplicate_rate(decisions), 4) if decisions else 0.0,
        "eps": cfg.dedup.eps,
        "against_catalog": bool(cfg.dedup.against_catalog and catalog is not None),
    }
    store.write_json(manifest_rel("deduplicated_clips", partition), manifest)
    return manifest


# --------------------------------------------------------------------------------------------
# guarded_clips
# --------------------------------------------------------------------------------------------
def make_post_guard(cfg: PipelineConfig):
    """The post-guard for curation, or None when both face blur and the unsafe check are off."""
    if not (cfg.guard.face_blur or cfg.guard.unsafe_check):
        return None
    from ..guardrails.postguard import PostGuard, PostGuardConfig

    path = cfg.guard_path()
    pcfg = PostGuardConfig.from_yaml(path) if path.exists() else PostGuardConfig()
    pcfg.faces.enabled = cfg.guard.face_blur
    pcfg.unsafe.enabled = cfg.guard.unsafe_check
    return PostGuard(pcfg)


def _guard_signature(guard) -> str:
    import hashlib

    if guard is None:
        return "disabled"
    return hashlib.sha256(guard.cfg.model_dump_json().encode()).hexdigest()[:16]


def stage_guarded_clips(
    store: ObjectStore, catalog, partition: str, guard, progress: Progress | None = None
) -> dict:
    """Face blur + unsafe check on every kept clip; blocks and blurs go to the violation log.

    guard=None (disabled by configuration) passes the clips through unchanged and says so.
    """
    import json
    import tempfile

    from ..guardrails.violations import ViolationLog

    passed = {c["clip_id"]: c for c in read_stage(store, "filtered_clips", partition)["passed"]}
    kept = read_stage(store, "deduplicated_clips", partition)["kept"]
    vlog = ViolationLog(store)
    clips, rejected, errors = [], [], []
    # A rerun with the same guard settings reuses what it already guarded (cheap, and identical bytes:
    # OpenCV's threaded face detection is not bit-reproducible, so re-guarding could change pixels).
    signature = _guard_signature(guard)
    previous = {}
    if store.exists(manifest_rel("guarded_clips", partition)):
        old = store.read_json(manifest_rel("guarded_clips", partition))
        if old.get("signature") == signature:
            previous = {c["clip_id"]: c for c in old["clips"] if c.get("guarded") and store.exists(store.rel(c["uri"]))}
    if guard is None:
        log.warning("guarded_clips %s: face blur and unsafe check disabled by configuration", partition)
    for i, cid in enumerate(kept):
        c = passed[cid]
        if guard is None:
            clips.append({"clip_id": cid, "uri": c["uri"], "source_clip_uri": c["uri"], "guarded": False,
                          "faces_blurred": None})
            continue
        rel = f"guarded_clips/{partition}/{cid}.mp4"
        if cid in previous and previous[cid]["source_clip_uri"] == c["uri"]:
            clips.append(previous[cid])
            continue
        # fail closed: a clip the guard could not check stays out of the shards
        with _clip_errors("guarded_clips", cid, errors):
            with store.local_copy(store.rel(c["uri"])) as src, tempfile.TemporaryDirectory() as tmp:
                out, verdict = guard.apply(src, Path(tmp) / f"{cid}.mp4")
                faces = int(verdict.scores.get("faces", 0))
                if verdict.allowed:
                    store.put_file(out, rel)
            if not verdict.allowed or faces:
                vlog.record(cid, verdict, source="curation")
            row = {"clip_id": cid, "source_clip_uri": c["uri"], "faces_blurred": faces,
                   "reasons": verdict.reasons, "scores": verdict.scores}
            if verdict.allowed:
                clips.append({**row, "uri": store.uri(rel), "guarded": True})
            else:
                rejected.append(row)
        _tick(progress, i + 1, len(kept))
    if catalog is not None and (clips or rejected):
        catalog.upsert_metadata([{"entity_type": "clip", "entity_id": r["clip_id"], "clip_id": r["clip_id"],
                                  "video_id": passed[r["clip_id"]].get("video_id"), "key": k, "value": r.get(k)}
                                 for r in clips + rejected for k in ("faces_blurred", "reasons") if k in r])
    if catalog is not None and (rejected or errors):
        catalog.upsert_clips(
            [{"clip_id": r["clip_id"], "status": "rejected", "reasons": json.dumps(r["reasons"])} for r in rejected]
            + [{"clip_id": e["clip_id"], "status": "rejected", "reasons": json.dumps([e["reason"]])} for e in errors]
        )
    manifest = {
        "asset": "guarded_clips",
        "partition": partition,
        "created_at": now(),
        "enabled": guard is not None,
        "signature": signature,
        "clips": clips,
        "rejected": rejected,
        "errors": errors,
        "num_clips": len(clips),
        "num_rejected": len(rejected),
        "faces_blurred": sum(c.get("faces_blurred") or 0 for c in clips),
        "clips_with_faces": sum(1 for c in clips if c.get("faces_blurred")),
    }
    store.write_json(manifest_rel("guarded_clips", partition), manifest)
    return manifest


# --------------------------------------------------------------------------------------------
# webdataset_shards
# --------------------------------------------------------------------------------------------
def stage_webdataset_shards(store: ObjectStore, partition: str, cfg: PipelineConfig) -> dict:
    from .shards import ShardSample, bucket_of, write_shards

    passed = {c["clip_id"]: c for c in read_stage(store, "filtered_clips", partition)["passed"]}
    guarded = {c["clip_id"]: c for c in read_stage(store, "guarded_clips", partition)["clips"]}
    caps = read_stage(store, "captions", partition)["captions"]
    scores = read_stage(store, "clip_scores", partition)["scores"]
    members = [cid for cid in guarded if cid in caps]
    with contextlib.ExitStack() as stack:
        samples = []
        for cid in members:
            c = passed[cid]
            local = stack.enter_context(store.local_copy(store.rel(guarded[cid]["uri"])))
            bucket = bucket_of(int(c["width"]), int(c["height"]), float(c["duration_s"]))
            meta = {
                k: c[k]
                for k in ("clip_id", "video_id", "source_uri", "start_frame", "end_frame", "fps",
                          "duration_s", "width", "height")
            }
            meta.update(
                partition=partition,
                bucket=bucket.key,
                captioner=caps[cid]["captioner"],
                faces_blurred=guarded[cid].get("faces_blurred"),
                scores={k: v for k, v in scores.get(cid, {}).items() if not isinstance(v, (list, dict))},
            )
            samples.append(ShardSample(clip_id=cid, mp4_path=str(local), metadata=meta, caption=caps[cid]["text"]))
        manifest = write_shards(
            samples,
            store,
            f"webdataset_shards/{partition}",
            max_samples=cfg.shards.max_samples,
            max_bytes=cfg.shards.max_bytes,
            shard_set=partition,
        )
    return manifest


# --------------------------------------------------------------------------------------------
# summary of a curated batch (the `wfm curate --json` contract)
# --------------------------------------------------------------------------------------------
def batch_summary(store: ObjectStore, partition: str) -> dict:
    """What happened to a batch, from its stage manifests: processed and rejected files (with reasons),
    clip counts through the filters, dedup and guard, and the shards."""
    raw = read_stage(store, "raw_videos", partition)
    cl = read_stage(store, "clips", partition)
    filt = read_stage(store, "filtered_clips", partition)
    dd = read_stage(store, "deduplicated_clips", partition)
    gd = read_stage(store, "guarded_clips", partition)
    sh = read_stage(store, "webdataset_shards", partition)
    failed = {f["source_uri"]: f["reason"] for f in cl["failed_videos"]}
    rejected = [{"path": v["source_uri"], "reason": v["reason"]} for v in raw["videos"] if v["status"] != "ok"]
    rejected += [{"path": u, "reason": r} for u, r in failed.items()]
    processed = [v["source_uri"] for v in raw["videos"] if v["status"] == "ok" and v["source_uri"] not in failed]
    return {
        "batch": partition,
        "processed": processed,
        "rejected": rejected,
        "no_clips": [{"path": w["source_uri"], "reason": w["reason"]} for w in cl.get("videos_without_clips", [])],
        "clips": cl["num_clips"],
        "clips_passed_filters": filt["num_passed"],
        "clips_rejected_by_filters": filt["num_rejected"],
        "filter_reasons": filt["reason_counts"],
        "duplicates": dd["num_duplicates"],
        "duplicate_rate": dd["duplicate_rate"],
        "faces_blurred": gd["faces_blurred"],
        "rejected_unsafe": gd["num_rejected"],
        "samples": sh["num_samples"],
        "shards": [s["uri"] for s in sh["shards"]],
        "manifest": store.uri(manifest_rel("webdataset_shards", partition)),
    }
