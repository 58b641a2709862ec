"""The curation assets: raw video in, WebDataset shards out, one dynamic partition per upload batch.

Each asset calls one stage of wfm_platform.curation.pipeline, which does its own IO into the
object store ({root}/{asset}/{partition}/...); the asset records metadata and runs its checks.
"""


from collections import Counter

import dagster as dg
import numpy as np

from resources import CaptionerResource, CatalogResource, EmbedderResource, PipelineConfigResource, StorageResource
from resources.catalog import catalog_metadata
from resources.storage import retry_transient_storage
from wfm_platform import report
from wfm_platform.curation import pipeline as P

upload_batches = dg.DynamicPartitionsDefinition(name="upload_batches")

GROUP = "curation"
ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN


def _progress(context: dg.AssetExecutionContext, label: str):
    step = {"next": 0}

    def tick(done: int, total: int) -> None:
        if done >= step["next"] or done == total:
            context.log.info(f"{label}: {done}/{total}")
            step["next"] = done + max(1, total // 10)

    return tick


def _check(name: str, passed: bool, severity=ERROR, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=name, passed=bool(passed), severity=severity, metadata=metadata)


def _spec(name: str, asset: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking)


# --------------------------------------------------------------------------------------------
class RawVideosConfig(dg.Config):
    source_uri: str = ""  # empty: the batch's folder under the storage resource's uploads_uri


@dg.asset(
    partitions_def=upload_batches,
    group_name=GROUP,
    kinds={"video", "lancedb"},
    code_version="1",
    description="Every file of an upload batch, probed by content and registered in the catalog; "
    "unusable files keep a readable reason.",
    check_specs=[
        _spec("usable_videos_stored", "raw_videos", "every usable video is in the store with frames", True),
        _spec("some_usable", "raw_videos", "the batch has at least one usable video"),
    ],
)
@retry_transient_storage()  # a storage outage reruns the step later; bad input does not
def raw_videos(
    context: dg.AssetExecutionContext,
    config: RawVideosConfig,
    storage: StorageResource,
    catalog: CatalogResource,
    pipeline_config: PipelineConfigResource,
) -> dg.MaterializeResult:
    store, partition = storage.store(), context.partition_key
    source = config.source_uri or storage.uploads().uri(partition)
    m = P.stage_raw_videos(store, catalog.catalog(), partition, source, pipeline_config.load(),
                           _progress(context, "probed"))
    ok = [v for v in m["videos"] if v["status"] == "ok"]
    bad_store = [v["name"] for v in ok if not store.exists(store.rel(v["uri"])) or v["num_frames"] <= 0]
    rejected = [{"file": v["name"], "reason": v["reason"]} for v in m["videos"] if v["status"] != "ok"]
    return dg.MaterializeResult(
        metadata={
            "source_uri": dg.MetadataValue.url(source) if "://" in source else source,
            "manifest": dg.MetadataValue.path(store.uri(P.manifest_rel("raw_videos", partition))),
            "num_files": m["num_files"],
            "num_ok": m["num_ok"],
            "num_rejected": m["num_rejected"],
            "rejected": dg.MetadataValue.md(report.table_md(rejected, ["file", "reason"])),
            "codecs": dg.MetadataValue.md(report.counts_md(Counter(v["codec"] for v in ok), "codec")),
            "duration_s": dg.MetadataValue.md(report.histogram_md([v["duration_s"] for v in ok], label="seconds")),
            "height_px": dg.MetadataValue.md(report.histogram_md([v["height"] for v in ok], label="height")),
            "total_hours": round(sum(v["duration_s"] for v in ok) / 3600, 4),
            "num_sidecars": m.get("num_sidecars", 0),  # prompt sidecars of generated videos
            "orphan_sidecars": dg.MetadataValue.json(m.get("orphan_sidecars", [])),
            **catalog_metadata(catalog.catalog()),
        },
        check_results=[
            _check("usable_videos_stored", not bad_store, missing=str(bad_store[:20])),
            _check("some_usable", m["num_ok"] > 0, WARN, num_ok=m["num_ok"]),
        ],
    )


# --------------------------------------------------------------------------------------------
@dg.asset(
    partitions_def=upload_batches,
    group_name=GROUP,
    deps=[raw_videos],
    kinds={"video"},
    code_version="1",
    description="Shot-boundary detection (cuts, dissolves, fades), Cosmos clip rules (drop < 2 s, "
    "split > 60 s), H.264 transcode of every clip. Clip ids hash source content + frame range.",
    check_specs=[
        _spec("clips_decodable", "clips", "every clip file exists and decodes to its expected frame count", True),
        _spec("no_failed_videos", "clips", "no usable video failed shot detection or transcoding"),
    ],
)
@retry_transient_storage()  # a storage outage reruns the step later; bad input does not
def clips(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    catalog: CatalogResource,
    pipeline_config: PipelineConfigResource,
) -> dg.MaterializeResult:
    store, partition = storage.store(), context.partition_key
    m = P.stage_clips(store, catalog.catalog(), partition, pipeline_config.load(), _progress(context, "videos split"))
    broken = [c["clip_id"] for c in m["clips"] if not P.clip_complete(store, store.rel(c["uri"]), c["num_frames"])]
    thumbs = []
    for c in m["clips"][:12]:
        rel = store.rel(c["thumbnail_uri"])
        if store.exists(rel):
            thumbs.append(store.read_bytes(rel))
    md = {
        "manifest": dg.MetadataValue.path(store.uri(P.manifest_rel("clips", partition))),
        "num_clips": m["num_clips"],
        "num_videos": m["num_videos"],
        "shots_detected": m["stats"].get("shots", 0),
        "transitions": m["stats"].get("transitions", 0),
        "shots_dropped_short": m["stats"].get("shots_dropped_short", 0),
        "clip_duration_s": dg.MetadataValue.md(report.histogram_md([c["duration_s"] for c in m["clips"]],
                                                                   label="seconds")),
        "failed_videos": dg.MetadataValue.md(report.table_md(m["failed_videos"], ["source_uri", "reason"])),
        "videos_without_clips": dg.MetadataValue.md(
            report.table_md(m["videos_without_clips"], ["source_uri", "reason"])
        ),
        "shot_detection_s": m["timings"].get("shot_detection_s", 0.0),
        "transcode_s": m["timings"].get("transcode_s", 0.0),
    }
    if thumbs:
        md["thumbnails"] = dg.MetadataValue.md(_thumb_strip_md(thumbs))
    return dg.MaterializeResult(
        metadata=md,
        check_results=[
            _check("clips_decodable", not broken, broken=str(broken[:20])),
            _check("no_failed_videos", not m["failed_videos"], WARN, failed=len(m["failed_videos"])),
        ],
    )


def _thumb_strip_md(jpegs: list[bytes]) -> str:
    from wfm_platform.video.thumbs import jpeg_grid

    return report.image_md(jpeg_grid(jpegs, cols=4, height=90), alt="clip thumbnails")


# --------------------------------------------------------------------------------------------
@dg.asset(
    partitions_def=upload_batches,
    group_name=GROUP,
    deps=[clips],
    kinds={"opencv"},
    code_version="1",
    description="Per-clip scores: motion (DIS optical flow), visual quality (blur, exposure, "
    "blockiness), text overlay (RapidOCR PP-OCRv4), video type.",
    check_specs=[
        _spec("scores_complete", "clip_scores", "every clip scored with finite numbers", True),
        _spec("scores_schema", "clip_scores", "every clip has the same score fields (no schema drift)", True),
    ],
)
@retry_transient_storage()  # a storage outage reruns the step later; bad input does not
def clip_scores(
    context: dg.AssetExecutionContext, storage: StorageResource, pipeline_config: PipelineConfigResource
) -> dg.MaterializeResult:
    store, partition = storage.store(), context.partition_key
    m = P.stage_clip_scores(store, partition, pipeline_config.load(), _progress(context, "clips scored"))
    scores = list(m["scores"].values())
    nonfinite = [
        cid for cid, s in m["scores"].items()
        if any(isinstance(v, float) and not np.isfinite(v) for v in s.values())
    ]

    def col(k):
        return [s[k] for s in scores if isinstance(s.get(k), (int, float))]

    return dg.MaterializeResult(
        metadata={
            "manifest": dg.MetadataValue.path(store.uri(P.manifest_rel("clip_scores", partition))),
            "num_scored": m["num_scored"],
            "errors": dg.MetadataValue.md(report.table_md(m["errors"], ["clip_id", "reason"])),
            "video_types": dg.MetadataValue.md(report.counts_md(Counter(s.get("video_type") for s in scores), "type")),
            "motion_mean": dg.MetadataValue.md(report.histogram_md(col("motion_mean"), label="motion")),
            "text_area_ratio": dg.MetadataValue.md(report.histogram_md(col("text_area_ratio"), label="text area")),
            "blur_laplacian_var": dg.MetadataValue.md(report.histogram_md(col("blur_laplacian_var"), label="sharpness")),
            "seconds": m["seconds"],
        },
        check_results=[
            _check("scores_complete", not m["errors"] and not nonfinite,
                   errors=len(m["errors"]), nonfinite=str(nonfinite[:20])),
            _check("scores_schema", len({tuple(sorted(s)) for s in scores}) <= 1,
                   fields=str(sorted(scores[0]) if scores else [])),
        ],
    )


@dg.asset(
    partitions_def=upload_batches,
    group_name=GROUP,
    deps=[clip_scores],
    code_version="1",
    description="Clips that pass the thresholds in configs/filters.yaml; every rejection keeps its reasons.",
    check_specs=[_spec("pass_rate", "filtered_clips", "warns when fewer than 10% of clips pass")],
)
@retry_transient_storage()  # a storage outage reruns the step later; bad input does not
def filtered_clips(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    catalog: CatalogResource,
    pipeline_config: PipelineConfigResource,
) -> dg.MaterializeResult:
    store, partition = storage.store(), context.partition_key
    m = P.stage_filtered_clips(store, catalog.catalog(), partition, pipeline_config.load())
    total = m["num_passed"] + m["num_rejected"]
    rate = m["num_passed"] / total if total else 0.0
    rejected = [{"clip_id": c["clip_id"], "reasons": "; ".join(c["reasons"])} for c in m["rejected"]]
    return dg.MaterializeResult(
        metadata={
            "manifest": dg.MetadataValue.path(store.uri(P.manifest_rel("filtered_clips", partition))),
            "num_passed": m["num_passed"],
            "num_rejected": m["num_rejected"],
            "pass_rate": round(rate, 4),
            "rejection_reasons": dg.MetadataValue.md(report.counts_md(m["reason_counts"])),
            "rejected": dg.MetadataValue.md(report.table_md(rejected, ["clip_id", "reasons"])),
        },
        check_results=[_check("pass_rate", total == 0 or rate >= 0.1, WARN, pass_rate=rate)],
    )


# --------------------------------------------------------------------------------------------
@dg.asset(
    partitions_def=upload_batches,
    group_name=GROUP,
    deps=[filtered_clips],
    code_version="1",
    description="One caption per passed clip from the captioner resource (VLM endpoint or the "
    "offline signals captioner, named in each record).",
    check_specs=[_spec("captions_nonempty", "captions", "every passed clip has a non-empty caption", True)],
)
@retry_transient_storage()  # a storage outage reruns the step later; bad input does not
def captions(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    catalog: CatalogResource,
    captioner: CaptionerResource,
) -> dg.MaterializeResult:
    store, partition = storage.store(), context.partition_key
    m = P.stage_captions(store, catalog.catalog(), partition, captioner.captioner(), _progress(context, "captioned"))
    empty = [cid for cid, c in m["captions"].items() if not c["text"].strip()]
    sample = [{"clip_id": cid, "caption": c["text"]} for cid, c in list(m["captions"].items())[:8]]
    return dg.MaterializeResult(
        metadata={
            "manifest": dg.MetadataValue.path(store.uri(P.manifest_rel("captions", partition))),
            "captioner": m["captioner"],
            "num_captioned": m["num_captioned"],
            "num_from_prompt": m.get("num_from_prompt", 0),  # captions taken from generation prompts
            "errors": dg.MetadataValue.md(report.table_md(m["errors"], ["clip_id", "reason"])),
            "samples": dg.MetadataValue.md(report.table_md(sample, ["clip_id", "caption"])),
        },
        check_results=[
            _check("captions_nonempty", not empty and not m["errors"], empty=len(empty), errors=len(m["errors"]))
        ],
    )


@dg.asset(
    partitions_def=upload_batches,
    group_name=GROUP,
    deps=[filtered_clips],
    kinds={"lancedb"},
    code_version="1",
    description="One vector per passed clip from the embedder resource, stored in the catalog.",
    check_specs=[_spec("embeddings_valid", "clip_embeddings", "finite, unit-norm, one per passed clip", True)],
)
@retry_transient_storage()  # a storage outage reruns the step later; bad input does not
def clip_embeddings(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    catalog: CatalogResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    store, partition = storage.store(), context.partition_key
    m = P.stage_clip_embeddings(store, catalog.catalog(), partition, embedder.embedder(),
                                _progress(context, "embedded"))
    ids, vecs = P.load_embeddings(store, partition)
    norms = np.linalg.norm(vecs, axis=1) if len(ids) else np.ones(0)
    valid = bool(np.all(np.isfinite(vecs))) and bool(np.all(np.abs(norms - 1) < 1e-3)) and not m["errors"]
    return dg.MaterializeResult(
        metadata={
            "vectors": dg.MetadataValue.path(m["vectors_uri"]),
            "embedder": m["embedder"],
            "dim": m["dim"],
            "num_embedded": m["num_embedded"],
            "errors": dg.MetadataValue.md(report.table_md(m["errors"], ["clip_id", "reason"])),
            **catalog_metadata(catalog.catalog()),  # vector / full-text index state after this write
        },
        check_results=[_check("embeddings_valid", valid, errors=len(m["errors"]))],
    )


@dg.asset(
    partitions_def=upload_batches,
    group_name=GROUP,
    deps=[clip_embeddings],
    kinds={"lancedb"},
    code_version="1",
    description="SemDeDup: k-means, cosine within clusters, keep the highest resolution; "
    "incremental against every clip already in the catalog.",
    check_specs=[_spec("duplicate_rate", "deduplicated_clips", "warns when more than half the batch is duplicate")],
)
@retry_transient_storage()  # a storage outage reruns the step later; bad input does not
def deduplicated_clips(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    catalog: CatalogResource,
    pipeline_config: PipelineConfigResource,
) -> dg.MaterializeResult:
    store, partition = storage.store(), context.partition_key
    m = P.stage_deduplicated_clips(store, catalog.catalog(), partition, pipeline_config.load())
    return dg.MaterializeResult(
        metadata={
            "manifest": dg.MetadataValue.path(store.uri(P.manifest_rel("deduplicated_clips", partition))),
            "num_kept": m["num_kept"],
            "num_duplicates": m["num_duplicates"],
            "duplicate_rate": m["duplicate_rate"],
            "eps": m["eps"],
            "against_catalog": m["against_catalog"],
            "duplicates": dg.MetadataValue.md(
                report.table_md(m["duplicates"], ["clip_id", "duplicate_of", "similarity"])
            ),
        },
        check_results=[_check("duplicate_rate", m["duplicate_rate"] <= 0.5, WARN, rate=m["duplicate_rate"])],
    )


# --------------------------------------------------------------------------------------------
@dg.asset(
    partitions_def=upload_batches,
    group_name=GROUP,
    deps=[deduplicated_clips],
    kinds={"video"},
    code_version="1",
    description="Post-guard on every kept clip: faces blurred on every frame (tracked), clips with an "
    "unsafe sampled frame dropped; blocks and blurs recorded in the violation log. "
    "Configurable in configs/pipeline.yaml (guard:), on by default.",
    check_specs=[
        _spec("all_clips_guarded", "guarded_clips", "no clip failed the guard (it fails closed)", True),
    ],
)
@retry_transient_storage()  # a storage outage reruns the step later; bad input does not
def guarded_clips(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    catalog: CatalogResource,
    pipeline_config: PipelineConfigResource,
) -> dg.MaterializeResult:
    store, partition = storage.store(), context.partition_key
    guard = P.make_post_guard(pipeline_config.load())
    if guard is None:
        context.log.warning("face blur and unsafe check are disabled by configuration (guard: in pipeline.yaml)")
    m = P.stage_guarded_clips(store, catalog.catalog(), partition, guard, _progress(context, "guarded"))
    rejected = [{"clip_id": r["clip_id"], "reasons": "; ".join(r["reasons"])} for r in m["rejected"]]
    return dg.MaterializeResult(
        metadata={
            "manifest": dg.MetadataValue.path(store.uri(P.manifest_rel("guarded_clips", partition))),
            "enabled": m["enabled"],
            "num_clips": m["num_clips"],
            "num_rejected_unsafe": m["num_rejected"],
            "faces_blurred": m["faces_blurred"],
            "clips_with_faces": m["clips_with_faces"],
            "rejected": dg.MetadataValue.md(report.table_md(rejected, ["clip_id", "reasons"])),
            "errors": dg.MetadataValue.md(report.table_md(m["errors"], ["clip_id", "reason"])),
        },
        check_results=[_check("all_clips_guarded", not m["errors"], errors=len(m["errors"]))],
    )


# --------------------------------------------------------------------------------------------
@dg.asset(
    partitions_def=upload_batches,
    group_name=GROUP,
    deps=[guarded_clips, captions],
    kinds={"webdataset"},
    code_version="1",
    description="WebDataset tar shards (mp4 + json + txt caption) bucketed by resolution, aspect "
    "ratio and duration, with one manifest per shard set.",
    check_specs=[
        _spec("shards_readable", "webdataset_shards", "every shard is present, intact and complete", True),
        _spec("shards_nonempty", "webdataset_shards", "warns when the batch produced no samples"),
    ],
)
@retry_transient_storage()  # a storage outage reruns the step later; bad input does not
def webdataset_shards(
    context: dg.AssetExecutionContext, storage: StorageResource, pipeline_config: PipelineConfigResource
) -> dg.MaterializeResult:
    from wfm_platform.curation.shards import verify_shards

    store, partition = storage.store(), context.partition_key
    m = P.stage_webdataset_shards(store, partition, pipeline_config.load())
    problems = verify_shards(store, m)
    buckets = [{"bucket": k, "samples": b["num_samples"], "shards": len(b["shards"])}
               for k, b in sorted(m["buckets"].items())]
    return dg.MaterializeResult(
        metadata={
            "manifest": dg.MetadataValue.path(store.uri(P.manifest_rel("webdataset_shards", partition))),
            "num_samples": m["num_samples"],
            "num_shards": m["num_shards"],
            "buckets": dg.MetadataValue.md(report.table_md(buckets, ["bucket", "samples", "shards"])),
            "shard_uris": dg.MetadataValue.md("\n".join(f"- {s['uri']}" for s in m["shards"][:50]) or "_none_"),
        },
        check_results=[
            _check("shards_readable", not problems, problems=str(problems[:20])),
            _check("shards_nonempty", m["num_samples"] > 0, WARN, num_samples=m["num_samples"]),
        ],
    )


CURATION_ASSETS = [
    raw_videos,
    clips,
    clip_scores,
    filtered_clips,
    captions,
    clip_embeddings,
    deduplicated_clips,
    guarded_clips,
    webdataset_shards,
]
