"""Generation assets: the synthetic-data loop.

generated_videos [prompt set]   one guarded Text2World video per prompt of configs/prompts/<set>.yaml,
                                written as a NEW upload batch `gen-<set>-<run>` (mp4s first, `_READY`
                                last) so the upload sensor sends it back through curation.
"""

import os
from pathlib import Path

import dagster as dg

from resources import StorageResource
from wfm_platform.models.generate import PROMPTS_DIR, prompt_set_names

prompt_sets = dg.StaticPartitionsDefinition(prompt_set_names(PROMPTS_DIR))
GROUP = "generation"


class GeneratedVideosConfig(dg.Config):
    model: str = ""  # checkpoint folder or preset; "" = $WFM_GENERATION_MODEL, else diffusion-tiny (untrained)
    max_prompts: int = 0  # 0: every prompt of the set
    seed: int = 0  # prompt i gets seed + i
    frames: int = 0  # 0: configs/inference.yaml
    width: int = 0
    height: int = 0
    fps: float = 0
    steps: int = 0  # 0: the model's default
    inference_config: str = ""  # YAML path; "" = configs/inference.yaml
    device: str = ""  # "" = the YAML's (auto)


@dg.asset(
    partitions_def=prompt_sets,
    group_name=GROUP,
    kinds={"pytorch"},
    code_version="1",
    tags={"wfm/accelerator": "gpu"},
    op_tags={"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}},
    description="Guarded Text2World videos for every prompt of a prompt set, landed as a new upload batch "
    "(_READY written last) that the upload sensor curates.",
    check_specs=[
        dg.AssetCheckSpec("batch_ready", asset="generated_videos", blocking=True,
                          description="_READY exists and was written after every video of the batch"),
        dg.AssetCheckSpec("videos_decodable", asset="generated_videos",
                          description="every written mp4 decodes with the asked frame count and size"),
    ],
)
def generated_videos(
    context: dg.AssetExecutionContext, config: GeneratedVideosConfig, storage: StorageResource
) -> dg.MaterializeResult:
    from wfm_platform import report
    from wfm_platform.curation.pipeline import READY_MARKER
    from wfm_platform.models.generate import GenerationError, generate_prompt_set, load_prompt_set
    from wfm_platform.video import iter_frames, probe
    from wfm_platform.video.thumbs import grid, png_bytes

    name = context.partition_key
    ps = load_prompt_set(name)
    model = config.model or os.environ.get("WFM_GENERATION_MODEL") or "diffusion-tiny"
    batch = f"gen-{name}-{context.run_id[:8]}"
    uploads, store = storage.uploads(), storage.store()
    overrides = {k: v for k, v in {"frames": config.frames, "width": config.width, "height": config.height,
                                   "fps": config.fps, "steps": config.steps, "device": config.device}.items() if v}

    def progress(done: int, total: int) -> None:
        context.log.info(f"{name}: {done}/{total} prompts")

    try:
        run = generate_prompt_set(ps, uploads, batch, model=model, max_prompts=config.max_prompts, seed=config.seed,
                                  config=config.inference_config or None, progress=progress, **overrides)
    except GenerationError as e:
        raise dg.Failure(str(e)) from e
    first = run.results[0]
    if first.get("untrained"):
        context.log.warning(f"{model}: untrained weights, the videos are noise (pipeline test only)")
    store.write_json(f"generated_videos/{name}/{batch}.json", run.model_dump())

    # checks: _READY last, every video decodable with the asked shape
    keys = [w["key"] for w in run.written]
    ready_key = f"{batch}/{READY_MARKER}"
    ready_ok = uploads.exists(ready_key)
    if ready_ok and uploads.is_local:
        ready_t = uploads.local_path(ready_key).stat().st_mtime_ns
        ready_ok = all(uploads.local_path(k).stat().st_mtime_ns <= ready_t for k in keys)
    bad, thumbs = [], []
    for k, res in zip(keys, run.results):
        with uploads.local_copy(k) as p:
            info = probe(p, count_frames=True)
            if (info.num_frames, info.width, info.height) != (res["frames"], res["width"] - res["width"] % 2,
                                                               res["height"] - res["height"] % 2):
                bad.append(f"{k}: {info.num_frames} frames {info.width}x{info.height}")
            thumbs.extend(img for _, img in iter_frames(Path(p), end=0))
    preview = report.image_md(png_bytes(grid(thumbs, cols=min(4, len(thumbs)), height=90)), "image/png",
                              "first frame of each generated video")
    return dg.MaterializeResult(
        metadata={
            "batch": batch,
            "uploads_uri": dg.MetadataValue.url(run.uploads_uri) if "://" in run.uploads_uri else run.uploads_uri,
            "model": model,
            "untrained": bool(first.get("untrained")),
            "device": first.get("device", ""),
            "num_prompts": len(run.written) + len(run.refused) + len(run.rejected),
            "num_written": len(run.written),
            "num_refused": len(run.refused),
            "num_rejected": len(run.rejected),
            "faces_blurred": sum(w["faces_blurred"] for w in run.written),
            "guards_enabled": all(r.get("guards_enabled", True) for r in run.results),
            "seconds": run.seconds,
            "seconds_per_video": round(run.seconds / len(run.written), 2),
            "frames": first["frames"],
            "resolution": f"{first['width']}x{first['height']}",
            "preview": dg.MetadataValue.md(preview),
        },
        check_results=[
            dg.AssetCheckResult(check_name="batch_ready", passed=ready_ok, metadata={"marker": ready_key}),
            dg.AssetCheckResult(check_name="videos_decodable", passed=not bad,
                                metadata={"problems": dg.MetadataValue.json(bad), "videos": len(keys)}),
        ],
    )


GENERATION_ASSETS = [generated_videos]
