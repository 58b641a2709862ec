"""Benchmark: curation throughput on 1080p H.264 input, against plain PyAV decoding of the same files.

Reports, as one JSON object:
- decode_fps: plain PyAV decode (threads on, no colour conversion): the baseline a user would compare to.
- analysis: shot split + sampling of analysis frames + filters + embedding, EXCLUDING the transcode,
  as frames/s and as a ratio to decode_fps (target >= 0.5). The pipeline samples the filters' and the
  embedder's frames inside the transcode pass (it decodes every frame anyway); the time spent doing that
  is counted as analysis, the encode and the rest of that pass as transcode.
- transcode: the one-pass H.264 transcode of every clip, reported separately (frames/s, ratio).
- end_to_end: the whole pipeline (all nine stages, no Dagster) on the batch: videos/hour,
  video-hours per hour, clips/hour.
- memory: peak RSS of shot detection + transcode on a short and a long 1080p60 file (bounded memory:
  the long one should not need more).

    python bench/curation_throughput.py [--out .cache/bench1080] [--long-seconds 40] [--no-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from make_1080p import make_inputs, make_long  # noqa: E402

from wfm_platform.curation import pipeline as P  # noqa: E402
from wfm_platform.curation.config import PipelineConfig  # noqa: E402
from wfm_platform.curation.embeddings import make_embedder  # noqa: E402
from wfm_platform.curation.filters import FilterConfig, SampleCollector, get_ocr, score_sample  # noqa: E402
from wfm_platform.curation.shots import apply_clip_rules, detect_shots  # noqa: E402
from wfm_platform.video import probe  # noqa: E402
from wfm_platform.video.encode import transcode_segments  # noqa: E402


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "pyav": av.__version__}


def decode_fps(path: Path) -> tuple[float, int]:
    t = time.perf_counter()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        n = sum(1 for _ in c.decode(s))
    return n / (time.perf_counter() - t), n


def analyse(path: Path, cfg: PipelineConfig, fcfg: FilterConfig, embedder, ocr, tmp: Path) -> dict:
    info = probe(path)
    t0 = time.perf_counter()
    result = detect_shots(path)
    t_split = time.perf_counter() - t0
    shots = apply_clip_rules(result.shots, result.fps, cfg.clips.min_duration_s, cfg.clips.max_duration_s)
    collectors = [(s.start_frame, s.end_frame, SampleCollector.for_config(s.start_frame, s.end_frame,
                                                                          result.fps, fcfg)) for s in shots]
    t_collect = 0.0

    def on_frame(idx, img):
        nonlocal t_collect
        t = time.perf_counter()
        for s, e, c in collectors:
            if s <= idx <= e:
                c.push(idx, img)
        t_collect += time.perf_counter() - t

    segs = [(s.start_frame, s.end_frame, tmp / f"{path.stem}_{i}.mp4") for i, s in enumerate(shots)]
    t0 = time.perf_counter()
    transcode_segments(path, segs, fps=result.fps, crf=cfg.clips.crf, preset=cfg.clips.preset, on_frame=on_frame)
    t_pass = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _, _, c in collectors:
        score_sample(c.sample, fcfg, ocr=ocr, width=info.width, height=info.height)
    t_filters = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _, _, c in collectors:
        embedder.embed_frames([c.sample.rgb[k] for k in sorted(c.sample.rgb)])
    t_embed = time.perf_counter() - t0
    return {"file": path.name, "frames": result.num_frames, "clips": len(shots), "split_s": t_split,
            "collect_s": t_collect, "filters_s": t_filters, "embed_s": t_embed,
            "transcode_s": t_pass - t_collect, "clip_frames": sum(s.end_frame - s.start_frame + 1 for s in shots)}


def end_to_end(files: list[Path], cfg: PipelineConfig, tmp: Path) -> dict:
    from wfm_platform.curation.captions import make_captioner
    from wfm_platform.storage.catalog import Catalog
    from wfm_platform.storage.objectstore import ObjectStore

    batch = tmp / "batch"
    batch.mkdir()
    for f in files:
        os.symlink(f.resolve(), batch / f.name)
    store, catalog = ObjectStore(tmp / "store"), Catalog(str(tmp / "catalog"))
    stages = {}
    t_all = time.perf_counter()

    def timed(name, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        stages[name] = round(time.perf_counter() - t, 2)
        return out

    timed("raw_videos", P.stage_raw_videos, store, catalog, "bench", str(batch), cfg)
    clips = timed("clips", P.stage_clips, store, catalog, "bench", cfg)
    timed("clip_scores", P.stage_clip_scores, store, "bench", cfg)
    timed("filtered_clips", P.stage_filtered_clips, store, catalog, "bench", cfg)
    timed("captions", P.stage_captions, store, catalog, "bench", make_captioner("signals"))
    timed("clip_embeddings", P.stage_clip_embeddings, store, catalog, "bench", make_embedder("visual-signature"))
    timed("deduplicated_clips", P.stage_deduplicated_clips, store, catalog, "bench", cfg)
    timed("guarded_clips", P.stage_guarded_clips, store, catalog, "bench", P.make_post_guard(cfg))
    shards = timed("webdataset_shards", P.stage_webdataset_shards, store, "bench", cfg)
    wall = time.perf_counter() - t_all
    video_s = sum(probe(f).duration_s for f in files)
    return {"videos": len(files), "wall_s": round(wall, 2), "stage_s": stages,
            "videos_per_hour": round(len(files) * 3600 / wall, 1),
            "video_hours_per_hour": round(video_s / wall, 3),
            "clips_per_hour": round(clips["num_clips"] * 3600 / wall, 1),
            "samples_in_shards": shards["num_samples"]}


def _peak_rss_mb(path: Path) -> dict:
    """Shot detection + transcode of up to 300 frames in a fresh process; peak RSS (VmHWM) in MB.

    VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child would report its parent's peak."""
    code = (
        "import sys, tempfile, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from wfm_platform.curation.shots import detect_shots\n"
        "from wfm_platform.video.encode import transcode_segments\n"
        "t = time.perf_counter(); r = detect_shots(sys.argv[1])\n"
        "s = r.shots[0]\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    transcode_segments(sys.argv[1], [(s.start_frame, min(s.end_frame, s.start_frame + 299), d + '/c.mp4')], fps=r.fps)\n"
        "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "print(r.num_frames, hwm / 1024, time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    n, mb, s = out.stdout.split()
    return {"file": path.name, "frames": int(n), "peak_rss_mb": round(float(mb), 1), "seconds": round(float(s), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "bench1080")
    ap.add_argument("--long-seconds", type=float, default=40.0)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-end-to-end", action="store_true")
    a = ap.parse_args()

    files = make_inputs(a.out)
    cfg = PipelineConfig.load()
    fcfg = FilterConfig.from_yaml(cfg.filters_path())
    embedder, ocr = make_embedder("visual-signature"), get_ocr()
    report: dict = {"machine": machine(), "inputs": [str(f) for f in files]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            fps, n = decode_fps(f)
            r = analyse(f, cfg, fcfg, embedder, ocr, Path(tmp))
            r["decode_fps"] = fps
            rows.append(r)
        frames = sum(r["frames"] for r in rows)
        decode_s = sum(r["frames"] / r["decode_fps"] for r in rows)
        analysis_s = sum(r["split_s"] + r["collect_s"] + r["filters_s"] + r["embed_s"] for r in rows)
        transcode_s = sum(r["transcode_s"] for r in rows)
        report["per_file"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
        report["decode_fps"] = round(frames / decode_s, 1)
        report["analysis"] = {
            "fps": round(frames / analysis_s, 1),
            "ratio_to_decode": round(decode_s / analysis_s, 3),
            "target_ratio": 0.5,
            "seconds": {k: round(sum(r[k] for r in rows), 2) for k in ("split_s", "collect_s", "filters_s", "embed_s")},
        }
        report["transcode"] = {"fps": round(sum(r["clip_frames"] for r in rows) / transcode_s, 1),
                               "ratio_to_decode": round(decode_s / transcode_s, 3),
                               "crf": cfg.clips.crf, "preset": cfg.clips.preset}
        if not a.no_end_to_end:
            report["end_to_end"] = end_to_end(files, cfg, Path(tmp))
    if not a.no_memory:
        short = make_inputs(a.out)[0]
        long = make_long(a.out, a.long_seconds)
        report["memory"] = [_peak_rss_mb(short), _peak_rss_mb(long)]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
