"""Generation assets: the synthetic-data loop.

generated_videos [prompt set]   one guarded Text2World video per prompt of configs/prompts/<set>.yaml,
                                written as a NEW upload batch `gen-<set>-<run>` (each mp4 with a sidecar
                                `{stem}.json` holding its prompt, model, checkpoint and seed; `_READY` last)
                                so the upload sensor sends it back through curation, where the prompt
                                becomes the clip's caption.

Lineage: generated_videos depends on diffusion_wfm and autoregressive_wfm and, by default, generates with
the LATEST trained checkpoint of the configured family / preset (`{asset}/{preset}/latest.json` in the
store, read by wfm_platform.models.checkpoint.latest_checkpoint). Untrained weights only with
`allow_untrained: true` (pipeline tests); `model` names a checkpoint folder explicitly.
"""

import contextlib
import os
from pathlib import Path
from typing import Literal

import dagster as dg

from assets.models import autoregressive_wfm, diffusion_wfm
from resources import StorageResource
from wfm_platform.models.checkpoint import (
    FAMILY_ASSET,
    CheckpointError,
    NoTrainedCheckpoint,
    latest_checkpoint,
)
from wfm_platform.models.generate import PROMPTS_DIR, prompt_set_names

prompt_sets = dg.StaticPartitionsDefinition(prompt_set_names(PROMPTS_DIR))
GROUP = "generation"


DEFAULT_PRESET = {"diffusion": "diffusion-tiny", "autoregressive": "ar-tiny"}


class GeneratedVideosConfig(dg.Config):
    family: Literal["diffusion", "autoregressive"] = "diffusion"  # which world-model asset to generate with
    preset: str = ""  # "" = diffusion-tiny / ar-tiny; the latest trained checkpoint of it is used
    model: str = ""  # a checkpoint folder, overriding the latest one; "" = $WFM_GENERATION_MODEL, else latest
    allow_untrained: bool = False  # no trained checkpoint: use the untrained preset (pipeline tests only)
    max_prompts: int = 0  # 0: every prompt of the set
    seed: int = 0  # prompt i gets seed + i
    frames: int = 0  # 0: configs/inference.yaml
    width: int = 0
    height: int = 0
    fps: float = 0
    steps: int = 0  # 0: the model's default
    inference_config: str = ""  # YAML path; "" = configs/inference.yaml
    device: str = ""  # "" = the YAML's (auto)


def resolve_model(store, config: GeneratedVideosConfig, stack: contextlib.ExitStack, log) -> dict:
    """What to generate with: {"spec" (for load_world_model), "preset", "checkpoint", "version", "dataset",
    "untrained"}. dg.Failure saying what to do when there is no trained checkpoint and untrained is not allowed."""
    from wfm_platform.models import presets

    explicit = config.model or os.environ.get("WFM_GENERATION_MODEL", "")
    if explicit:
        if Path(explicit).exists():
            return {"spec": explicit, "preset": "", "checkpoint": explicit, "version": "", "dataset": "",
                    "untrained": False}
        if not config.allow_untrained:
            raise dg.Failure(f"model {explicit!r} is not a checkpoint folder; a preset name means untrained "
                             "weights: give a trained checkpoint folder, leave model empty to use the latest "
                             "trained one, or set allow_untrained: true for a pipeline test")
        return {"spec": explicit, "preset": explicit, "checkpoint": "", "version": "", "dataset": "",
                "untrained": True}
    asset, preset = FAMILY_ASSET[config.family], config.preset or DEFAULT_PRESET[config.family]
    try:
        family_of, _ = presets.load_preset(preset)
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise dg.Failure(f"unknown preset {preset!r} ({e}); see `wfm models list`") from e
    if family_of != config.family:
        raise dg.Failure(f"preset {preset} is in the {family_of} family; set family: {family_of}")
    try:
        # a local store gives the file itself; a remote one a temp download kept for the whole run
        latest = stack.enter_context(latest_checkpoint(store, asset, preset))
    except NoTrainedCheckpoint as e:
        if not config.allow_untrained:
            raise dg.Failure(f"{e}; set allow_untrained: true only to test the pipeline") from e
    except CheckpointError as e:  # a pointer to a folder that is gone or unreadable: never fall back
        raise dg.Failure(str(e)) from e
    else:
        p = latest.pointer
        return {"spec": str(latest.model_path), "preset": preset, "checkpoint": p.uri, "version": p.version,
                "dataset": p.dataset, "untrained": False}
    log.warning(f"no trained {preset} checkpoint: generating with UNTRAINED weights (allow_untrained)")
    return {"spec": preset, "preset": preset, "checkpoint": "", "version": "", "dataset": "", "untrained": True}


@dg.asset(
    partitions_def=prompt_sets,
    deps=[diffusion_wfm, autoregressive_wfm],  # the one read is config.family's (recorded in metadata)
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
        dg.AssetCheckSpec("sidecars_match", asset="generated_videos", blocking=True,
                          description="every written mp4 has a {stem}.json sidecar with its prompt and seed"),
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
    batch = f"gen-{name}-{context.run_id[:8]}"
    uploads, store = storage.uploads(), storage.store()
    overrides = {k: v for k, v in {"frames": config.frames, "width": config.width, "height": config.height,
                                   "fps": config.fps, "steps": config.steps, "device": config.device}.items() if v}

    def progress(done: int, total: int) -> None:
        context.log.info(f"{name}: {done}/{total} prompts")

    with contextlib.ExitStack() as stack:
        src = resolve_model(store, config, stack, context.log)
        model = src["spec"]
        context.log.info(f"generating with {src['checkpoint'] or model} (trained on {src['dataset'] or '-'})")
        try:
            run = generate_prompt_set(ps, uploads, batch, model=model, max_prompts=config.max_prompts,
                                      seed=config.seed, config=config.inference_config or None, progress=progress,
                                      model_name=src["preset"] or None, checkpoint=src["checkpoint"], **overrides)
        except GenerationError as e:
            raise dg.Failure(str(e)) from e
    first = run.results[0]
    if first.get("untrained"):
        context.log.warning(f"{model}: untrained weights, the videos are noise (pipeline test only)")
    store.write_json(f"generated_videos/{name}/{batch}.json", {**run.model_dump(), "source": src})

    # checks: _READY last, every video decodable with the asked shape
    keys = [w["key"] for w in run.written]
    ready_key = f"{batch}/{READY_MARKER}"
    ready_ok = uploads.exists(ready_key)
    if ready_ok and uploads.is_local:
        ready_t = uploads.local_path(ready_key).stat().st_mtime_ns
        ready_ok = all(uploads.local_path(k).stat().st_mtime_ns <= ready_t for k in keys)
    bad_sidecars = []
    for w in run.written:  # the sidecar the curation captions read: present, with this video's prompt
        try:
            side = uploads.read_json(w["sidecar"])
            if (side.get("prompt"), side.get("seed"), side.get("generated")) != (w["prompt"], w["seed"], True):
                bad_sidecars.append(f"{w['sidecar']}: does not match what was generated")
        except (OSError, ValueError) as e:  # missing, unreadable or not JSON
            bad_sidecars.append(f"{w['sidecar']}: {e}")
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
            "model": src["preset"] or model,
            "family": first.get("family", ""),
            "checkpoint": src["checkpoint"] or "(untrained preset)",
            "checkpoint_version": src["version"],
            "trained_on": src["dataset"],  # the dataset version the checkpoint was trained on
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
            dg.AssetCheckResult(check_name="sidecars_match", passed=not bad_sidecars,
                                metadata={"problems": dg.MetadataValue.json(bad_sidecars),
                                          "sidecars": len(run.written)}),
        ],
    )


GENERATION_ASSETS = [generated_videos]
