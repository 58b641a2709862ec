"""Benchmark: the video post-guard (face blur + unsafe classifier) on real faces and real footage.

- detectors: share of LFW face crops (scikit-image lfw_subset, 100 faces / 100 non-faces) found when
  pasted at 20..96 px into real vtest.avi frames, for Haar, dlib HOG and their union (the default);
- blur recall on composites: real faces (LFW crops, skimage astronaut) pasted at several sizes, MOVING
  across real vtest.avi / cockatoo.mp4 frames, run through FaceBlurrer with the default config. Counted:
  ground-truth face boxes >= 90% covered by blur, and faces the INDEPENDENT checker (NudeNet's CNN FACE_*
  classes, a different model family from Haar/HOG) finds before vs after blurring; share of non-face
  pixels changed (outside the face box grown by 50%);
- real faces in real video: carphone_pristine.mp4, Megamind.avi: frames where the checker sees a face
  before / after;
- speed: ms per frame (wall and CPU) of FaceBlurrer at 720p and 1080p (cockatoo upscaled), detect_every 1
  and 3, for the default config, the baseline (every pass on every detector run, as before the cadences),
  `fast` (Haar's small-face pass every 2nd run) and `small1920` (1080p searched at full res for 20 px);
- composites are run for the default, the baseline and `fast` (recall by face size 20..160 px);
- unsafe classifier: false-positive rate (videos and sampled frames) on all sample footage at the
  default threshold, every 0.5 s, and its ms per frame.

Prints one JSON object.   python bench/guardrails_faces.py [--quick] [--only speed,composites,...]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wfm_platform import samples
from wfm_platform.guardrails.faces import (
    DlibHogFaceDetector,
    FaceBlurConfig,
    FaceBlurrer,
    HaarFaceDetector,
    NudeNetFaceDetector,
    UnionFaceDetector,
    box_iou,
)
from wfm_platform.guardrails.unsafe import NudeNetClassifier, UnsafeConfig
from wfm_platform.video import iter_frames, probe


def lfw_faces():
    from skimage import data

    x = (data.lfw_subset() * 255).astype(np.uint8)  # 25x25 gray; first 100 faces, last 100 non-faces
    return [cv2.cvtColor(c, cv2.COLOR_GRAY2RGB) for c in x[:100]], [
        cv2.cvtColor(c, cv2.COLOR_GRAY2RGB) for c in x[100:]
    ]


def astronaut_face():
    from skimage import data

    return data.astronaut()[55:190, 155:285]


def paste(frame, crop, x, y, side):
    c = cv2.resize(crop, (side, round(side * crop.shape[0] / crop.shape[1])), interpolation=cv2.INTER_CUBIC)
    h, w = c.shape[:2]
    frame[y : y + h, x : x + w] = c
    return (x, y, x + w, y + h)


def hit(boxes, gt, iou=0.2):
    return any(box_iou(np.asarray(b, float), np.asarray(gt, float)) >= iou for b in boxes)


def bench_detectors(bg, quick):
    faces, nonfaces = lfw_faces()
    step = 4 if quick else 1
    dets = {"haar": HaarFaceDetector(), "dlib_hog": DlibHogFaceDetector(), "union(default)": None}
    dets["union(default)"] = UnionFaceDetector([dets["haar"], dets["dlib_hog"]])
    out = {}
    for name, d in dets.items():
        row = {}
        for side in (20, 32, 48, 64, 96):
            found = fp = 0
            for i in range(0, 100, step):
                f = bg.copy()
                gt = paste(f, faces[i], 100 + (i % 5) * 20, 80, side)
                found += hit(d.detect(f), gt)
                g = bg.copy()
                gt2 = paste(g, nonfaces[i], 100 + (i % 5) * 20, 80, side)
                fp += hit(d.detect(g), gt2)
            n = len(range(0, 100, step))
            row[f"{side}px"] = {"face_found": round(found / n, 3), "nonface_crop_flagged": round(fp / n, 3)}
        out[name] = row
    return out


def composite_clip(src, size, crop, side, n, speed=5):
    frames, gts = [], []
    for i, (_, f) in enumerate(iter_frames(src, end=n - 1, size=size)):
        f = f.copy()
        x = 30 + speed * i
        gts.append(paste(f, crop, x, size[1] // 3, side))
        frames.append(f)
    return frames, gts


def coverage(rects, gt):
    x0, y0, x1, y1 = gt
    m = np.zeros((y1 - y0, x1 - x0), bool)
    for a0, b0, a1, b1 in rects:
        m[max(0, b0 - y0) : max(0, b1 - y0), max(0, a0 - x0) : max(0, a1 - x0)] = True
    return float(m.mean())


# the config before the detector cadences: one Haar pass at max_det_side, HOG, on every detector run
BASELINE = {"small_face_every": 1, "hog_every": 1, "small_face_side": 1280}


def bench_blur_composites(d, checker, quick, cfg_kw=None):
    faces, _ = lfw_faces()
    crops = {"astronaut": astronaut_face(), "lfw0": faces[0], "lfw7": faces[7], "lfw42": faces[42]}
    srcs = {"vtest": (d / "vtest.avi", (768, 576)), "cockatoo": (d / "cockatoo.mp4", (1280, 720))}
    n = 12 if quick else 30
    rows = []
    for sname, (src, size) in srcs.items():
        for cname, crop in crops.items():
            for side in (20, 24, 32, 48, 64, 96, 160):
                frames, gts = composite_clip(src, size, crop, side, n)
                b = FaceBlurrer(FaceBlurConfig(**(cfg_kw or {})))
                b.frame_rects = {}
                out = list(b.process(frames))
                cov = [coverage(b.frame_rects[i], g) for i, g in enumerate(gts)]
                before = after = 0
                changed = []
                for f, o, g in zip(frames, out, gts):
                    before += hit(checker.detect(f), g)
                    after += hit(checker.detect(o), g)
                    x0, y0, x1, y1 = g
                    gx, gy = (x1 - x0) // 2, (y1 - y0) // 2
                    m = np.ones(f.shape[:2], bool)
                    m[max(0, y0 - gy) : y1 + gy, max(0, x0 - gx) : x1 + gx] = False
                    changed.append(
                        float((np.abs(f.astype(np.int16) - o.astype(np.int16)).max(axis=2)[m] > 0).mean())
                    )
                rows.append(
                    {
                        "bg": sname,
                        "face": cname,
                        "side_px": side,
                        "frames": n,
                        "covered_90": round(sum(c >= 0.9 for c in cov) / n, 3),
                        "checker_before": before,
                        "checker_after": after,
                        "nonface_changed": round(float(np.mean(changed)), 4),
                    }
                )
    tot_b = sum(r["checker_before"] for r in rows)
    tot_a = sum(r["checker_after"] for r in rows)
    by_size = {}
    for side in sorted({r["side_px"] for r in rows}):
        rs = [r for r in rows if r["side_px"] == side]
        by_size[f"{side}px"] = round(float(np.mean([r["covered_90"] for r in rs])), 3)
    return {
        "rows": rows,
        "gt_frames_covered_90_by_size": by_size,
        "gt_frames_covered_90": round(float(np.mean([r["covered_90"] for r in rows])), 3),
        "checker_faces_before": tot_b,
        "checker_faces_after": tot_a,
        "blur_recall_by_checker": round(1 - tot_a / max(1, tot_b), 3),
        "nonface_pixels_changed_mean": round(float(np.mean([r["nonface_changed"] for r in rows])), 4),
    }


def bench_real_faces(d, checker, quick):
    res = {}
    for name in ("carphone_pristine.mp4", "Megamind.avi"):
        p = d / name
        if not p.exists():
            continue
        end = 59 if quick else None
        frames = [f for _, f in iter_frames(p, end=end)]
        b = FaceBlurrer(FaceBlurConfig())
        out = list(b.process(frames))
        before = sum(len(checker.detect(f)) > 0 for f in frames)
        after = sum(len(checker.detect(o)) > 0 for o in out)
        res[name] = {
            "frames": len(frames),
            "checker_frames_with_face_before": before,
            "checker_frames_with_face_after": after,
            "blurred_area_share": round(b.stats.blurred_area_share, 3),
        }
    return res


def bench_speed(d, quick):
    """ms per frame (wall, and CPU seconds of this process: the machine may be shared) of the default
    config and of the previous one (every pass on every detector run), interleaved in one process."""
    n = 12 if quick else 30
    res = {}
    configs = {
        "every1": {"detect_every": 1},
        "every3": {"detect_every": 3},
        "every3_baseline": dict(detect_every=3, **BASELINE),  # before the cadences
        "every3_fast": {"detect_every": 3, "small_face_every": 2},  # Haar's fine pass every 2nd run
        "every3_small1920": {"detect_every": 3, "small_face_side": 1920},  # 20 px faces at 1080p
    }
    for label, size in (("720p", (1280, 720)), ("1080p", (1920, 1080))):
        frames = [f for _, f in iter_frames(d / "cockatoo.mp4", end=n - 1, size=size)]
        for name, kw in configs.items():
            b = FaceBlurrer(FaceBlurConfig(**kw))
            t0, c0 = time.perf_counter(), time.process_time()
            list(b.process(frames))
            res[f"{label}_{name}_ms_per_frame"] = round((time.perf_counter() - t0) * 1000 / n, 1)
            res[f"{label}_{name}_cpu_ms_per_frame"] = round((time.process_time() - c0) * 1000 / n, 1)
            res[f"{label}_{name}_detector_ms_per_run"] = round(
                b.stats.det_ms / max(1, b.stats.detector_runs), 1
            )
    return res


def bench_unsafe(d):
    cfg = UnsafeConfig()
    clf = NudeNetClassifier()
    res, frames, flagged, ms = {}, 0, 0, []
    for name in samples.CLEAN_VIDEOS:
        p = d / name
        if not p.exists():
            continue
        info = probe(p)
        step = max(1, round(info.fps * cfg.sample_every_s))
        scores = []
        for _, f in iter_frames(p, step=step):
            t0 = time.perf_counter()
            scores.append(clf.classify(f).score)
            ms.append((time.perf_counter() - t0) * 1000)
        frames += len(scores)
        fl = sum(s >= cfg.threshold for s in scores)
        flagged += fl
        res[name] = {
            "sampled": len(scores),
            "max_score": round(max(scores), 3),
            "flagged": fl,
            "flagged_at_0.5": sum(s >= 0.5 for s in scores),
        }
    return {
        "threshold": cfg.threshold,
        "videos": res,
        "video_fpr": round(sum(v["flagged"] > 0 for v in res.values()) / max(1, len(res)), 3),
        "frame_fpr": round(flagged / max(1, frames), 4),
        "video_fpr_at_0.5": round(sum(v["flagged_at_0.5"] > 0 for v in res.values()) / max(1, len(res)), 3),
        "ms_per_frame": round(float(np.median(ms)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer crops and frames")
    ap.add_argument(
        "--only",
        default="detectors,composites,baseline_composites,mn3_composites,fast_composites,real,speed,unsafe",
        help="comma-separated sections to run",
    )
    args = ap.parse_args()
    only = set(args.only.split(","))
    d = samples.fetch()
    checker = NudeNetFaceDetector()
    bg = next(f for _, f in iter_frames(d / "vtest.avi", start=100, end=100, size=(640, 480)))
    t0 = time.time()
    sections = {
        "detectors_on_lfw": ("detectors", lambda: bench_detectors(bg, args.quick)),
        "blur_composites": ("composites", lambda: bench_blur_composites(d, checker, args.quick)),
        "blur_composites_baseline": (
            "baseline_composites",
            lambda: bench_blur_composites(d, checker, args.quick, BASELINE),
        ),
        "blur_composites_small_min_neighbors_3": (  # the default before 2026-11-27
            "mn3_composites",
            lambda: bench_blur_composites(d, checker, args.quick, {"small_face_min_neighbors": 3}),
        ),
        "blur_composites_min_neighbors_2": (  # 2 for every face size: more recall, a cockatoo's head blurred
            "mn2_composites",
            lambda: bench_blur_composites(d, checker, args.quick, {"min_neighbors": 2}),
        ),
        "blur_composites_fast": (
            "fast_composites",
            lambda: bench_blur_composites(d, checker, args.quick, {"small_face_every": 2}),
        ),
        "real_faces": ("real", lambda: bench_real_faces(d, checker, args.quick)),
        "speed": ("speed", lambda: bench_speed(d, args.quick)),
        "unsafe": ("unsafe", lambda: bench_unsafe(d)),
    }
    out = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads_cv2": cv2.getNumThreads()},
        "config": FaceBlurConfig().model_dump(),
        "baseline_overrides": BASELINE,
    }
    for key, (flag, fn) in sections.items():
        if flag in only:
            out[key] = fn()
    out["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
