"""Real 1080p H.264 test input made from the sample footage (upscaled: no 1080p footage ships in
any package here). Used by bench/curation_throughput.py and the long-input memory test.

    python bench/make_1080p.py --out .cache/bench1080 [--fps 30] [--long-seconds 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wfm_platform import samples  # noqa: E402
from wfm_platform.video import iter_frames, probe, write_mp4  # noqa: E402

SIZE = (1920, 1080)


def _frames(sources, size=SIZE):
    for src, start, end in sources:
        for _, img in iter_frames(src, start=start, end=end, size=size):
            yield img


def make_inputs(out: Path, fps: float = 25.0) -> list[Path]:
    """Three 1080p videos: a multi-shot one (bikes: 5 real cuts + cockatoo), animation, handheld."""
    d = samples.fetch()
    out.mkdir(parents=True, exist_ok=True)
    plan = {
        "bikes_cockatoo_1080p.mp4": [(d / "bikes.mp4", 0, 249), (d / "cockatoo.mp4", 0, 139)],
        "bigbuckbunny_1080p.mp4": [(d / "bigbuckbunny.mp4", 0, 131)],
        "vtest_1080p.mp4": [(d / "vtest.avi", 0, 199)],
    }
    paths = []
    for name, sources in plan.items():
        p = out / name
        if not p.exists():
            write_mp4(_frames(sources), p, fps=fps, crf=23, preset="veryfast")
        paths.append(p)
    return paths


def make_long(out: Path, seconds: float, fps: float = 60.0) -> Path:
    """A long 1080p60 video (the real footage looped) for the bounded-memory check."""
    d = samples.fetch()
    p = out / f"long_{int(seconds)}s_1080p{int(fps)}.mp4"
    if p.exists():
        return p
    need = int(seconds * fps)
    srcs = [(d / "cockatoo.mp4", 0, 279), (d / "bikes.mp4", 0, 249), (d / "vtest.avi", 0, 794)]

    def gen():
        n = 0
        while True:
            for img in _frames(srcs):
                if n >= need:
                    return
                n += 1
                yield img

    out.mkdir(parents=True, exist_ok=True)
    write_mp4(gen(), p, fps=fps, crf=28, preset="ultrafast")
    return p


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path(".cache/bench1080"))
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--long-seconds", type=float, default=0)
    a = ap.parse_args()
    ps = make_inputs(a.out, a.fps)
    if a.long_seconds:
        ps.append(make_long(a.out, a.long_seconds))
    print(json.dumps([{"path": str(p), **{k: v for k, v in probe(p).to_dict().items()
                                          if k in ("width", "height", "fps", "num_frames")}} for p in ps]))
