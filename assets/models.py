"""World-model assets: diffusion and autoregressive world models trained on a versioned dataset.

diffusion_wfm        a DiT over continuous tokenizer latents   (preset diffusion-tiny by default)
autoregressive_wfm   a decoder-only transformer over DV tokens (preset ar-tiny by default)

Lineage: both read a dataset version (config `dataset`: NAME@VERSION, or NAME for its latest version; the
exact version read is recorded) and so depend on dataset_versions; tokenizer_checkpoint gives the tokenizer.
Each materialization is a new versioned checkpoint folder `{root}/{asset}/{preset}/{version}/` (model.pt,
loss.jsonl, train_config.yaml) plus `{root}/{asset}/{preset}/latest.json` (moved only when the new
checkpoint loads back); the work is wfm_platform.models.publish.train_and_publish. Its metadata shows the loss
curve, the parameter count, the exact dataset version and a sample preview (a short clip generated from a
prompt and decoded by the tokenizer). GPU steps carry the k8s pod resources, as the tokenizer's do.
"""

import json
from pathlib import Path

import dagster as dg

from assets.datasets import dataset_versions
from assets.tokenizer import tokenizer_checkpoint
from resources import StorageResource
from wfm_platform import report

GROUP = "world_models"
GPU_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}


class WorldModelTrainRun(dg.Config):
    # NAME@VERSION (`wfm dataset list`); NAME alone: its latest version, recorded exactly. The default is
    # dataset_versions' default name.
    dataset: str = "curated"
    preset: str = ""  # configs/models/<preset>.yaml; empty: diffusion-tiny / ar-tiny
    config_path: str = "configs/train/world_tiny.yaml"  # TrainConfig YAML, relative to the repo root
    steps: int = 0  # 0: the YAML's steps
    init: str = ""  # post-train from (weights only): a checkpoint folder, or PRESET@latest (e.g. diffusion-tiny@latest)
    tokenizer_checkpoint: str = ""  # empty: the store's tokenizer_checkpoint/<name>/checkpoint.pt
    allow_untrained_tokenizer: bool = False  # explicit opt-in to random tokenizer weights (pipeline tests)
    preview_prompt: str = "a street with cars and people walking, daytime"
    preview_steps: int = 8  # diffusion sampling steps of the preview


def _tokenizer_for(store, name: str, config: WorldModelTrainRun, log) -> str | None:
    if config.tokenizer_checkpoint:
        return config.tokenizer_checkpoint
    rel = f"tokenizer_checkpoint/{name}/checkpoint.pt"
    ckpt = store.uri(rel)
    if store.exists(rel):
        # a path on a local store; a URI elsewhere, which the world model records and load_tokenizer reads
        return str(store.local_path(rel)) if store.is_plain_local else ckpt
    if config.allow_untrained_tokenizer:
        log.warning(f"no trained {name} tokenizer: training on random tokenizer weights (allow_untrained_tokenizer)")
        return None
    raise dg.Failure(f"no trained {name} tokenizer at {ckpt}: materialize tokenizer_checkpoint[{name}] first, "
                     "set tokenizer_checkpoint, or set allow_untrained_tokenizer for a pipeline test")


def _train_world_model(context: dg.AssetExecutionContext, config: WorldModelTrainRun, storage: StorageResource,
                       family: str, default_preset: str) -> dg.MaterializeResult:
    from wfm_platform.config_io import repo_path
    from wfm_platform.models import presets
    from wfm_platform.models.publish import new_version, train_and_publish
    from wfm_platform.models.train import load_train_config
    from wfm_platform.storage.datasets import DatasetError

    asset = context.asset_key.to_user_string()
    store, preset = storage.store(), config.preset or default_preset
    family_of, mcfg = presets.load_preset(preset)
    if family_of != family:  # before the tokenizer: a wrong preset is the error worth reporting
        raise dg.Failure(f"preset {preset} is in the {family_of} family; {asset} trains {family} presets")
    cfg_path = Path(config.config_path)
    cfg = load_train_config(repo_path(cfg_path),
                            tokenizer_checkpoint=_tokenizer_for(store, mcfg.tokenizer, config, context.log))

    def on_step(s: int, n: int, p: dict) -> None:
        if s == n or s % max(1, n // 10) == 0:
            context.log.info(f"step {s}/{n} loss {p['loss']:.4f}")

    try:
        pub = train_and_publish(store, asset, family, preset, cfg, config.dataset,
                                version=new_version(context.run_id), steps=config.steps or None,
                                init=config.init or None, preview_prompt=config.preview_prompt,
                                preview_steps=config.preview_steps, on_step=on_step)
    except DatasetError as e:
        raise dg.Failure(str(e).strip("'\"")) from e
    if pub.latest is None:
        context.log.error(f"{pub.uri} does not load back ({pub.load_error}): latest.json was not moved to it")
    first, last = pub.loss_first5, pub.loss_last5
    return dg.MaterializeResult(
        metadata={
            "checkpoint": dg.MetadataValue.path(pub.uri),
            "version": pub.version,
            "preset": preset,
            "family": family,
            "params": pub.params,
            "dataset": pub.dataset,
            "dataset_digest": pub.dataset_digest,
            "tokenizer": json.dumps(pub.tokenizer),
            "init": config.init or "(from scratch)",
            "steps": pub.step,
            "steps_per_s": round(pub.steps_per_s, 3),
            "loss_first5": round(first, 4),
            "loss_last5": round(last, 4),
            "loss_curve": dg.MetadataValue.md(report.image_md(report.line_plot_png(pub.losses, "loss"),
                                                              "image/png", "loss")),
            "sample_preview": dg.MetadataValue.md(report.image_md(pub.preview, alt=config.preview_prompt)
                                                  if pub.preview else "(no preview: the checkpoint did not load)"),
        },
        data_version=dg.DataVersion(pub.version),
        check_results=[
            dg.AssetCheckResult(check_name="checkpoint_loads", passed=not pub.load_error,
                                metadata={"tensors": pub.tensors, "step": pub.saved_step,
                                          "error": pub.load_error or "none"}),
            dg.AssetCheckResult(check_name="loss_finite", passed=pub.loss_finite,
                                metadata={"first5": first, "last5": last, "steps": len(pub.losses)}),
        ],
    )


def _checks(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("checkpoint_loads", asset=asset, blocking=True,
                          description="the new checkpoint loads back into its model (load_world_model)"),
        dg.AssetCheckSpec("loss_finite", asset=asset, blocking=True, description="every logged loss is finite"),
    ]


# training reads a dataset version (its shards, encoded on the fly by the tokenizer), not video_tokens
_DEPS = [dg.AssetDep(dataset_versions),
         dg.AssetDep(tokenizer_checkpoint, partition_mapping=dg.AllPartitionMapping())]


@dg.asset(
    group_name=GROUP, deps=_DEPS, kinds={"pytorch"}, code_version="1", tags={"wfm/accelerator": "gpu"},
    op_tags=GPU_TAGS, check_specs=_checks("diffusion_wfm"),
    description="Diffusion world model (DiT over CV latents, rectified flow, CFG) trained on a dataset version; "
    "a versioned checkpoint with its loss curve and a generated preview.",
)
def diffusion_wfm(context: dg.AssetExecutionContext, config: WorldModelTrainRun,
                  storage: StorageResource) -> dg.MaterializeResult:
    return _train_world_model(context, config, storage, "diffusion", "diffusion-tiny")


@dg.asset(
    group_name=GROUP, deps=_DEPS, kinds={"pytorch"}, code_version="1", tags={"wfm/accelerator": "gpu"},
    op_tags=GPU_TAGS, check_specs=_checks("autoregressive_wfm"),
    description="Autoregressive world model (decoder-only transformer over DV tokens, text cross-attention, "
    "Medusa heads) trained on a dataset version; a versioned checkpoint with its loss curve and a preview.",
)
def autoregressive_wfm(context: dg.AssetExecutionContext, config: WorldModelTrainRun,
                       storage: StorageResource) -> dg.MaterializeResult:
    return _train_world_model(context, config, storage, "autoregressive", "ar-tiny")


MODEL_ASSETS = [diffusion_wfm, autoregressive_wfm]
