"""Benchmark: tokenizer quality after a fixed training budget, beside the naive baseline.

Trains each tokenizer for a fixed number of steps on WebDataset shards curated from real footage
(bikes.mp4, bigbuckbunny.mp4, Megamind.avi, carphone), then measures TokenBench PSNR/SSIM on held-out
real clips never trained on (cockatoo.mp4 and vtest.avi excerpts), next to the naive baseline with the same
latent grid (area downsample, trilinear upsample). Prints one JSON object.

    python bench/tokenizer_quality.py [--steps 300] [--names cv4x8x8,dv4x8x8] [--preset tiny]

On a GPU machine without the curation stack (no OpenCV contrib, no LanceDB): curate here with
`--prepare DIR`, carry DIR there, and run `--data DIR` there (training then runs on CUDA in bf16).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wfm_platform.tokenizer.metrics import video_metrics  # noqa: E402
from wfm_platform.tokenizer.registry import load_config  # noqa: E402
from wfm_platform.tokenizer.train import load_train_config, read_video, reconstruct_frames, train  # noqa: E402
from wfm_platform.video import iter_frames, write_mp4  # noqa: E402

TRAIN_SOURCES = ["bikes.mp4", "bigbuckbunny.mp4", "Megamind.avi", "carphone_pristine.mp4"]
HELD_OUT = [("cockatoo.mp4", 0, 32), ("vtest.avi", 100, 132)]


def curate(tmp: Path, sources: list[str]) -> list[str]:
    # the curation stack is imported here only: --data runs need nothing of it
    from wfm_platform import samples
    from wfm_platform.curation import pipeline as P
    from wfm_platform.curation.captions import make_captioner
    from wfm_platform.curation.config import PipelineConfig
    from wfm_platform.curation.embeddings import make_embedder
    from wfm_platform.storage.objectstore import ObjectStore

    d = samples.fetch(extra=any(n in samples.EXTRA_DEBIAN_FILES for n in sources))
    src = tmp / "src"
    src.mkdir()
    for n in sources:
        (src / n).write_bytes((d / n).read_bytes())
    store = ObjectStore(tmp / "store")
    cfg = PipelineConfig.load()
    cfg.guard.face_blur = cfg.guard.unsafe_check = False
    P.stage_raw_videos(store, None, "train", str(src), cfg)
    P.stage_clips(store, None, "train", cfg)
    P.stage_clip_scores(store, "train", cfg)
    P.stage_filtered_clips(store, None, "train", cfg)
    P.stage_captions(store, None, "train", make_captioner("signals", ocr=False))
    P.stage_clip_embeddings(store, None, "train", make_embedder("visual-signature"))
    P.stage_deduplicated_clips(store, None, "train", cfg.model_copy(update={"dedup": cfg.dedup.model_copy(update={"against_catalog": False})}))
    P.stage_guarded_clips(store, None, "train", None)
    m = P.stage_webdataset_shards(store, "train", cfg)
    return [s["uri"] for s in m["shards"]]


def held_out_clips(tmp: Path, size=(256, 144)) -> list[Path]:
    from wfm_platform import samples

    d = samples.fetch()
    out = []
    for name, a, b in HELD_OUT:
        p = tmp / f"heldout_{Path(name).stem}.mp4"
        write_mp4((img for _, img in iter_frames(d / name, start=a, end=b, size=size)), p, fps=20, crf=12)
        out.append(p)
    return out


def naive(frames: np.ndarray, t: int, s: int) -> np.ndarray:
    x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float()
    T, H, W = x.shape[2:]
    lat = (1 + (T - 1) // t, max(1, H // s), max(1, W // s))
    y = F.interpolate(F.adaptive_avg_pool3d(x, lat), size=(T, H, W), mode="trilinear", align_corners=False)
    return y[0].permute(1, 2, 3, 0).clamp(0, 255).round().byte().numpy()


def prepare(dst: Path, sources: list[str]) -> None:
    """Curated training shards + held-out clips into dst, for a --data run on another machine."""
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, uri in enumerate(curate(Path(tmp), sources)):
            shutil.copy(uri.removeprefix("file://"), dst / f"train-{i:03d}.tar")
        for c in held_out_clips(Path(tmp)):
            shutil.copy(c, dst / c.name)
    (dst / "sources.json").write_text(json.dumps(sources) + "\n")
    print(json.dumps({"prepared": sorted(p.name for p in dst.iterdir())}))


def data_sources(data: Path) -> list[str] | None:
    """The training sources a --prepare folder was curated from (None for folders made before it said)."""
    f = data / "sources.json"
    return json.loads(f.read_text()) if f.exists() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--names", default="cv4x8x8,dv4x8x8")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--num-frames", type=int, default=None,
                    help="training window (default: the trainer's, 1 + 2t: 9 for 4x, 17 for 8x tokenizers)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--resize-short", type=int, default=None,
                    help="resize training frames' short side to this before cropping (match the held-out scale)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="a training-time budget: a 30-step probe sizes the run (at most --steps) to fit it, "
                    "and training stops there in any case (the row records steps_done)")
    ap.add_argument("--augment", default="", help="comma-separated training augmentations: flip,stride,zoom")
    ap.add_argument("--channels", type=int, default=None, help="override the preset's base width")
    ap.add_argument("--seed", type=int, default=0, help="weights, crops and data order (repeat a row to see its noise)")
    ap.add_argument("--num-workers", type=int, default=0, help="decode processes (use them on a GPU)")
    ap.add_argument("--extra-footage", action="store_true",
                    help="also train on the 7 scenes of `wfm samples --extra` (11 sources instead of 4)")
    ap.add_argument("--prepare", type=Path, help="only curate shards + held-out clips into this folder")
    ap.add_argument("--data", type=Path, help="use a folder made by --prepare instead of curating")
    ap.add_argument("--out", type=Path, help="keep checkpoints here (default: a temp folder)")
    ap.add_argument("--report", type=Path, help="also write the final JSON here (e.g. bench/results/...json)")
    a = ap.parse_args()
    if a.data and a.extra_footage:
        ap.error("--extra-footage chooses what to curate; a --data folder was curated already (--prepare it with "
                 "--extra-footage instead)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")  # progress on stderr
    from wfm_platform.samples import EXTRA_DEBIAN_FILES

    sources = TRAIN_SOURCES + (list(EXTRA_DEBIAN_FILES) if a.extra_footage else [])
    if a.prepare:
        return prepare(a.prepare, sources)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    augment = [x for x in a.augment.split(",") if x]
    report: dict = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "device": device,
                                "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
                                "threads": torch.get_num_threads()},
                    "steps": a.steps, "preset": a.preset, "crop": a.crop, "num_frames": a.num_frames,
                    "batch_size": a.batch_size, "resize_short": a.resize_short, "channels": a.channels,
                    "augment": augment, "seed": a.seed, "train_sources": data_sources(a.data) if a.data else sources,
                    "held_out": [h[0] for h in HELD_OUT], "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.data:
            shards = [str(p) for p in sorted(a.data.glob("train-*.tar"))]
            clips = sorted(a.data.glob("heldout_*.mp4"))
        else:
            shards = curate(tmp, sources)
            clips = held_out_clips(tmp)
        videos = [read_video(c)[0] for c in clips]
        runs = a.out or tmp
        for name in a.names.split(","):
            def config(steps: int, max_seconds: float | None):
                return load_train_config(ROOT / "configs/tokenizer/train_tiny.yaml", tokenizer=name,
                                         preset=a.preset, crop=(a.crop, a.crop), steps=steps,
                                         checkpoint_every=steps, num_frames=a.num_frames,
                                         batch_size=a.batch_size, lr=a.lr, num_workers=a.num_workers,
                                         log_every=10, resize_short=a.resize_short,
                                         augment=augment, seed=a.seed,
                                         max_seconds=max_seconds,
                                         model={"channels": a.channels} if a.channels else {})

            steps = a.steps
            if a.max_seconds:
                # size the run to the budget so the lr schedule completes: time a short probe first
                # (its rate includes start-up, so it errs low); max_seconds still caps the real run
                probe = train(config(30, None), shards, runs / f"probe_{name}")
                steps = max(30, min(a.steps, int(probe.steps_per_s * a.max_seconds * 0.9)))
                report.setdefault("probe_steps_per_s", {})[name] = round(probe.steps_per_s, 2)
            cfg = config(steps, a.max_seconds)
            t0 = time.perf_counter()
            res = train(cfg, shards, runs / f"run_{name}")
            secs = time.perf_counter() - t0
            res.model.eval()
            with torch.no_grad():
                ours = [video_metrics(v, reconstruct_frames(res.model, v, device)) for v in videos]
            tc = load_config(name, a.preset)
            t, s = tc.temporal_compression, tc.spatial_compression
            base = [video_metrics(v, naive(v, t, s)) for v in videos]
            report["rows"].append({
                "tokenizer": name, "num_frames": cfg.window_frames(t), "steps_done": res.step, "train_seconds": round(secs, 1),
                "steps_per_s": round(res.steps_per_s, 2),
                "params": sum(p.numel() for p in res.model.parameters()),
                "loss_first5": round(float(np.mean(res.losses[:5])), 4),
                "loss_last5": round(float(np.mean(res.losses[-5:])), 4),
                "psnr": round(float(np.mean([m["psnr"] for m in ours])), 2),
                "ssim": round(float(np.mean([m["ssim"] for m in ours])), 4),
                "naive_psnr": round(float(np.mean([m["psnr"] for m in base])), 2),
                "naive_ssim": round(float(np.mean([m["ssim"] for m in base])), 4),
            })
            print(json.dumps(report["rows"][-1]), flush=True)
    print(json.dumps(report, indent=2))
    if a.report:
        tmp = a.report.with_name(a.report.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(a.report)


if __name__ == "__main__":
    main()
