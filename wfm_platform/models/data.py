"""World-model training data: dataset version -> shards -> clips -> frozen tokenizer + text encoder -> batches.

    dv = resolve_dataset("city@1.2.0", store)                 # DatasetRegistry; the exact version is recorded
    stream = EncodedClipStream(dv.as_shard_manifest(), family="diffusion", tokenizer=tok, text_encoder=te,
                               cfg=EncodeConfig(num_frames=17, size=(64, 64)), cache_dir="runs/x/cache")
    for batch in batches(stream, 2): model.training_loss(batch)   # keys as in models/base.py

Each clip's frame window (start frame and crop) is a pure function of (seed, clip id), not of the epoch,
so the tokenizer output of a clip never changes during a run and is cached on disk under
`{cache_dir}/{digest}/{clip}.pt`; digest covers the tokenizer (name, preset, checkpoint file identity), the
window (frames, size, resize, seed) and the text encoder. Epochs 2+ read the cache and skip decoding and
the tokenizer. Shard order, DDP rank split and resume (`skip`) are ClipStream's (tokenizer/data.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..tokenizer.data import (
    ClipStream,
    ClipStreamConfig,
    ClipTooShortError,
    count_skip,
    decode_window,
)
from ..tokenizer.tiling import encode_tiled

log = logging.getLogger(__name__)

KEYS = {"diffusion": "latents", "autoregressive": "tokens"}


def resolve_dataset(ref: str, store):
    """The DatasetVersion for "NAME@VERSION" (or "NAME": latest) in `store`'s dataset registry.

    Raises storage.datasets.DatasetError (a ValueError) with the known names/versions when absent."""
    from ..storage.datasets import DatasetError, DatasetRegistry

    if not ref or not isinstance(ref, str):
        raise DatasetError("give a dataset as NAME@VERSION (see `wfm dataset list`)")
    dv = DatasetRegistry(store).get(ref)
    if not dv.shards:
        raise DatasetError(f"{dv.ref} lists no shards (all erased?): nothing to train on")
    return dv


@dataclass
class EncodeConfig:
    num_frames: int = 17  # 1 + t*n for the tokenizer's temporal compression t
    size: tuple[int, int] = (64, 64)  # (h, w), multiples of the spatial compression
    resize_short: int | None = None
    random_window: bool = True  # per-clip random start/crop, fixed for the run (cache-friendly)
    seed: int = 0


def tokenizer_identity(tok, name: str, preset: str, checkpoint: str | None) -> dict:
    """What makes two tokenizers produce the same tokens: name/preset, and the checkpoint file's
    identity (path, size, mtime: hashing a multi-GB file per run would cost more than it saves)."""
    ident: dict = {"name": name, "preset": preset, "kind": tok.kind,
                   "compression": [tok.temporal_compression, tok.spatial_compression], "checkpoint": None}
    if checkpoint and "://" in str(checkpoint):  # in an object store: its size and ETag/mtime
        from ..storage.objectstore import store_and_key

        store, fname = store_and_key(str(checkpoint))
        ident["checkpoint"] = [[str(checkpoint), store.size(fname), store.version_tag(fname)]]
    elif checkpoint:
        p = Path(checkpoint)
        files = [p] if p.is_file() else sorted(q for q in p.iterdir() if q.is_file())
        ident["checkpoint"] = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    else:
        ident["random_init_seed"] = 0  # load_tokenizer's fixed seed: deterministic random weights
    return ident


def check_window(tok, cfg: EncodeConfig) -> None:
    t, s = tok.temporal_compression, tok.spatial_compression
    if t > 1 and (cfg.num_frames - 1) % t:
        raise ValueError(f"num_frames={cfg.num_frames} must be 1 + {t}*n for this tokenizer "
                         f"(e.g. {1 + t}, {1 + 2 * t}, {1 + 4 * t})")
    if cfg.size[0] % s or cfg.size[1] % s:
        raise ValueError(f"size {tuple(cfg.size)} must be a multiple of the tokenizer's spatial compression {s}")


class EncodedClipStream(ClipStream):
    """Endless stream of {"latents" [C,T,H,W] | "tokens" [T,H,W], "text_emb" [L,D], "text_mask" [L],
    "key", "index"}. Unusable clips are skipped with a warning (ClipStream's rules)."""

    def __init__(self, shards, *, family: str, tokenizer, text_encoder, cfg: EncodeConfig,
                 tokenizer_id: dict, text_encoder_id: str, cache_dir: str | os.PathLike | None = None,
                 store=None, rank: int = 0, world_size: int = 1, skip: int = 0, epochs: int | None = None,
                 device: str | torch.device = "cpu"):
        if family not in KEYS:
            raise ValueError(f"family must be one of {list(KEYS)}, not {family!r}")
        want = "cv" if family == "diffusion" else "dv"
        if tokenizer.kind != want:
            raise ValueError(f"the {family} family needs a {want.upper()} tokenizer; this one is {tokenizer.kind}")
        check_window(tokenizer, cfg)
        super().__init__(shards, ClipStreamConfig(num_frames=cfg.num_frames, size=tuple(cfg.size),
                                                  resize_short=cfg.resize_short, random_crop=cfg.random_window,
                                                  seed=cfg.seed),
                         store=store, rank=rank, world_size=world_size, skip=skip, epochs=epochs)
        self.family, self.tok, self.text_encoder, self.enc = family, tokenizer, text_encoder, cfg
        self.device = torch.device(device)
        digest = hashlib.sha256(json.dumps({"tokenizer": tokenizer_id, "window": asdict(cfg),
                                            "text_encoder": text_encoder_id}, sort_keys=True,
                                           default=str).encode()).hexdigest()[:16]
        self.cache = Path(cache_dir) / digest if cache_dir else None
        self.hits = self.misses = 0

    def _cache_file(self, key: str) -> Path | None:
        if self.cache is None:
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        return self.cache / f"{safe}.pt"

    @torch.no_grad()
    def _encode(self, sample: dict, key: str) -> dict:
        # the window depends on the clip, not on the epoch: the same tokens every time it is seen
        rng = (np.random.default_rng([self.enc.seed, zlib.crc32(key.encode())])
               if self.enc.random_window else None)
        frames = decode_window(sample["mp4"], self.enc.num_frames, tuple(self.enc.size), rng=rng,
                               resize_short=self.enc.resize_short, key=key)
        x = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1)[None].to(self.device)
        z = encode_tiled(self.tok, x)[0].cpu()  # CV [C,T,H,W] float, DV [T,H,W] long
        caption = sample.get("txt", b"")
        caption = caption.decode("utf-8", "replace") if isinstance(caption, bytes) else str(caption or "")
        if not caption.strip():
            log.warning("%s has no caption; training it with an empty prompt", key)
        emb, mask = self.text_encoder.encode([caption])
        n = max(int(mask[0].sum()), 1)  # trim padding: the collate pads per batch
        return {KEYS[self.family]: z.float() if self.family == "diffusion" else z.long(),
                "text_emb": emb[0, :n].float().cpu(), "text_mask": mask[0, :n].bool().cpu(), "caption": caption}

    def __iter__(self) -> Iterator[dict]:
        from ..tokenizer.train import _atomic_save

        usable, bad = 0, 0
        for n, sample in self._raw():
            if n < self.skip or n % self.world_size != self.rank:
                continue
            key = sample.get("__key__", f"sample{n}")
            path = self._cache_file(key)
            item = None
            if path is not None and path.exists():
                try:
                    item = torch.load(path, map_location="cpu", weights_only=True)
                    self.hits += 1
                except Exception as e:  # noqa: BLE001 - torch raises many types; a bad entry is rebuilt, never trusted
                    log.warning("cache entry %s unreadable (%s); re-encoding", path, e)
            if item is None:
                try:
                    item = self._encode(sample, key)
                except ClipTooShortError as e:
                    bad = count_skip(e, bad, usable, "dataset")
                    continue
                self.misses += 1
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    _atomic_save(item, path)
            usable += 1
            yield {**item, "key": key, "index": n}


def collate(items: list[dict], family: str) -> dict:
    """Stack clips into the batch of models/base.py; text is padded to the longest caption (mask False)."""
    key = KEYS[family]
    L = max(it["text_emb"].shape[0] for it in items)
    D = items[0]["text_emb"].shape[1]
    emb = torch.zeros(len(items), L, D)
    mask = torch.zeros(len(items), L, dtype=torch.bool)
    for i, it in enumerate(items):
        n = it["text_emb"].shape[0]
        emb[i, :n], mask[i, :n] = it["text_emb"], it["text_mask"]
    return {key: torch.stack([it[key] for it in items]), "text_emb": emb, "text_mask": mask,
            "keys": [it["key"] for it in items], "last_index": items[-1]["index"]}


def batches(stream: EncodedClipStream, batch_size: int) -> Iterator[dict]:
    buf: list[dict] = []
    for item in stream:
        buf.append(item)
        if len(buf) == batch_size:
            yield collate(buf, stream.family)
            buf = []
