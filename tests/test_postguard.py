"""Video post-guard on real footage: faces blurred on every frame (checked by an INDEPENDENT detector),
tracking covers missed detections, unsafe classifier passes our footage and blocks through its protocol,
fail closed, broken input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from wfm_platform.guardrails.faces import FaceBlurConfig, FaceBlurrer, HaarFaceDetector, NudeNetFaceDetector
from wfm_platform.guardrails.postguard import PostGuard, PostGuardConfig, postguard_app
from wfm_platform.guardrails.unsafe import NudeNetClassifier, UnsafeConfig, UnsafeResult
from wfm_platform.guardrails.verdict import GuardError
from wfm_platform.samples import CLEAN_VIDEOS
from wfm_platform.video import VideoError, iter_frames, probe, sample_frames


@pytest.fixture(scope="module")
def guard() -> PostGuard:
    return PostGuard()


@pytest.fixture(scope="module")
def checker() -> NudeNetFaceDetector:
    # a CNN (NudeNet's FACE_* classes): a different model family than the Haar + HOG the blur uses
    return NudeNetFaceDetector()


def test_carphone_face_blurred_on_every_frame(guard, checker, samples_dir, tmp_path):
    src = samples_dir / "carphone_pristine.mp4"
    out, v = guard.apply(src, tmp_path / "carphone.guarded.mp4")
    assert v.allowed and out is not None and out.exists(), v.reasons
    before = [len(checker.detect(f)) > 0 for _, f in iter_frames(src)]
    after = [len(checker.detect(f)) > 0 for _, f in iter_frames(out)]
    assert sum(before) >= 0.9 * len(before)  # the checker does see the face in the original
    assert sum(after) == 0, (
        f"face still found after blurring on frames {[i for i, a in enumerate(after) if a]}"
    )
    # valid H.264 with the same frame count, size and fps
    a, b = probe(src, count_frames=True), probe(out, count_frames=True)
    assert b.codec == "h264" and (b.width, b.height, b.num_frames) == (a.width, a.height, a.num_frames)
    assert b.fps == pytest.approx(a.fps, rel=0.01)
    assert v.scores["faces"] >= 1 and v.scores["faces.frames_blurred"] == a.num_frames


class DroppingDetectorTestDouble:
    """Wraps a real detector and DROPS its detections on chosen frames: simulated misses."""

    name = "dropping"

    def __init__(self, inner, drop: set[int]):
        self.inner, self.drop, self.calls = inner, drop, 0

    def detect(self, rgb):
        i, self.calls = self.calls, self.calls + 1
        return np.zeros((0, 4)) if i in self.drop else self.inner.detect(rgb)


def _moving_face_clip(samples_dir, n=24, side=72):
    """A real face (skimage astronaut) pasted, moving right 6 px/frame, into real vtest.avi frames."""
    from skimage import data

    face = data.astronaut()[55:190, 155:285]  # Eileen Collins' head with some hair around it
    face = cv2.resize(face, (side, int(side * face.shape[0] / face.shape[1])), interpolation=cv2.INTER_AREA)
    frames, boxes = [], []
    for i, (_, f) in enumerate(iter_frames(samples_dir / "vtest.avi", end=n - 1, size=(384, 288))):
        x, y = 40 + 6 * i, 90
        f = f.copy()
        f[y : y + face.shape[0], x : x + face.shape[1]] = face
        frames.append(f)
        boxes.append((x, y, x + face.shape[1], y + face.shape[0]))
    return frames, boxes


def _coverage(rects, box) -> float:
    x0, y0, x1, y1 = box
    m = np.zeros((y1 - y0, x1 - x0), bool)
    for a0, b0, a1, b1 in rects:
        m[max(0, b0 - y0) : max(0, b1 - y0), max(0, a0 - x0) : max(0, a1 - x0)] = True
    return float(m.mean())


def test_tracking_covers_frames_the_detector_missed(samples_dir):
    frames, boxes = _moving_face_clip(samples_dir)
    haar = HaarFaceDetector()
    assert sum(len(haar.detect(f)) > 0 for f in frames) >= 0.8 * len(frames)  # the face is findable at all
    drop = {1, 2, 5, 9, 10, 11, 14, 17}  # single misses and a run of three
    # no tracking: detect every frame, boxes live only where found
    bare = FaceBlurrer(
        FaceBlurConfig(detect_every=1, max_missed=0, backfill=0), DroppingDetectorTestDouble(haar, drop)
    )
    bare.frame_rects = {}
    list(bare.process(frames))
    bare_cov = [_coverage(bare.frame_rects[i], b) for i, b in enumerate(boxes)]
    assert min(bare_cov[i] for i in drop) < 0.5  # the simulated misses really leave the face bare

    tracked = FaceBlurrer(FaceBlurConfig(detect_every=1), DroppingDetectorTestDouble(haar, drop))
    tracked.frame_rects = {}
    out = list(tracked.process(frames))
    assert len(out) == len(frames)
    cov = [_coverage(tracked.frame_rects[i], b) for i, b in enumerate(boxes)]
    assert min(cov) >= 0.9, [round(c, 2) for c in cov]

    # non-face pixels mostly unchanged: outside the face box grown by 50%, < 1% of pixels differ
    changed = []
    for f, o, (x0, y0, x1, y1) in zip(frames, out, boxes):
        m = np.ones(f.shape[:2], bool)
        gx, gy = (x1 - x0) // 2, (y1 - y0) // 2
        m[max(0, y0 - gy) : y1 + gy, max(0, x0 - gx) : x1 + gx] = False
        changed.append(float((np.abs(f.astype(int) - o.astype(int)).max(axis=2)[m] > 0).mean()))
    assert max(changed) < 0.01, changed


def test_sparse_detection_interpolates_between_detections(samples_dir):
    frames, boxes = _moving_face_clip(samples_dir)
    b = FaceBlurrer(FaceBlurConfig(detect_every=4), HaarFaceDetector())
    b.frame_rects = {}
    list(b.process(frames))
    assert b.stats.detector_runs <= len(frames) // 4 + 2
    assert min(_coverage(b.frame_rects[i], box) for i, box in enumerate(boxes)) >= 0.9


def test_sample_videos_pass_unsafe_classifier(samples_dir):
    clf = NudeNetClassifier()
    for name in CLEAN_VIDEOS:
        p = samples_dir / name
        if not p.exists():
            continue
        info = probe(p)
        for idx, f in sample_frames(p, 0, info.num_frames - 1, 8):
            r = clf.classify(f)
            assert r.score < UnsafeConfig().threshold, f"{name} frame {idx} flagged: {r.labels}"


class UnsafeClassifierTestDouble:
    """Stands in for a real unsafe model (no explicit images may be used here): flags frames >= `from_frame`."""

    name = "test_double"

    def __init__(self, from_frame: int):
        self.from_frame, self.seen = from_frame, 0

    def classify(self, rgb):
        i, self.seen = self.seen, self.seen + 1
        return UnsafeResult(0.97, {"TEST_UNSAFE": 0.97}) if i >= self.from_frame else UnsafeResult(0.0)


def test_unsafe_frame_rejects_video_and_writes_nothing(samples_dir, tmp_path):
    g = PostGuard(unsafe_classifier=UnsafeClassifierTestDouble(from_frame=3))
    dst = tmp_path / "bikes.guarded.mp4"
    out, v = g.apply(samples_dir / "bikes.mp4", dst)
    assert out is None and not v.allowed
    assert any("TEST_UNSAFE" in r for r in v.reasons)
    assert list(tmp_path.iterdir()) == []  # no output, no temp file left behind
    frames, v2 = g.apply_frames([np.zeros((64, 64, 3), np.uint8)] * 5, fps=25)
    assert frames == [] and not v2.allowed


def test_fail_closed_when_unsafe_model_missing_or_broken(samples_dir, tmp_path):
    with pytest.raises(GuardError, match="not found"):
        NudeNetClassifier(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    for path, msg in [(tmp_path / "missing.onnx", "not found"), (bad, "cannot load")]:
        g = PostGuard(PostGuardConfig(unsafe=UnsafeConfig(model_path=str(path))))
        out, v = g.apply(samples_dir / "carphone_pristine.mp4", tmp_path / "o.mp4")
        assert out is None and not v.allowed and any(msg in r for r in v.reasons), v.reasons
        assert not (tmp_path / "o.mp4").exists()


class FailingClassifierTestDouble:
    name = "failing"

    def classify(self, rgb):
        raise GuardError("unsafe: endpoint down (test double)")


def test_stage_error_mid_run_blocks(samples_dir, tmp_path):
    out, v = PostGuard(unsafe_classifier=FailingClassifierTestDouble()).apply(
        samples_dir / "carphone_pristine.mp4", tmp_path / "o.mp4"
    )
    assert out is None and not v.allowed and "endpoint down" in " ".join(v.reasons)


def test_broken_input_is_a_clear_error(guard, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty file"):
        guard.apply(empty, tmp_path / "o.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError, match="not a video"):
        guard.apply(text, tmp_path / "o2.mp4")
    with pytest.raises(ValueError, match="no frames"):
        guard.apply_frames([], fps=25)
    with pytest.raises(ValueError, match="RGB uint8"):
        guard.apply_frames([np.zeros((32, 32), np.uint8)], fps=25)


def test_cli_json(samples_dir, tmp_path):
    r = CliRunner().invoke(
        postguard_app,
        ["video", str(samples_dir / "carphone_pristine.mp4"), "--out", str(tmp_path / "o.mp4"), "--json"],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["verdict"]["allowed"] and res["output"] == str(tmp_path / "o.mp4")
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"")
    assert CliRunner().invoke(postguard_app, ["video", str(bad)]).exit_code == 2


def test_config_from_yaml(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("pre: {}\npost:\n  faces: {detect_every: 2, method: pixelate}\n  unsafe: {threshold: 0.6}\n")
    cfg = PostGuardConfig.from_yaml(p)
    assert cfg.faces.detect_every == 2 and cfg.faces.method == "pixelate" and cfg.unsafe.threshold == 0.6


# ------------------------------------------------------------------ speed paths: cadences, no re-encode
class _Spy:
    """Wraps a detector and counts its calls."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, 0

    def detect(self, rgb):
        self.calls += 1
        return self.inner.detect(rgb)


def test_cadenced_union_runs_hog_every_other_run_and_still_covers_the_face(samples_dir):
    from wfm_platform.guardrails.faces import DlibHogFaceDetector, UnionFaceDetector

    frames, boxes = _moving_face_clip(samples_dir)
    haar, hog = HaarFaceDetector(), _Spy(DlibHogFaceDetector())
    det = UnionFaceDetector([haar, hog], every=[1, 2], small_every=2, large_face=32)
    assert det.period == 2
    b = FaceBlurrer(FaceBlurConfig(detect_every=3), det)
    b.frame_rects = {}
    out = list(b.process(frames))
    assert len(out) == len(frames)
    assert hog.calls == (b.stats.detector_runs + 1) // 2  # runs 0, 2, 4, ...
    assert min(_coverage(b.frame_rects[i], box) for i, box in enumerate(boxes)) >= 0.9
    with pytest.raises(ValueError, match="one cadence"):
        UnionFaceDetector([haar], every=[1, 2])


@pytest.mark.parametrize("side", [40, 56])
def test_small_faces_covered_with_sparse_small_face_pass(samples_dir, side):
    # the crop is head + hair: the face itself is ~2/3 of `side` (~27 / 37 px), below large_face (48),
    # so only the fine pass that runs on every 2nd detector run finds it; the tracker carries it between
    frames, boxes = _moving_face_clip(samples_dir, side=side)
    haar = HaarFaceDetector()
    assert sum(len(haar.detect(f)) > 0 for f in frames) >= 0.5 * len(frames)  # findable at all
    b = FaceBlurrer(FaceBlurConfig(detector="haar", small_face_every=2))  # the fast option
    b.frame_rects = {}
    list(b.process(frames))
    cov = [_coverage(b.frame_rects[i], box) for i, box in enumerate(boxes)]
    assert np.mean([c >= 0.9 for c in cov]) >= 0.9, [round(c, 2) for c in cov]


def test_small_faces_use_their_own_min_neighbors(samples_dir):
    """20 px faces (scikit-image LFW crops pasted into real vtest footage): min_neighbors 2 below large_face
    finds more of them than 3; faces above it are searched with the stricter setting either way."""
    from skimage import data

    crops = (data.lfw_subset()[:20] * 255).astype(np.uint8)
    bg = cv2.cvtColor(next(f for _, f in iter_frames(samples_dir / "vtest.avi", start=100, end=100)),
                      cv2.COLOR_RGB2GRAY)
    split, strict = HaarFaceDetector(small_min_neighbors=2), HaarFaceDetector()
    assert split.small_min_neighbors == 2 and strict.small_min_neighbors == strict.min_neighbors == 3
    found = {"split": 0, "strict": 0}
    for i, c in enumerate(crops):
        f = bg.copy()
        x, y = 100 + (i % 5) * 20, 80
        f[y: y + 20, x: x + 20] = cv2.resize(c, (20, 20), interpolation=cv2.INTER_CUBIC)
        for name, det in (("split", split), ("strict", strict)):
            found[name] += any(b[0] < x + 10 < b[2] and b[1] < y + 10 < b[3] for b in det.detect(f))
    assert found["split"] > found["strict"], found
    assert FaceBlurConfig().small_face_min_neighbors == 2 and FaceBlurConfig().min_neighbors == 3


def _write(frames, path, fps=25):
    from wfm_platform.video import write_mp4

    write_mp4(iter(frames), path, fps=fps)
    return path


def test_clip_without_faces_is_copied_not_reencoded(samples_dir, tmp_path):
    # a bird, no people: nothing to blur, so the input's bytes are published as they are
    frames = [f for _, f in iter_frames(samples_dir / "cockatoo.mp4", end=11, size=(320, 180))]
    src = _write(frames, tmp_path / "bird.mp4")
    g = PostGuard(unsafe_classifier=UnsafeClassifierTestDouble(from_frame=10**9))
    out, v = g.apply(src, tmp_path / "bird.guarded.mp4")
    assert v.allowed and out is not None, v.reasons
    assert v.scores["faces"] == 0
    assert out.read_bytes() == src.read_bytes()
    # switched off: re-encoded (same frame count, different bytes)
    g2 = PostGuard(PostGuardConfig(copy_when_unchanged=False), unsafe_classifier=g.unsafe_classifier)
    out2, _ = g2.apply(src, tmp_path / "bird.reencoded.mp4")
    assert out2.read_bytes() != src.read_bytes() and probe(out2).num_frames == 12


def test_face_appearing_late_reencodes_every_frame(samples_dir, tmp_path):
    frames, boxes = _moving_face_clip(samples_dir)
    plain = [f for _, f in iter_frames(samples_dir / "vtest.avi", end=len(frames) - 1, size=(384, 288))]
    mixed = plain[:8] + frames[8:]  # the face enters at frame 8: the prefix is decoded again
    src = _write(mixed, tmp_path / "late.mp4")
    g = PostGuard(unsafe_classifier=UnsafeClassifierTestDouble(from_frame=10**9))
    out, v = g.apply(src, tmp_path / "late.guarded.mp4")
    assert v.allowed and v.scores["faces"] >= 1, v.reasons
    got = [f for _, f in iter_frames(out)]
    orig = [f for _, f in iter_frames(src)]
    assert len(got) == len(orig) == len(frames)
    # the prefix survives (only encoder noise), the face region is blurred
    assert np.abs(got[2].astype(int) - orig[2].astype(int)).mean() < 3
    x0, y0, x1, y1 = boxes[15]
    assert np.abs(got[15][y0:y1, x0:x1].astype(int) - orig[15][y0:y1, x0:x1].astype(int)).mean() > 8
