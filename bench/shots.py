"""Benchmark: our shot detector vs. PySceneDetect (ContentDetector, AdaptiveDetector; default settings).

Scores F1 (+-2 frames, rule in wfm_platform/curation/devset.py) on the composite split (default "test",
never used for tuning) and on real footage with known cuts (bikes.mp4, Megamind.avi), and frames/s of
each detector end to end (decode included). Detectors run interleaved video by video so load from
other processes hits all of them alike. Prints one JSON object.

    python bench/shots.py [--split test|dev] [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wfm_platform import samples  # noqa: E402
from wfm_platform.curation import devset, shots  # noqa: E402


def run_ours(path: Path) -> list[shots.Transition]:
    return shots.detect_shots(path).transitions


def _run_scenedetect(path: Path, detector) -> list[int]:
    from scenedetect import SceneManager, open_video

    video = open_video(str(path))  # default backend (OpenCV) and default settings incl. auto downscale
    manager = SceneManager()
    manager.add_detector(detector)
    manager.detect_scenes(video)
    return [start.get_frames() for start, _ in manager.get_scene_list()[1:]]


def run_content(path: Path) -> list[int]:
    from scenedetect import ContentDetector

    return _run_scenedetect(path, ContentDetector())


def run_adaptive(path: Path) -> list[int]:
    from scenedetect import AdaptiveDetector

    return _run_scenedetect(path, AdaptiveDetector())


def decode_only(path: Path) -> None:
    """Plain PyAV decode with threads, no conversion: the speed floor everything is compared to."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for _ in c.decode(s):
            pass


DETECTORS = {"ours": run_ours, "pyscenedetect_content": run_content, "pyscenedetect_adaptive": run_adaptive}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=["test", "dev"])
    ap.add_argument("--out", default=str(Path.home() / ".cache" / "wfm-platform" / "shots-devset"))
    ap.add_argument("--quick", action="store_true", help="3 composites + bikes only")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    sdir = samples.fetch()
    composites = devset.build_devset(args.out, sdir, split=args.split, count=3 if args.quick else None)
    real = devset.real_videos(sdir)
    if args.quick:
        real = real[:1]
    sets = {args.split: composites, **{v.name: [v] for v in real}}

    scores: dict[str, dict[str, list[dict]]] = {d: {s: [] for s in sets} for d in DETECTORS}
    frames = dict.fromkeys(list(DETECTORS) + ["decode_only"], 0)
    seconds = dict.fromkeys(list(DETECTORS) + ["decode_only"], 0.0)
    for set_name, videos in sets.items():
        for v in videos:
            t = time.perf_counter()
            decode_only(v.path)
            seconds["decode_only"] += time.perf_counter() - t
            frames["decode_only"] += v.num_frames
            for name, fn in DETECTORS.items():
                t = time.perf_counter()
                pred = fn(v.path)
                seconds[name] += time.perf_counter() - t
                frames[name] += v.num_frames
                scores[name][set_name].append(devset.evaluate(pred, v.transitions, ignore=v.ignore))

    def rounded(d: dict) -> dict:
        return {k: round(x, 4) if isinstance(x, float) else x for k, x in d.items()}

    report: dict = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "split": args.split,
        "quick": args.quick,
        "videos": {s: len(v) for s, v in sets.items()},
        "frames": {s: sum(x.num_frames for x in v) for s, v in sets.items()},
        "tolerance_frames": 2,
        "detectors": {},
    }
    for name in DETECTORS:
        per_set = {s: rounded(devset.merge_scores(r)) for s, r in scores[name].items()}
        per_set["overall"] = rounded(devset.merge_scores([x for r in scores[name].values() for x in r]))
        report["detectors"][name] = {
            **per_set,
            "frames_per_s": round(frames[name] / seconds[name], 1),
        }
    report["decode_only_frames_per_s"] = round(frames["decode_only"] / seconds["decode_only"], 1)
    ours = report["detectors"]["ours"]
    report["ratios"] = {}
    for name in ("pyscenedetect_content", "pyscenedetect_adaptive"):
        theirs = report["detectors"][name]
        report["ratios"][name] = {
            f"f1_{s}": round(ours[s]["f1"] / theirs[s]["f1"], 3) if theirs[s]["f1"] else None
            for s in [*sets, "overall"]
        }
        report["ratios"][name]["fps"] = round(ours["frames_per_s"] / theirs["frames_per_s"], 3)
    report["ratios"]["ours_vs_decode_only_fps"] = round(
        ours["frames_per_s"] / report["decode_only_frames_per_s"], 3
    )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
