"""Clip embeddings and SemDeDup-style dedup on real footage, within a batch and against the catalog."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from wfm_platform import samples
from wfm_platform.curation.dedup import DedupDecision, dedup_against_catalog, duplicate_rate, semdedup
from wfm_platform.curation.embeddings import (
    Embedder,
    TorchScriptEmbedder,
    VisualSignatureEmbedder,
    make_embedder,
)
from wfm_platform.storage.catalog import Catalog
from wfm_platform.video import VideoError, iter_frames, probe, write_mp4

EPS = 0.05  # the dedup default: duplicates at cosine >= 0.95
BIKES_SHOTS = [(0, 29), (30, 75), (76, 136), (137, 186), (187, 241), (242, 249)]


@pytest.fixture(scope="module")
def samples_dir() -> Path:
    d = Path(samples.fetch())
    for name in ("bikes.mp4", "vtest.avi", "cockatoo.mp4"):
        if not (d / name).exists():
            pytest.skip(f"sample footage {name} missing (wfm_platform.samples.fetch could not get it)")
    return d


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _crop_brighten(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    dy, dx = h // 20, w // 20  # 5% off every side
    return np.clip(img[dy : h - dy, dx : w - dx].astype(np.int16) + 15, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clips(samples_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """Real clips plus planted near-duplicates (re-encodes at another CRF, resizes, crop + brightness)."""
    out = tmp_path_factory.mktemp("clips")
    bikes = samples_dir / "bikes.mp4"
    specs = {
        # name: (source, start, end, transform, crf)
        "b0": (bikes, *BIKES_SHOTS[0], None, 23),
        "b1": (bikes, *BIKES_SHOTS[1], None, 23),  # 640x272
        "b1_small_crf38": (bikes, *BIKES_SHOTS[1], lambda x: _resize(x, 320, 136), 38),  # duplicate of b1
        "b1_crop_bright": (bikes, *BIKES_SHOTS[1], _crop_brighten, 30),  # duplicate of b1
        "b3": (bikes, *BIKES_SHOTS[3], None, 23),  # 640x272
        "b3_small": (bikes, *BIKES_SHOTS[3], lambda x: _resize(x, 416, 176), 28),  # duplicate of b3
        "b4": (bikes, *BIKES_SHOTS[4], None, 23),
        "vtest": (samples_dir / "vtest.avi", 0, 39, lambda x: _resize(x, 384, 288), 23),
        "cockatoo": (samples_dir / "cockatoo.mp4", 0, 39, lambda x: _resize(x, 640, 360), 23),
    }
    paths = {}
    for name, (src, start, end, fn, crf) in specs.items():
        frames = (fn(img) if fn else img for _, img in iter_frames(src, start=start, end=end))
        paths[name] = out / f"{name}.mp4"
        write_mp4(frames, paths[name], fps=25, crf=crf)
    return paths


@pytest.fixture(scope="module")
def vectors(clips: dict[str, Path]) -> dict[str, np.ndarray]:
    emb = VisualSignatureEmbedder()
    return {name: emb.embed_clip(p) for name, p in clips.items()}


def _pixels(path: Path) -> int:
    info = probe(path)
    return info.width * info.height


# -- embeddings ----------------------------------------------------------------------------------------


def test_embedding_shape_norm_and_determinism(clips):
    emb = make_embedder("visual-signature")
    assert isinstance(emb, Embedder)
    assert emb.name == "visual-signature-v1"
    v = emb.embed_clip(clips["b1"])
    assert v.shape == (emb.dim,) and v.dtype == np.float32
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    np.testing.assert_array_equal(v, emb.embed_clip(clips["b1"]))


def test_reencoded_resized_cropped_copies_are_near_identical(vectors):
    for copy in ("b1_small_crf38", "b1_crop_bright"):
        sim = float(vectors["b1"] @ vectors[copy])
        assert sim >= 1 - EPS, f"{copy}: cosine {sim:.3f} to its original"
    assert float(vectors["b3"] @ vectors["b3_small"]) >= 1 - EPS


def test_different_scenes_are_clearly_apart(vectors):
    for a, b in [("b1", "b3"), ("b0", "b4"), ("vtest", "cockatoo"), ("b1", "cockatoo")]:
        sim = float(vectors[a] @ vectors[b])
        assert sim < 0.85, f"{a} vs {b}: cosine {sim:.3f}, different scenes should be far below {1 - EPS}"


def test_frame_range_of_the_source_matches_the_cut_clip(samples_dir, vectors):
    emb = VisualSignatureEmbedder()
    v = emb.embed_clip(samples_dir / "bikes.mp4", start=BIKES_SHOTS[1][0], end=BIKES_SHOTS[1][1])
    assert float(v @ vectors["b1"]) >= 1 - EPS
    # The whole of bikes.mp4 (6 shots) is not the same thing as its second shot.
    assert float(emb.embed_clip(samples_dir / "bikes.mp4") @ vectors["b1"]) < 1 - EPS


def test_embed_frames_on_still_images():
    emb = VisualSignatureEmbedder()
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (31, 31), 0)
    other = np.ascontiguousarray(img[::-1, ::-1])  # same colours, rotated 180 degrees: new layout
    a = emb.embed_frames([img])
    assert float(a @ emb.embed_frames([_resize(img, 160, 120)])) >= 1 - EPS
    assert float(a @ emb.embed_frames([other])) < 1 - EPS


def test_embed_broken_inputs(tmp_path, samples_dir):
    emb = VisualSignatureEmbedder()
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")
    with pytest.raises(VideoError):
        emb.embed_clip(not_video)
    with pytest.raises(ValueError, match="empty frame range"):
        emb.embed_clip(samples_dir / "bikes.mp4", start=50, end=10)
    with pytest.raises(ValueError):
        emb.embed_frames([])
    with pytest.raises(ValueError, match="RGB uint8"):
        emb.embed_frames([np.zeros((64, 64), np.float32)])
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("clip-vit-l14")


def test_embed_corrupted_real_video(samples_dir):
    """Megamind_bugy.avi has really corrupted frames: it embeds what decodes, or fails with VideoError."""
    path = samples_dir / "Megamind_bugy.avi"
    if not path.exists():
        pytest.skip("Megamind_bugy.avi not fetched")
    emb = VisualSignatureEmbedder()
    try:
        v = emb.embed_clip(path)
    except VideoError as e:
        assert e.reason
    else:
        assert np.isfinite(v).all() and abs(float(np.linalg.norm(v)) - 1) < 1e-5


# -- semdedup ------------------------------------------------------------------------------------------


def test_semdedup_finds_exactly_the_planted_duplicates(clips, vectors):
    ids = list(clips)
    res = [_pixels(clips[c]) for c in ids]
    decisions = semdedup(ids, np.stack([vectors[c] for c in ids]), res, eps=EPS)
    dropped = {d.clip_id: d.duplicate_of for d in decisions if not d.keep}
    # The full-resolution originals survive, every planted copy points at its original.
    assert dropped == {"b1_small_crf38": "b1", "b1_crop_bright": "b1", "b3_small": "b3"}
    assert all(d.similarity >= 1 - EPS for d in decisions if not d.keep)
    assert duplicate_rate(decisions) == pytest.approx(3 / len(ids))


def test_semdedup_is_independent_of_order_and_clusters(clips, vectors):
    ids = list(clips)
    res = {c: _pixels(clips[c]) for c in ids}
    base = semdedup(ids, np.stack([vectors[c] for c in ids]), [res[c] for c in ids], eps=EPS, n_clusters=1)
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    again = semdedup(shuffled, np.stack([vectors[c] for c in shuffled]), [res[c] for c in shuffled], eps=EPS)
    assert {d.clip_id: d.duplicate_of for d in base} == {d.clip_id: d.duplicate_of for d in again}


def test_semdedup_keeps_highest_resolution_then_lowest_id():
    v = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    d = semdedup(["c", "b", "a", "z"], v, [100, 400, 400, 100], eps=0.01)
    assert [(x.clip_id, x.keep, x.duplicate_of) for x in d] == [
        ("c", False, "a"),
        ("b", False, "a"),
        ("a", True, None),
        ("z", True, None),
    ]


def test_semdedup_threshold_is_one_minus_eps():
    angle = np.arccos(0.9)
    v = np.array([[1.0, 0.0], [np.cos(angle), np.sin(angle)]], np.float32)  # cosine 0.9
    assert all(x.keep for x in semdedup(["a", "b"], v, [1, 1], eps=0.05))
    assert not semdedup(["a", "b"], v, [1, 1], eps=0.11)[1].keep


def test_semdedup_bad_inputs():
    assert semdedup([], np.zeros((0, 4), np.float32), []) == []
    with pytest.raises(ValueError, match="one vector"):
        semdedup(["a", "b"], np.ones((1, 4), np.float32), [1, 1])
    with pytest.raises(ValueError, match="zero vectors"):
        semdedup(["a"], np.zeros((1, 4), np.float32), [1])
    with pytest.raises(ValueError, match="unique"):
        semdedup(["a", "a"], np.ones((2, 4), np.float32), [1, 1])
    assert duplicate_rate([]) == 0.0
    assert duplicate_rate([DedupDecision("a", True, None, None), DedupDecision("b", False, "a", 0.99)]) == 0.5


# -- incremental dedup against the catalog ---------------------------------------------------------------


def _register(
    cat: Catalog, partition: str, names: list[str], clips, vectors
) -> tuple[list, np.ndarray, list]:
    rows = []
    for name in names:
        info = probe(clips[name])
        rows.append(
            {
                "clip_id": name,
                "video_id": "v",
                "partition": partition,
                "width": info.width,
                "height": info.height,
                "uri": str(clips[name]),
                "status": "ok",
            }
        )
    cat.upsert_clips(rows)
    vecs = np.stack([vectors[n] for n in names])
    cat.set_embeddings(names, vecs, VisualSignatureEmbedder.name)
    return names, vecs, [r["width"] * r["height"] for r in rows]


def test_incremental_dedup_against_catalog(tmp_path, clips, vectors):
    cat = Catalog(str(tmp_path / "catalog"))
    batch1 = _register(cat, "p1", ["b1", "b3_small", "b0", "vtest"], clips, vectors)
    d1 = dedup_against_catalog(cat, *batch1, eps=EPS, embedder=VisualSignatureEmbedder.name)
    assert all(d.keep for d in d1)

    # Batch 2: two copies of b1 (one within-batch duplicate of the other) and new footage.
    batch2 = _register(cat, "p2", ["b1_small_crf38", "b1_crop_bright", "cockatoo", "b4"], clips, vectors)
    d2 = {d.clip_id: d for d in dedup_against_catalog(cat, *batch2, eps=EPS)}
    assert d2["b1_small_crf38"].duplicate_of == "b1" and d2["b1_crop_bright"].duplicate_of == "b1"
    assert d2["cockatoo"].keep and d2["b4"].keep
    assert d2["b1_small_crf38"].similarity == pytest.approx(
        float(vectors["b1_small_crf38"] @ vectors["b1"]), abs=1e-4
    )
    assert duplicate_rate(list(d2.values())) == 0.5
    assert cat.get_clip("b1_crop_bright")["duplicate_of"] == "b1"

    # Rerunning batch 1: its clips are in the catalog already and must not duplicate themselves.
    n_rows = cat.count("clips")
    batch1_again = _register(cat, "p1", ["b1", "b3_small", "b0", "vtest"], clips, vectors)
    d1_again = dedup_against_catalog(cat, *batch1_again, eps=EPS)
    assert all(d.keep for d in d1_again) and duplicate_rate(d1_again) == 0.0
    assert cat.count("clips") == n_rows
    assert cat.get_clip("b1_small_crf38")["duplicate_of"] == "b1"

    # Batch 3 brings a higher-resolution copy of a catalog clip: it is kept, the old one superseded.
    batch3 = _register(cat, "p3", ["b3"], clips, vectors)
    (d3,) = dedup_against_catalog(cat, *batch3, eps=EPS)
    assert d3.keep
    assert cat.get_clip("b3_small")["duplicate_of"] == "b3"
    kept = {r["clip_id"] for r in cat.clips(where="duplicate_of IS NULL")}
    assert kept == {"b1", "b0", "vtest", "cockatoo", "b4", "b3"}


# -- TorchScript adapter ---------------------------------------------------------------------------------


def test_torchscript_embedder_without_torch_says_how_to_install(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError, as on a bare install
    with pytest.raises(ImportError, match="pip install torch"):
        TorchScriptEmbedder(tmp_path / "model.pt")


def test_torchscript_embedder_with_a_tiny_model(tmp_path, clips):
    torch = pytest.importorskip("torch", reason="torch not installed: the TorchScript adapter is optional")

    class TinyEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
            self.head = torch.nn.Linear(8, 12)

        def forward(self, x):
            return self.head(self.conv(x).relu().mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = torch.jit.script(TinyEncoder().eval())
    path = tmp_path / "tiny.pt"
    model.save(str(path))

    emb = make_embedder("torchscript", path=path, size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert isinstance(emb, Embedder) and emb.dim == 12 and emb.name == "torchscript:tiny"
    v = emb.embed_clip(clips["b1"])
    assert v.shape == (12,) and v.dtype == np.float32 and abs(float(np.linalg.norm(v)) - 1) < 1e-5

    # Same numbers as running the model by hand on the same preprocessed frames.
    frame = np.full((64, 96, 3), 128, np.uint8)
    frame[:, :48] = (200, 30, 30)
    x = torch.from_numpy(emb._prepare(frame)).permute(2, 0, 1)[None].float() / 255
    ref = torch.nn.functional.normalize(model((x - 0.5) / 0.25), dim=1)[0].detach().numpy()
    np.testing.assert_allclose(emb.embed_frames([frame]), ref, atol=1e-5)

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="not a loadable TorchScript"):
        TorchScriptEmbedder(bad)
    with pytest.raises(FileNotFoundError):
        TorchScriptEmbedder(tmp_path / "missing.pt")
