"""Token files: what `wfm tokenize encode` and the video_tokens asset write (.npz or .pt)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def save_tokens(path: Path, tokens: torch.Tensor, meta: dict) -> None:
    """Write latents (CV, float16) or indices (DV, int32) + the metadata needed to decode, atomically."""
    import numpy as np
    import torch

    from ..storage.atomic import atomic_path

    key = "indices" if meta["kind"] == "dv" else "latent"
    # CV latents as float16 halves the file; they are decoded in float32 again
    arr = tokens.cpu().to(torch.int32 if key == "indices" else torch.float16)
    with atomic_path(path) as tmp:
        if path.suffix == ".pt":
            torch.save({key: arr, "meta": meta}, tmp)
        else:
            with open(tmp, "wb") as f:  # np.savez appends .npz to bare names; a file object keeps tmp's name
                np.savez(f, **{key: arr.numpy(), "meta": np.array(json.dumps(meta))})


def load_tokens(path: Path) -> tuple[torch.Tensor, dict]:
    """(latent or indices, metadata) from a token file written by `wfm tokenize encode`."""
    import numpy as np
    import torch
    if not path.exists():
        raise FileNotFoundError(f"token file {path} does not exist")
    try:
        if path.suffix == ".pt":
            d = torch.load(path, map_location="cpu", weights_only=True)
            meta = d["meta"]
            arr = d.get("indices", d.get("latent"))
        else:
            with np.load(path, allow_pickle=False) as d:
                meta = json.loads(str(d["meta"]))
                arr = torch.from_numpy(d["indices"] if "indices" in d else d["latent"])
    except (KeyError, ValueError, OSError, RuntimeError) as e:
        raise ValueError(f"{path} is not a token file written by `wfm tokenize encode` ({e})") from e
    if arr is None:
        raise ValueError(f"{path} holds neither 'latent' nor 'indices'")
    tokens = arr.long() if meta["kind"] == "dv" else arr.float()
    return tokens, meta


def check_tokens(tok, z, frames_shape: tuple[int, int, int]) -> list[str]:
    """Problems with one clip's tokens: shape other than the tokenizer promises, ids out of range,
    non-finite latents. frames_shape = (T, H, W) of the input."""
    import torch

    T, H, W = frames_shape
    t, s = tok.temporal_compression, tok.spatial_compression
    want = (1 + (T - 1 + t - 1) // t, -(-H // s), -(-W // s))
    problems = []
    if tuple(z.shape[-3:]) != want:  # CV [B, C, t, h, w] and DV [B, t, h, w] agree on the last three
        problems.append(f"shape {tuple(z.shape)}, expected (..., {want})")
    if tok.kind == "dv" and (int(z.min()) < 0 or int(z.max()) >= 64000):
        problems.append("ids outside [0, 64000)")
    if tok.kind != "dv" and not bool(torch.isfinite(z).all()):
        problems.append("non-finite latents")
    return problems


def tokenize_shards(tok, manifest: dict, store, prefix: str, *, name: str, checkpoint: str,
                    max_frames: int = 33, max_side: int = 256) -> tuple[list[dict], list[str]]:
    """Tokenize every clip of a shard set into `{prefix}/{clip_id}.npz` (staged, then committed).

    Returns (rows, problems): per clip its uri, token shape and round-trip PSNR (TokenBench rule), and
    every problem `check_tokens` found."""
    import tempfile

    import torch

    from ..curation.shards import open_dataset
    from .metrics import psnr
    from .model import frames_to_tensor, tensor_to_frames
    from .tiling import decode_tiled, encode_tiled
    from .train import read_video

    rows, problems = [], []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for sample in open_dataset(manifest, store=store):
            cid = sample["__key__"]
            clip = Path(tmp) / f"{cid}.mp4"
            clip.write_bytes(sample["mp4"])
            frames, fps = read_video(clip, max_frames, max_side)
            x = frames_to_tensor(frames)
            z = encode_tiled(tok, x)
            problems += [f"{cid}: {p}" for p in check_tokens(tok, z, tuple(frames.shape[:3]))]
            y = decode_tiled(tok, z, num_frames=x.shape[2], size=(x.shape[-2], x.shape[-1]))
            meta = {"tokenizer": name, "kind": tok.kind, "checkpoint": checkpoint, "preset": "", "seed": 0,
                    "num_frames": int(frames.shape[0]), "height": int(frames.shape[1]),
                    "width": int(frames.shape[2]), "fps": float(fps), "source": cid, "shape": list(z.shape)}
            rel = f"{prefix}/{cid}.npz"
            with store.staged(rel) as tmp_path:  # the staging name keeps the .npz suffix save_tokens reads
                save_tokens(tmp_path, z, meta)
            rows.append({"clip_id": cid, "uri": store.uri(rel), "shape": list(z.shape),
                         "psnr": round(psnr(frames, tensor_to_frames(y)[0]), 3)})
    return rows, problems
