"""Shot detection on real footage, on a composite with known dissolve / fade / flash, and on broken input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wfm_platform import samples
from wfm_platform.curation.devset import evaluate
from wfm_platform.curation.shots import (
    Shot,
    ShotConfig,
    ShotResult,
    Transition,
    apply_clip_rules,
    boundaries,
    detect_shots,
)
from wfm_platform.video import VideoError, iter_frames, write_mp4

SIZE = (320, 180)


@pytest.fixture(scope="module")
def sample_dir() -> Path:
    return samples.fetch()


def _assert_partition(result: ShotResult) -> None:
    """Shots are ordered, disjoint, and together with the gradual transitions cover every frame once."""
    covered = np.zeros(result.num_frames, int)
    for s in result.shots:
        assert 0 <= s.start_frame <= s.end_frame < result.num_frames
        covered[s.start_frame : s.end_frame + 1] += 1
    for t in result.transitions:
        if t.kind != "cut":
            covered[t.start_frame : t.end_frame + 1] += 1
    assert (covered == 1).all()
    starts = [s.start_frame for s in result.shots]
    assert starts == sorted(starts)
    for sig in result.signals.values():
        assert len(sig) == result.num_frames


def test_bikes_real_cuts(sample_dir):
    result = detect_shots(sample_dir / "bikes.mp4")
    truth = [Transition("cut", c, c) for c in samples.BIKES_CUTS]
    score = evaluate(result, truth, tolerance=2)
    assert score["tp"] == 5 and score["fp"] == 0, result.transitions
    assert result.num_frames == samples.BIKES_FRAMES
    assert len(result.shots) == 6
    assert all(t.kind == "cut" for t in result.transitions)
    _assert_partition(result)
    assert boundaries(result) == [s.start_frame for s in result.shots[1:]]


def _clip(path: Path, start: int, n: int) -> list[np.ndarray]:
    return [img for _, img in iter_frames(path, start=start, end=start + n - 1, size=SIZE)]


@pytest.fixture(scope="module")
def composite(sample_dir, tmp_path_factory) -> tuple[Path, list[Transition], tuple[int, int]]:
    """vtest -> dissolve -> cockatoo (with a 2-frame flash) -> fade through black -> bigbuckbunny."""
    a = _clip(sample_dir / "vtest.avi", 100, 40)
    b = _clip(sample_dir / "cockatoo.mp4", 20, 70)
    c = _clip(sample_dir / "bigbuckbunny.mp4", 10, 40)
    frames: list[np.ndarray] = []
    frames += a[:28]
    L = 12  # dissolve: a[28:40] x b[0:12]
    for j in range(L):
        w = (j + 1) / (L + 1)
        frames.append(((1 - w) * a[28 + j] + w * b[j]).round().astype(np.uint8))
    dissolve = Transition("dissolve", 28, 28 + L - 1)
    body = [f.copy() for f in b[L:62]]
    flash_at = len(frames) + 20
    for k, beta in enumerate((0.85, 0.5)):  # camera flash: brighten two frames towards white
        f = body[20 + k].astype(np.float32)
        body[20 + k] = (f + (255 - f) * beta).astype(np.uint8)
    frames += body
    fade_start = len(frames)
    for j in range(8):  # fade-out over b[62:70], 2 black frames, fade-in over c[0:8]
        frames.append((b[62 + j] * (1 - (j + 1) / 9)).astype(np.uint8))
    frames += [np.zeros_like(c[0])] * 2
    for j in range(8):
        frames.append((c[j] * ((j + 1) / 9)).astype(np.uint8))
    fade = Transition("fade", fade_start, len(frames) - 1)
    frames += c[8:]
    path = tmp_path_factory.mktemp("shots") / "composite.mp4"
    write_mp4(frames, path, fps=25, crf=20)
    return path, [dissolve, fade], (flash_at, flash_at + 1)


def test_composite_dissolve_fade_flash(composite):
    path, truth, flash = composite
    result = detect_shots(path)
    score = evaluate(result, truth, tolerance=2)
    assert score["tp"] == 2 and score["fp"] == 0, result.transitions
    kinds = {t.kind for t in result.transitions}
    assert kinds == {"dissolve", "fade"}, result.transitions
    # The flash is not a boundary.
    assert not any(t.start_frame - 3 <= flash[0] <= t.end_frame + 3 for t in result.transitions)
    assert len(result.shots) == 3
    _assert_partition(result)
    # Signals show the flash and the black frames.
    assert result.signals["luma_mean"][flash[0]] > result.signals["luma_mean"][flash[0] - 2] + 40
    assert result.signals["luma_mean"][truth[1].start_frame + 9] < 20


def test_chunked_streaming_matches_one_pass(sample_dir):
    # Small chunks force several analysis windows over bikes.mp4 (cuts near the chunk borders).
    path = sample_dir / "bikes.mp4"
    whole = detect_shots(path)
    chunked = detect_shots(path, ShotConfig(chunk_frames=32))
    assert chunked.transitions == whole.transitions
    assert chunked.shots == whole.shots
    for k in whole.signals:
        np.testing.assert_allclose(chunked.signals[k], whole.signals[k], atol=1e-5)


def test_progress_called(sample_dir):
    seen: list[int] = []
    detect_shots(sample_dir / "bikes.mp4", progress=seen.append)
    assert seen[:2] == [100, 200] and seen[-1] == samples.BIKES_FRAMES


def test_one_frame_video(sample_dir, tmp_path):
    img = next(iter_frames(sample_dir / "bikes.mp4", size=SIZE))[1]
    path = tmp_path / "one.mp4"
    write_mp4([img], path, fps=25)
    result = detect_shots(path)
    assert result.num_frames == 1
    assert result.shots == [Shot(0, 0)]
    assert result.transitions == []


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        detect_shots(p)


def test_not_a_video(tmp_path):
    p = tmp_path / "noise.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError):
        detect_shots(p)


def test_truncated_tail_stops_at_last_good_frame(sample_dir, tmp_path):
    # AVI needs no trailing index, so a file cut in half still decodes up to the cut.
    data = (sample_dir / "vtest.avi").read_bytes()
    p = tmp_path / "truncated.avi"
    p.write_bytes(data[: len(data) // 2])
    result = detect_shots(p)
    assert 300 < result.num_frames < 795
    assert result.shots and result.shots[-1].end_frame <= result.num_frames - 1
    _assert_partition(result)


def test_corrupted_real_video_does_not_crash(sample_dir):
    path = sample_dir / "Megamind_bugy.avi"
    if not path.exists():
        pytest.skip("Megamind_bugy.avi not fetched (needs apt-get)")
    result = detect_shots(path)
    assert result.num_frames > 0
    _assert_partition(result)


# ------------------------------------------------------------------------------------ clip rules


def test_clip_rules_drop_short():
    fps = 25.0
    shots = [Shot(0, 48), Shot(49, 98), Shot(99, 300)]  # 49 frames = 1.96 s, 50 = 2.0 s, 202
    assert apply_clip_rules(shots, fps) == [Shot(49, 98), Shot(99, 300)]


def test_clip_rules_split_long():
    fps = 25.0
    long = Shot(100, 100 + 61 * 25 - 1)  # 61 s -> two pieces of 30.5 s
    pieces = apply_clip_rules([long], fps)
    assert len(pieces) == 2
    assert pieces[0].start_frame == 100 and pieces[-1].end_frame == long.end_frame
    for p, q in zip(pieces, pieces[1:]):
        assert q.start_frame == p.end_frame + 1  # contiguous, inclusive bounds
    lengths = [p.num_frames for p in pieces]
    assert max(lengths) <= 60 * 25 and max(lengths) - min(lengths) <= 1
    # Exactly 60 s stays whole; 150 s -> 3 pieces of 50 s.
    assert apply_clip_rules([Shot(0, 1499)], fps) == [Shot(0, 1499)]
    three = apply_clip_rules([Shot(0, 150 * 25 - 1)], fps)
    assert [p.num_frames for p in three] == [1250, 1250, 1250]


def test_clip_rules_bad_fps():
    with pytest.raises(ValueError):
        apply_clip_rules([Shot(0, 10)], 0)


# ------------------------------------------------------------------------------------ evaluation rule


def test_evaluate_matching_rule():
    truth = [Transition("cut", 50, 50), Transition("dissolve", 100, 111)]
    # 52 within +-2 of the cut; 113 touches the dissolve's end + 2; 53 is a second hit on a used cut.
    s = evaluate([52, 53, 113], truth)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 0)
    s = evaluate([Transition("dissolve", 95, 98)], truth)  # overlaps [98, 113]
    assert (s["tp"], s["fp"], s["fn"]) == (1, 0, 1)
    s = evaluate([47], truth)
    assert (s["tp"], s["fp"], s["fn"]) == (0, 1, 2) and s["f1"] == 0.0


def test_shots_are_plain_ints_for_json(samples_dir):
    """Regression: numpy ints from the analysis broke JSON manifests (vtest.avi, one long shot)."""
    import json

    r = detect_shots(samples_dir / "vtest.avi")
    assert len(r.shots) == 1 and (r.shots[0].start_frame, r.shots[0].end_frame) == (0, 794)
    json.dumps([[s.start_frame, s.end_frame] for s in r.shots + apply_clip_rules(r.shots, r.fps)])
    assert all(type(s.start_frame) is int and type(s.end_frame) is int for s in r.shots)
