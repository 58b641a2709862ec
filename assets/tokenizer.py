"""Tokenizer assets: a tokenizer trained on the curated shards, and the tokens of each batch.

tokenizer_checkpoint [tokenizer name]      trains on every curated batch's shards (one held out)
video_tokens [upload batch x tokenizer]    latents (CV) or FSQ indices (DV) of every clip of a batch
"""

import json
import tempfile
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
    from wfm_platform.curation.config import REPO_ROOT
    from wfm_platform.curation.shards import open_dataset
    from wfm_platform.tokenizer.train import evaluate_videos, load_tokenizer, load_train_config, train

    store, name = storage.store(), context.partition_key
    manifests = _shard_manifests(store, config.batches)
    shard_uris = [s["uri"] for m in manifests for s in m["shards"]]
    if not shard_uris:
        raise dg.Failure("no curated shards yet: materialize webdataset_shards for at least one batch first")
    held_out = shard_uris[-1:] if len(shard_uris) > 1 else []
    train_uris = [u for u in shard_uris if u not in held_out]
    cfg_path = Path(config.config_path)
    cfg = load_train_config(cfg_path if cfg_path.is_absolute() else REPO_ROOT / cfg_path, tokenizer=name)
    out = store.local_path(f"tokenizer_checkpoint/{name}")  # checkpoints live next to the data (local store)
    result = train(cfg, train_uris, out, steps=config.steps or None, store=store,
                   resume=(out / "checkpoint.pt").exists() and bool(config.steps))
    losses = result.losses
    with tempfile.TemporaryDirectory() as tmp:
        eval_uris = held_out or shard_uris[:1]
        paths = []
        for i, sample in enumerate(open_dataset(eval_uris, store=store)):
            p = Path(tmp) / f"{sample['__key__']}.mp4"
            p.write_bytes(sample["mp4"])
            paths.append(p)
            if i >= 1:
                break
        tok = load_tokenizer(result.checkpoint)
        metrics = evaluate_videos(tok, paths, num_frames=cfg.num_frames * 2 + 1, max_side=256)
        preview = _preview(tok, paths[0], cfg.num_frames)
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
    return dg.MaterializeResult(
        metadata={
            "checkpoint": dg.MetadataValue.path(str(result.checkpoint)),
            "tokenizer": name,
            "steps": result.step,
            "steps_per_s": round(result.steps_per_s, 3),
            "loss_first5": round(first, 4),
            "loss_last5": round(last, 4),
            "loss_curve": dg.MetadataValue.md(report.image_md(_loss_plot(losses), "image/png", "loss")),
            "psnr": round(metrics["overall"]["psnr"], 3),
            "ssim": round(metrics["overall"]["ssim"], 4),
            "evaluated_on": "held-out shard" if held_out else "a training shard (only one shard exists)",
            "reconstruction": dg.MetadataValue.md(preview),
            "train_shards": len(train_uris),
        },
        check_results=[dg.AssetCheckResult(check_name="loss_decreased", passed=last < first,
                                           metadata={"first5": first, "last5": last})],
    )


def _loss_plot(losses: list[float], w: int = 480, h: int = 160) -> bytes:
    """A small line plot drawn with OpenCV (no plotting dependency)."""
    import cv2

    from wfm_platform.video.thumbs import png_bytes

    img = np.full((h, w, 3), 255, np.uint8)
    y = np.asarray(losses, float)
    if len(y) > 1:
        lo, hi = float(y.min()), float(y.max()) or 1.0
        xs = np.linspace(10, w - 10, len(y))
        ys = h - 10 - (y - lo) / max(hi - lo, 1e-9) * (h - 30)
        pts = np.stack([xs, ys], 1).astype(np.int32)
        cv2.polylines(img, [pts], False, (30, 90, 200), 2)
        cv2.putText(img, f"loss {y[0]:.3f} -> {y[-1]:.3f} ({len(y)} steps)", (12, 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return png_bytes(img)


def _preview(tok, video: Path, num_frames: int) -> str:
    from wfm_platform.tokenizer.train import read_video, reconstruct_frames
    from wfm_platform.video.thumbs import grid, jpeg_bytes

    frames, _ = read_video(video, num_frames, max_side=256)
    rec = reconstruct_frames(tok, frames)
    idx = np.linspace(0, len(frames) - 1, min(4, len(frames))).astype(int)
    return report.image_md(jpeg_bytes(grid([frames[i] for i in idx] + [rec[i] for i in idx], cols=len(idx))),
                           alt="top: input, bottom: reconstruction")


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
    import torch

    from wfm_platform.curation.shards import open_dataset
    from wfm_platform.tokenizer.metrics import psnr
    from wfm_platform.tokenizer.model import frames_to_tensor, tensor_to_frames
    from wfm_platform.tokenizer.tiling import decode_tiled, encode_tiled
    from wfm_platform.tokenizer.tokens import save_tokens
    from wfm_platform.tokenizer.train import load_tokenizer, read_video

    store = storage.store()
    keys = context.partition_key.keys_by_dimension
    batch, name = keys["batch"], keys["tokenizer"]
    ckpt = store.local_path(f"tokenizer_checkpoint/{name}/checkpoint.pt")
    if not ckpt.exists():
        raise dg.Failure(f"no trained {name} tokenizer at {ckpt}: materialize tokenizer_checkpoint[{name}] first")
    tok = load_tokenizer(ckpt)
    manifest = store.read_json(f"webdataset_shards/{batch}/manifest.json")
    rows, problems, psnrs = [], [], []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for sample in open_dataset(manifest, store=store):
            cid = sample["__key__"]
            clip = Path(tmp) / f"{cid}.mp4"
            clip.write_bytes(sample["mp4"])
            frames, fps = read_video(clip, config.max_frames, config.max_side)
            x = frames_to_tensor(frames)
            z = encode_tiled(tok, x)
            t, s = tok.temporal_compression, tok.spatial_compression
            lat_t = 1 + (x.shape[2] - 1 + t - 1) // t
            want = (lat_t, -(-x.shape[-2] // s), -(-x.shape[-1] // s))
            got = tuple(z.shape[-3:])  # CV [B, C, t, h, w], DV [B, t, h, w]: the last three agree
            if got != want:
                problems.append(f"{cid}: shape {tuple(z.shape)}, expected (..., {want})")
            if tok.kind == "dv" and (int(z.min()) < 0 or int(z.max()) >= 64000):
                problems.append(f"{cid}: ids outside [0, 64000)")
            if tok.kind != "dv" and not bool(torch.isfinite(z).all()):
                problems.append(f"{cid}: non-finite latents")
            y = decode_tiled(tok, z, num_frames=x.shape[2], size=(x.shape[-2], x.shape[-1]))
            psnrs.append(psnr(frames, tensor_to_frames(y)[0]))
            meta = {"tokenizer": name, "kind": tok.kind, "checkpoint": str(ckpt), "preset": "", "seed": 0,
                    "num_frames": int(frames.shape[0]), "height": int(frames.shape[1]),
                    "width": int(frames.shape[2]), "fps": float(fps), "source": cid, "shape": list(z.shape)}
            rel = f"video_tokens/{batch}/{name}/{cid}.npz"
            with store.staged(rel) as tmp_path:  # staging name keeps the .npz suffix save_tokens reads
                save_tokens(tmp_path, z, meta)
            rows.append({"clip_id": cid, "uri": store.uri(rel), "shape": list(z.shape), "psnr": round(psnrs[-1], 3)})
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
