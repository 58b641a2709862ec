"""Stream training clips from curated WebDataset shards into [B,3,1+T,H,W] tensors in [-1,1].

Each sample's mp4 bytes are decoded with PyAV (only the frames needed), the short side is resized to
`resize_short`, then a random (training) or centre (evaluation) crop of `size` and a window of
`num_frames` consecutive frames is cut. With `flow=True` the input's backward optical flow between
consecutive frames (OpenCV DIS, no weights) comes along for the flow-consistency loss.

Determinism and resume: sample n of the stream (counting across epochs) is cropped with an RNG seeded
by (seed, n), and the shard order of epoch e is a permutation seeded by (seed, e). So a stream started
with `skip=k` yields exactly what an uninterrupted one yields after k samples, without decoding the k
skipped ones. Under DDP rank r of w takes the samples n with n % w == r.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from ..curation.shards import open_dataset
from ..storage.objectstore import ObjectStore, store_for

log = logging.getLogger(__name__)


class ClipTooShortError(ValueError):
    """A clip has fewer frames (or pixels) than a training window needs."""


class ShardSourceError(ValueError):
    """Shards that cannot be read: missing manifest/shard, empty set, no usable clip."""


AUGMENTATIONS = ("flip", "stride", "zoom")  # decode_window's training-window augmentations

# More unusable clips than this before the first usable one: the data is wrong, not one clip.
MAX_SKIPS_BEFORE_ANY = 50


def count_skip(e: ClipTooShortError, bad: int, usable: int, source: str) -> int:
    """Log one unusable clip and return the new skip count; fail once more than MAX_SKIPS_BEFORE_ANY
    were skipped with none usable (shared by ClipStream and the world models' EncodedClipStream)."""
    bad += 1
    log.warning("skipped: %s", e)
    if bad > MAX_SKIPS_BEFORE_ANY and usable == 0:
        raise ShardSourceError(f"no usable clip in the {source} after {bad} tries; last: {e}") from e
    return bad


def decode_window(data: bytes, num_frames: int, size: tuple[int, int], *, rng: np.random.Generator | None = None,
                  resize_short: int | None = None, augment: Collection[str] = (),
                  key: str = "clip") -> np.ndarray:
    """mp4 bytes -> uint8 frames [num_frames, h, w, 3] (size = (h, w)).

    rng given: random temporal start and random crop; None: first frames and centre crop.
    resize_short: resize so the frame's short side is at least this many pixels before cropping
    (default: the smallest resize that still covers the crop, i.e. the most scene in view).
    augment (only with rng), any of AUGMENTATIONS: "flip" mirrors the window half the time, "stride" takes
    every 2nd frame half the time (twice the motion per frame, where the clip is long enough), "zoom"
    enlarges 1-1.5x before cropping. All three are drawn whichever are on, so turning one on leaves the
    others' draws unchanged.
    """
    h, w = size
    unknown = set(augment) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; choose from {list(AUGMENTATIONS)}")
    aug = bool(augment) and rng is not None
    flip_draw, stride_draw, zoom_draw = (int(rng.integers(0, 2)), int(rng.integers(0, 2)),
                                         float(rng.uniform(1.0, 1.5))) if aug else (0, 0, 1.0)
    flip = aug and "flip" in augment and flip_draw == 1
    stride = 2 if aug and "stride" in augment and stride_draw == 1 else 1
    zoom = zoom_draw if aug and "zoom" in augment else 1.0
    try:
        container = av.open(io.BytesIO(data), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise ClipTooShortError(f"{key}: not a decodable video ({e})") from e
    with container:
        if not container.streams.video:
            raise ClipTooShortError(f"{key}: no video stream")
        stream = container.streams.video[0]
        total = stream.frames or 0
        if total and total < num_frames:
            raise ClipTooShortError(f"{key}: {total} frames, a training window needs {num_frames}")
        if not total or total < (num_frames - 1) * stride + 1:
            stride = 1
        span = (num_frames - 1) * stride + 1
        start = int(rng.integers(0, total - span + 1)) if (rng is not None and total) else 0
        frames: list[np.ndarray] = []
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i < start or (i - start) % stride:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == num_frames:
                    break
        except av.error.FFmpegError as e:
            log.warning("%s: decode error after %d frames: %s", key, len(frames), e)
    if len(frames) < num_frames:
        raise ClipTooShortError(f"{key}: decoded {len(frames)} frames from {start}, need {num_frames}")
    fh, fw = frames[0].shape[:2]
    # resize so the crop fits: short side to resize_short (default: just enough for the crop)
    target_short = max(resize_short or 0, 1)
    scale = max(h / fh, w / fw, target_short / min(fh, fw)) * zoom
    nh, nw = max(h, round(fh * scale)), max(w, round(fw * scale))
    if (nh, nw) != (fh, fw):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frames = [cv2.resize(f, (nw, nh), interpolation=interp) for f in frames]
    if rng is not None:
        y0, x0 = int(rng.integers(0, nh - h + 1)), int(rng.integers(0, nw - w + 1))
    else:
        y0, x0 = (nh - h) // 2, (nw - w) // 2
    out = np.stack([f[y0 : y0 + h, x0 : x0 + w] for f in frames])
    return np.ascontiguousarray(out[:, :, ::-1]) if flip else out


def dis_flow(frames: np.ndarray) -> np.ndarray:
    """Backward optical flow [T-1, 2, H, W] float32: flow[t] maps frame t+1's pixels into frame t
    (frame[t+1](p) ~ frame[t](p + flow[t](p))). OpenCV DIS, ultrafast preset: classical, no weights."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    out = [dis.calc(gray[t + 1], gray[t], None).transpose(2, 0, 1) for t in range(len(gray) - 1)]
    if not out:
        return np.zeros((0, 2) + frames.shape[1:3], np.float32)
    return np.stack(out).astype(np.float32)


def resolve_shards(shards: str | Sequence[str] | dict, store: ObjectStore | None = None) -> list[str]:
    """Shard URLs from a manifest (dict, path or URI of manifest.json), one URL, or a list of them.

    Raises ShardSourceError when a manifest or a shard does not exist (before training starts, not
    deep inside the data loader)."""
    if isinstance(shards, dict):
        urls = [e["uri"] for e in shards.get("shards", [])]
    else:
        items = [shards] if isinstance(shards, (str, Path)) else list(shards)
        urls = []
        for item in items:
            s = str(item)
            if s.endswith(".json"):
                st = store or store_for(str(Path(s).parent) if "://" not in s else s.rsplit("/", 1)[0])
                name = s.rsplit("/", 1)[-1]
                if not st.exists(name):
                    raise ShardSourceError(f"no shard manifest at {s}; pass the manifest.json that "
                                           "webdataset_shards wrote, or shard .tar URLs")
                try:
                    manifest = json.loads(st.read_bytes(name))
                except json.JSONDecodeError as e:
                    raise ShardSourceError(f"{s} is not valid JSON: {e}") from e
                urls += [e["uri"] for e in manifest.get("shards", [])]
            else:
                urls.append(s)
    if not urls:
        raise ShardSourceError("no shards to read (empty manifest or empty list)")
    for u in urls:
        if "://" not in u or u.startswith("file://"):
            p = Path(u.removeprefix("file://"))
            if not p.is_file():
                raise ShardSourceError(f"shard {u} does not exist")
        elif store is not None and u.startswith(store.uri()) and not store.exists(store.rel(u)):
            raise ShardSourceError(f"shard {u} does not exist")
    return urls


@dataclass
class ClipStreamConfig:
    num_frames: int = 9
    size: tuple[int, int] = (64, 64)  # (h, w)
    resize_short: int | None = None
    random_crop: bool = True
    augment: tuple[str, ...] = ()
    flow: bool = False
    seed: int = 0


class ClipStream(torch.utils.data.IterableDataset):
    """Endless stream of {"video": [3,T,H,W] float in [-1,1], "flow": [T-1,2,H,W] (if asked), "key"}.

    Clips that are too short or undecodable are skipped with a warning; a whole epoch without one
    usable clip raises ShardSourceError (rather than spinning forever).
    """

    def __init__(self, shards: str | Sequence[str] | dict, cfg: ClipStreamConfig, *, store: ObjectStore | None = None,
                 rank: int = 0, world_size: int = 1, skip: int = 0, epochs: int | None = None):
        super().__init__()
        self.urls = resolve_shards(shards, store)
        self.cfg, self.store = cfg, store
        self.rank, self.world_size = rank, world_size
        self.skip = skip  # samples of the global stream already consumed (resume)
        self.epochs = epochs

    def _raw(self) -> Iterator[tuple[int, dict]]:
        n = 0
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.urls))
            urls = [self.urls[i] for i in order]
            ds = open_dataset(urls, store=self.store, nodesplitter=lambda u: u, workersplitter=lambda u: u)
            seen = 0
            for sample in ds:
                seen += 1
                if "mp4" not in sample:
                    log.warning("sample %s has no mp4 member; skipped", sample.get("__key__"))
                    continue
                yield n, sample
                n += 1
            if seen == 0:
                raise ShardSourceError(f"shards hold no samples: {urls[:3]}")
            epoch += 1

    def __iter__(self) -> Iterator[dict]:
        cfg = self.cfg
        usable_in_epoch = 0
        bad = 0
        # DataLoader workers split this rank's share again, so each sample is decoded exactly once
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        ways, mine = self.world_size * workers, self.rank * workers + worker
        for n, sample in self._raw():
            if n < self.skip or n % ways != mine:
                continue
            rng = np.random.default_rng([cfg.seed, n]) if cfg.random_crop else None
            key = sample.get("__key__", f"sample{n}")
            try:
                frames = decode_window(sample["mp4"], cfg.num_frames, cfg.size, rng=rng,
                                       resize_short=cfg.resize_short, augment=cfg.augment, key=key)
            except ClipTooShortError as e:
                bad = count_skip(e, bad, usable_in_epoch, "shards")
                continue
            usable_in_epoch += 1
            x = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1
            item = {"video": x, "key": key, "index": n}
            if cfg.flow:
                item["flow"] = torch.from_numpy(dis_flow(frames))
            yield item


def batches(stream: ClipStream, batch_size: int, num_workers: int = 0) -> Iterator[dict]:
    """Group a ClipStream into {"video": [B,3,T,H,W], "flow": [B,T-1,2,H,W] or None, "keys", "last_index"}.

    num_workers > 0 decodes in that many DataLoader processes (a GPU outruns one decoding process);
    samples then arrive round-robin from the workers, so a resume continues after the furthest
    sample seen rather than exactly where the stream stopped.
    """
    items: Iterable[dict] = stream
    if num_workers > 0:
        items = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers,
                                            prefetch_factor=4, persistent_workers=False)
    buf: list[dict] = []
    for item in items:
        buf.append(item)
        if len(buf) == batch_size:
            yield {
                "video": torch.stack([b["video"] for b in buf]),
                "flow": torch.stack([b["flow"] for b in buf]) if "flow" in buf[0] else None,
                "keys": [b["key"] for b in buf],
                "last_index": buf[-1]["index"],
            }
            buf = []
