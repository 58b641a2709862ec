"""Tokenizer assets: a tokenizer trained on the curated shards, and the tokens of each batch.

tokenizer_checkpoint [tokenizer name]      trains on every curated batch's shards (one held out), or on a
                                           dataset version (config `dataset`), which it records
video_tokens [upload batch x tokenizer]    latents (CV) or FSQ indices (DV) of every clip of a batch
"""

import json
import warnings
from pathlib import Path

import dagster as dg
import numpy as np

from assets.curation import upload_batches, webdataset_shards
from resources import StorageResource
from wfm_platform import report
from wfm_platform.tokenizer.registry import NAMES

tokenizer_names = dg.StaticPartitionsDefinition(list(NAMES))
batch_x_tokenizer = dg.MultiPartitionsDefinition({"batch": upload_batches, "tokenizer": tokenizer_names})
GROUP = "tokenizer"
# Multi-dimension partition mappings are marked beta in Dagster 1.13; they are what a batch x tokenizer
# partition needs, and the warning would be printed on every `wfm` run.
warnings.filterwarnings("ignore", message=".*MultiToSingleDimensionPartitionMapping.*")


def _shard_manifests(store, batches: list[str]) -> list[dict]:
    names = batches or sorted({k.split("/")[1] for k in store.list("webdataset_shards") if k.endswith("manifest.json")})
    return [store.read_json(f"webdataset_shards/{b}/manifest.json") for b in names
            if store.exists(f"webdataset_shards/{b}/manifest.json")]


class TokenizerTrainRun(dg.Config):
    config_path: str = "configs/tokenizer/train_tiny.yaml"  # TrainConfig YAML, relative to the repo root
    steps: int = 0  # 0: the YAML's steps
    batches: list[str] = []  # curated batches to train on; empty: all
    dataset: str = ""  # "NAME@VERSION" (NAME: latest) from dataset_versions instead of batches; recorded


@dg.asset(
    partitions_def=tokenizer_names,
    group_name=GROUP,
    deps=[dg.AssetDep(webdataset_shards, partition_mapping=dg.AllPartitionMapping())],
    kinds={"pytorch"},
    code_version="1",
    tags={"wfm/accelerator": "gpu"},
    op_tags={"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}},
    description="A causal video tokenizer trained on the curated WebDataset shards (L1 + SSIM, AdamW, "
    "checkpoint/resume); the last shard is held out for PSNR/SSIM when there is more than one.",
    check_specs=[dg.AssetCheckSpec("loss_decreased", asset="tokenizer_checkpoint",
                                   description="mean loss of the last 5 steps is below the first 5")],
)
def tokenizer_checkpoint(
    context: dg.AssetExecutionContext, config: TokenizerTrainRun, storage: StorageResource
) -> dg.MaterializeResult:
    from wfm_platform.config_io import repo_path
    from wfm_platform.tokenizer.train import (
        CKPT_NAME,
        evaluate_on_shards,
        load_tokenizer,
        load_train_config,
        run_in_store,
        train,
    )

    store, name = storage.store(), context.partition_key
    dv = None
    if config.dataset:  # a dataset version is read whole: the checkpoint records exactly that version
        from wfm_platform.storage.datasets import DatasetError, DatasetRegistry

        if config.batches:
            raise dg.Failure("give `dataset` or `batches`, not both")
        try:
            dv = DatasetRegistry(store).get(config.dataset)
        except DatasetError as e:
            raise dg.Failure(f"dataset {config.dataset}: {e}") from e
        if not dv.shards:
            raise dg.Failure(f"{dv.ref} lists no shards (all erased?): choose another version")
        shard_uris = [s.uri for s in dv.shards]
    else:
        manifests = _shard_manifests(store, config.batches)
        shard_uris = [s["uri"] for m in manifests for s in m["shards"]]
    if not shard_uris:
        raise dg.Failure("no curated shards yet: materialize webdataset_shards for at least one batch first")
    held_out = shard_uris[-1:] if len(shard_uris) > 1 and dv is None else []
    train_uris = [u for u in shard_uris if u not in held_out]
    cfg_path = Path(config.config_path)
    cfg = load_train_config(repo_path(cfg_path), tokenizer=name)
    rel = f"tokenizer_checkpoint/{name}"
    with run_in_store(store, rel, resume=bool(config.steps)) as out:  # in place, or a temp folder uploaded after
        result = train(cfg, None if dv else train_uris, out, steps=config.steps or None, store=store, dataset=dv,
                       resume=(out / CKPT_NAME).exists() and bool(config.steps))
        metrics, preview = evaluate_on_shards(load_tokenizer(result.checkpoint), held_out or shard_uris[:1],
                                              store, num_frames=cfg.eval_frames())
    checkpoint_uri = str(result.checkpoint) if store.is_plain_local else store.uri(f"{rel}/{CKPT_NAME}")
    losses = result.losses
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
    return dg.MaterializeResult(
        metadata={
            "checkpoint": dg.MetadataValue.path(checkpoint_uri),
            "tokenizer": name,
            "steps": result.step,
            "steps_per_s": round(result.steps_per_s, 3),
            "loss_first5": round(first, 4),
            "loss_last5": round(last, 4),
            "loss_curve": dg.MetadataValue.md(report.image_md(report.line_plot_png(losses, "loss"), "image/png", "loss")),
            "psnr": round(metrics["overall"]["psnr"], 3),
            "ssim": round(metrics["overall"]["ssim"], 4),
            "evaluated_on": "held-out shard" if held_out else (
                "a training shard (a dataset version is trained on whole)" if dv
                else "a training shard (only one shard exists)"),
            "dataset": result.data.get("dataset") or "unversioned: shards of the curated batches",
            "dataset_digest": result.data.get("dataset_digest", ""),
            "reconstruction": dg.MetadataValue.md(report.image_md(preview, alt="top: input, bottom: reconstruction")),
            "train_shards": len(train_uris),
        },
        check_results=[dg.AssetCheckResult(check_name="loss_decreased", passed=last < first,
                                           metadata={"first5": first, "last5": last})],
    )


class VideoTokensConfig(dg.Config):
    max_side: int = 256  # clips are resized so the long side is at most this before tokenizing
    max_frames: int = 33  # 1 + t*n frames per clip
    min_roundtrip_psnr: float = 10.0  # dB: the check fails below this (a broken or untrained tokenizer)


@dg.asset(
    partitions_def=batch_x_tokenizer,
    group_name=GROUP,
    deps=[
        dg.AssetDep(webdataset_shards,
                    partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="batch")),
        dg.AssetDep(tokenizer_checkpoint,
                    partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="tokenizer")),
    ],
    kinds={"pytorch"},
    code_version="1",
    tags={"wfm/accelerator": "gpu"},
    description="Continuous latents (CV) or FSQ indices (DV) of every clip of a curated batch, one token "
    "file per clip, with the metadata to decode it.",
    check_specs=[
        dg.AssetCheckSpec("tokens_valid", asset="video_tokens",
                          description="shapes as the tokenizer promises, finite latents, ids in [0, 64000)",
                          blocking=True),
        dg.AssetCheckSpec("roundtrip_psnr", asset="video_tokens",
                          description="decode(encode(clip)) PSNR above the configured floor"),
    ],
)
def video_tokens(
    context: dg.AssetExecutionContext, config: VideoTokensConfig, storage: StorageResource
) -> dg.MaterializeResult:
    from wfm_platform.tokenizer.tokens import tokenize_shards
    from wfm_platform.tokenizer.train import load_tokenizer

    store = storage.store()
    keys = context.partition_key.keys_by_dimension
    batch, name = keys["batch"], keys["tokenizer"]
    ckpt_rel = f"tokenizer_checkpoint/{name}/checkpoint.pt"
    ckpt = str(store.local_path(ckpt_rel)) if store.is_plain_local else store.uri(ckpt_rel)  # what tokens record
    if not store.exists(ckpt_rel):
        raise dg.Failure(f"no trained {name} tokenizer at {ckpt}: materialize tokenizer_checkpoint[{name}] first")
    with store.local_copy(ckpt_rel) as local:  # a temp download on a remote store
        tok = load_tokenizer(local)
    manifest = store.read_json(f"webdataset_shards/{batch}/manifest.json")
    rows, problems = tokenize_shards(tok, manifest, store, f"video_tokens/{batch}/{name}", name=name,
                                     checkpoint=str(ckpt), max_frames=config.max_frames, max_side=config.max_side)
    psnrs = [r["psnr"] for r in rows]
    store.write_json(f"video_tokens/{batch}/{name}/manifest.json",
                     {"batch": batch, "tokenizer": name, "checkpoint": str(ckpt), "clips": rows})
    mean_psnr = float(np.mean(psnrs)) if psnrs else 0.0
    return dg.MaterializeResult(
        metadata={
            "manifest": dg.MetadataValue.path(store.uri(f"video_tokens/{batch}/{name}/manifest.json")),
            "num_clips": len(rows),
            "kind": tok.kind,
            "mean_roundtrip_psnr": round(mean_psnr, 3),
            "clips": dg.MetadataValue.md(report.table_md(rows, ["clip_id", "shape", "psnr"])),
        },
        check_results=[
            dg.AssetCheckResult(check_name="tokens_valid", passed=bool(rows) and not problems,
                                metadata={"problems": json.dumps(problems[:20])}),
            dg.AssetCheckResult(check_name="roundtrip_psnr", passed=mean_psnr >= config.min_roundtrip_psnr,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={"mean_psnr": mean_psnr, "floor": config.min_roundtrip_psnr}),
        ],
    )


TOKENIZER_ASSETS = [tokenizer_checkpoint, video_tokens]
