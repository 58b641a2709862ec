"""World-model assets: diffusion and autoregressive world models trained on a versioned dataset.

diffusion_wfm        a DiT over continuous tokenizer latents   (preset diffusion-tiny by default)
autoregressive_wfm   a decoder-only transformer over DV tokens (preset ar-tiny by default)

Lineage: both read a dataset version (config `dataset`: NAME@VERSION, or NAME for its latest version; the
exact version read is recorded) and so depend on dataset_versions; tokenizer_checkpoint gives the tokenizer.
Each materialization is a new versioned checkpoint folder `{root}/{asset}/{preset}/{version}/` (model.pt,
loss.jsonl, train_config.yaml) plus `{root}/{asset}/{preset}/latest.json`; its metadata shows the loss
curve, the parameter count, the exact dataset version and a sample preview (a short clip generated from a
prompt and decoded by the tokenizer). GPU steps carry the k8s pod resources, as the tokenizer's do.
"""

import json
import math
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import numpy as np

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
    init: str = ""  # a checkpoint folder to post-train from (weights only)
    tokenizer_checkpoint: str = ""  # empty: the store's tokenizer_checkpoint/<name>/checkpoint.pt
    allow_untrained_tokenizer: bool = False  # explicit opt-in to random tokenizer weights (pipeline tests)
    preview_prompt: str = "a street with cars and people walking, daytime"
    preview_steps: int = 8  # diffusion sampling steps of the preview


def _tokenizer_for(store, name: str, config: WorldModelTrainRun, log) -> str | None:
    if config.tokenizer_checkpoint:
        return config.tokenizer_checkpoint
    ckpt = store.local_path(f"tokenizer_checkpoint/{name}/checkpoint.pt")
    if ckpt.exists():
        return str(ckpt)
    if config.allow_untrained_tokenizer:
        log.warning(f"no trained {name} tokenizer: training on random tokenizer weights (allow_untrained_tokenizer)")
        return None
    raise dg.Failure(f"no trained {name} tokenizer at {ckpt}: materialize tokenizer_checkpoint[{name}] first, "
                     "set tokenizer_checkpoint, or set allow_untrained_tokenizer for a pipeline test")


def _train_world_model(context: dg.AssetExecutionContext, config: WorldModelTrainRun, storage: StorageResource,
                       family: str, default_preset: str) -> dg.MaterializeResult:
    import torch

    from wfm_platform.curation.config import REPO_ROOT
    from wfm_platform.models import presets
    from wfm_platform.models.checkpoint import CheckpointError, load_world_model, read_checkpoint
    from wfm_platform.models.text import load_text_encoder
    from wfm_platform.models.train import load_data_tokenizer, load_train_config, preview_jpeg, train
    from wfm_platform.storage.datasets import DatasetError

    asset = context.asset_key.to_user_string()
    store, preset = storage.store(), config.preset or default_preset
    family_of, mcfg = presets.load_preset(preset)
    if family_of != family:
        raise dg.Failure(f"preset {preset} is in the {family_of} family; {asset} trains {family} presets")
    cfg_path = Path(config.config_path)
    tok_ckpt = _tokenizer_for(store, mcfg.tokenizer, config, context.log)
    cfg = load_train_config(cfg_path if cfg_path.is_absolute() else REPO_ROOT / cfg_path,
                            tokenizer_checkpoint=tok_ckpt)
    version = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{context.run_id[:8]}"
    rel = f"{asset}/{preset}/{version}"
    text_encoder = load_text_encoder(cfg.text_encoder)
    with tempfile.TemporaryDirectory() as tmp:
        # train next to the data on a local store; elsewhere in a temp folder, then upload the checkpoint
        out = store.local_path(rel) if store.is_plain_local else Path(tmp) / "run"
        try:
            r = train(family, preset, cfg, config.dataset, out, steps=config.steps or None, store=store,
                      init=config.init or None, text_encoder=text_encoder,
                      on_step=lambda s, n, p: context.log.info(f"step {s}/{n} loss {p['loss']:.4f}")
                      if s == n or s % max(1, n // 10) == 0 else None)
        except DatasetError as e:
            raise dg.Failure(str(e).strip("'\"")) from e
        ckpt = read_checkpoint(out)
        trained = {k: v.detach().cpu() for k, v in r.model.state_dict().items()}
        try:  # the check: what was written loads back into a model, equal to what was trained
            model, _ = load_world_model(out)
            loaded = model.state_dict()
            load_error = "" if loaded.keys() == trained.keys() and all(
                torch.equal(loaded[k], trained[k]) for k in trained) else "loaded weights differ from the trained ones"
        except CheckpointError as e:
            model, load_error = None, str(e)
        preview = b""
        if model is not None:
            tok = load_data_tokenizer(model.config, tok_ckpt, "cpu")
            preview = preview_jpeg(model, tok, text_encoder, config.preview_prompt, num_frames=cfg.num_frames,
                                   size=tuple(cfg.size), steps=config.preview_steps)
        if not store.is_plain_local:
            for f in ("model.pt", "loss.jsonl", "train_config.yaml"):
                store.put_file(out / f, f"{rel}/{f}")
    uri = store.uri(rel)
    store.write_json(f"{asset}/{preset}/latest.json", {"version": version, "uri": uri, "dataset": r.dataset,
                                                       "step": r.step, "preset": preset, "family": family})
    losses = r.losses
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
    params = sum(p.numel() for p in r.model.parameters())
    return dg.MaterializeResult(
        metadata={
            "checkpoint": dg.MetadataValue.path(uri),
            "version": version,
            "preset": preset,
            "family": family,
            "params": params,
            "dataset": r.dataset,
            "dataset_digest": ckpt.get("dataset_digest", ""),
            "tokenizer": json.dumps(ckpt["tokenizer"]),
            "init": config.init or "(from scratch)",
            "steps": r.step,
            "steps_per_s": round(r.steps_per_s, 3),
            "loss_first5": round(first, 4),
            "loss_last5": round(last, 4),
            "loss_curve": dg.MetadataValue.md(report.image_md(report.line_plot_png(losses, "loss"), "image/png",
                                                              "loss")),
            "sample_preview": dg.MetadataValue.md(report.image_md(preview, alt=config.preview_prompt)
                                                  if preview else "(no preview: the checkpoint did not load)"),
        },
        data_version=dg.DataVersion(version),
        check_results=[
            dg.AssetCheckResult(check_name="checkpoint_loads", passed=not load_error,
                                metadata={"tensors": len(ckpt["state_dict"]), "step": ckpt["step"],
                                          "error": load_error or "none"}),
            dg.AssetCheckResult(check_name="loss_finite", passed=finite,
                                metadata={"first5": first, "last5": last, "steps": len(losses)}),
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
