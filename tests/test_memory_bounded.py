"""Streaming, not loading: peak memory of shot detection and transcode does not grow with length.

tracemalloc sees numpy's buffers, so a stage that kept every frame would show up here. Shot detection
analyses in chunks (ShotConfig.chunk_frames, 1536 by default); the test uses small chunks so that a
few thousand tiny frames span many of them. The 1080p60 numbers are in bench/curation_throughput.py.
"""

import tracemalloc

import pytest

from wfm_platform.curation.shots import ShotConfig, detect_shots
from wfm_platform.video import iter_frames, write_mp4
from wfm_platform.video.encode import transcode_segments


def _looped(samples_dir, path, n):
    def gen():
        k = 0
        while True:
            for _, img in iter_frames(samples_dir / "bikes.mp4", size=(160, 90)):
                if k >= n:
                    return
                k += 1
                yield img

    write_mp4(gen(), path, fps=25, preset="ultrafast")
    return path


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def short_and_long(tmp_path_factory, samples_dir):
    d = tmp_path_factory.mktemp("long")
    return _looped(samples_dir, d / "short.mp4", 1000), _looped(samples_dir, d / "long.mp4", 5000)


def test_shot_detection_memory_does_not_grow_with_length(short_and_long):
    short, long = short_and_long
    cfg = ShotConfig(chunk_frames=256)
    p_short = _peak(lambda: detect_shots(short, cfg))
    r = {}
    p_long = _peak(lambda: r.setdefault("res", detect_shots(long, cfg)))
    assert r["res"].num_frames == 5000 and len(r["res"].shots) >= 100  # bikes' cuts, looped
    assert p_long < 1.3 * p_short + 2e6, (p_short, p_long)


def test_transcode_memory_does_not_grow_with_length(short_and_long, tmp_path):
    short, long = short_and_long
    p_short = _peak(lambda: transcode_segments(short, [(0, 999, tmp_path / "a.mp4")], fps=25))
    p_long = _peak(lambda: transcode_segments(long, [(0, 4999, tmp_path / "b.mp4")], fps=25))
    assert p_long < 1.3 * p_short + 2e6, (p_short, p_long)
