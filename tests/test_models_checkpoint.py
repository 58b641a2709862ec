"""The latest-checkpoint pointer ({asset}/{preset}/latest.json) in the library: publish and read it back on a
local and a non-local (memory://) store, and the clear errors for a missing, dangling or broken pointer."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from wfm_platform.models import presets
from wfm_platform.models.checkpoint import (
    CheckpointError,
    LatestPointer,
    NoTrainedCheckpoint,
    latest_checkpoint,
    latest_rel,
    load_world_model,
    publish_latest,
    read_latest,
    resolve_model_ref,
    save_checkpoint,
)
from wfm_platform.storage.objectstore import ObjectStore

ASSET, PRESET = "diffusion_wfm", "diffusion-tiny"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for tiny tensors


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    """A real (untrained-weights) diffusion-tiny checkpoint folder, as `wfm train` writes it."""
    d = tmp_path_factory.mktemp("ck")
    save_checkpoint(d, presets.build_model(PRESET), step=7, meta={"preset": PRESET, "dataset": "bikes@1.0.0"})
    return d


def _upload(store: ObjectStore, ckpt_dir: Path, version: str) -> str:
    folder = f"{ASSET}/{PRESET}/{version}"
    store.put_file(ckpt_dir / "model.pt", f"{folder}/model.pt")
    return folder


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_round_trip(ckpt_dir, tmp_path, kind):
    store = ObjectStore(tmp_path / "store") if kind == "local" else ObjectStore(f"memory://ck-{uuid.uuid4().hex[:8]}")
    folder = _upload(store, ckpt_dir, "v1")
    p = publish_latest(store, ASSET, PRESET, folder, version="v1", dataset="bikes@1.0.0", step=7,
                       family="diffusion")
    assert p.uri == store.uri(folder)
    # the same JSON object the asset always wrote: version, uri, dataset, step, preset, family
    assert store.read_json(latest_rel(ASSET, PRESET)) == {
        "version": "v1", "uri": store.uri(folder), "dataset": "bikes@1.0.0", "step": 7, "preset": PRESET,
        "family": "diffusion"}
    assert read_latest(store, ASSET, PRESET) == p
    with latest_checkpoint(store, ASSET, PRESET) as latest:
        assert latest.pointer == p and latest.pointer_uri == store.uri(f"{ASSET}/{PRESET}/latest.json")
        _, meta = load_world_model(latest.model_path)
        assert meta["step"] == 7 and meta["dataset"] == "bikes@1.0.0" and meta["untrained"] is False
        local = latest.model_path
    if kind == "local":  # the file itself, no copy
        assert local == store.local_path(f"{folder}/model.pt") and local.exists()
        assert sorted(x.name for x in local.parent.parent.iterdir()) == ["latest.json", "v1"]  # no temp left
    else:  # a temp download, gone after the block
        assert not local.exists()

    # a newer version replaces the pointer
    folder2 = _upload(store, ckpt_dir, "v2")
    publish_latest(store, ASSET, PRESET, folder2, version="v2", dataset="bikes@1.1.0", step=9, family="diffusion")
    assert read_latest(store, ASSET, PRESET).version == "v2"
    assert read_latest(store, ASSET, PRESET).uri == store.uri(folder2)


def test_older_pointer_without_step_preset_family_still_reads(ckpt_dir, tmp_path):
    store = ObjectStore(tmp_path / "store")
    folder = _upload(store, ckpt_dir, "v0")
    store.write_json(latest_rel(ASSET, PRESET), {"version": "v0", "uri": store.uri(folder), "dataset": None})
    with latest_checkpoint(store, ASSET, PRESET) as latest:
        assert latest.pointer == LatestPointer(version="v0", uri=store.uri(folder))
        assert latest.pointer.dataset == "" and latest.model_path.exists()


def test_missing_pointer_says_what_to_do(tmp_path):
    store = ObjectStore(tmp_path / "store")
    with pytest.raises(NoTrainedCheckpoint) as e, latest_checkpoint(store, ASSET, "diffusion-small"):
        pass
    msg = str(e.value)
    assert "no trained diffusion-small checkpoint" in msg and store.uri(latest_rel(ASSET, "diffusion-small")) in msg
    assert "materialize diffusion_wfm first" in msg and "wfm train diffusion" in msg and "--model PATH" in msg
    with pytest.raises(NoTrainedCheckpoint, match="wfm train autoregressive"):
        read_latest(store, "autoregressive_wfm", "ar-tiny")


def test_dangling_pointer_is_an_error_not_no_checkpoint(ckpt_dir, tmp_path):
    store = ObjectStore(tmp_path / "store")
    folder = _upload(store, ckpt_dir, "v1")
    publish_latest(store, ASSET, PRESET, folder, version="v1", dataset="x@1.0.0", step=7, family="diffusion")
    store.delete(folder, recursive=True)  # the checkpoint is gone, the pointer stays
    with pytest.raises(CheckpointError) as e, latest_checkpoint(store, ASSET, PRESET):
        pass
    assert not isinstance(e.value, NoTrainedCheckpoint)  # never confused with "nothing trained yet"
    assert "has no model.pt" in str(e.value) and "materialize diffusion_wfm (preset diffusion-tiny) again" in str(e.value)


@pytest.mark.parametrize("content,why", [
    (b"{not json", "not a checkpoint pointer"),
    (json.dumps({"version": "v1"}).encode(), "not a checkpoint pointer"),  # no uri
    (json.dumps({"version": "v1", "uri": "file:///elsewhere/diffusion_wfm/x"}).encode(), "outside"),
])
def test_broken_pointer_is_a_clear_error(tmp_path, content, why):
    store = ObjectStore(tmp_path / "store")
    store.write_bytes(latest_rel(ASSET, PRESET), content)
    with pytest.raises(CheckpointError, match=why) as e, latest_checkpoint(store, ASSET, PRESET):
        pass
    assert not isinstance(e.value, NoTrainedCheckpoint) and "materialize diffusion_wfm" in str(e.value)


def test_publish_refuses_a_folder_without_model(ckpt_dir, tmp_path):
    store = ObjectStore(tmp_path / "store")
    folder = _upload(store, ckpt_dir, "v1")
    publish_latest(store, ASSET, PRESET, folder, version="v1", dataset="x@1.0.0", step=7, family="diffusion")
    with pytest.raises(CheckpointError, match="has no model.pt"):
        publish_latest(store, ASSET, PRESET, f"{ASSET}/{PRESET}/v2", version="v2", dataset="x@1.0.0", step=8,
                       family="diffusion")
    assert read_latest(store, ASSET, PRESET).version == "v1"  # the old pointer is untouched


# ---------------------------------------------------------------------------------------------------------
# train_and_publish: the world-model assets' work, on a non-local store (train in temp, upload, publish)
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def remote_dataset(samples_dir, tmp_path_factory):
    """A memory:// store holding dataset bikes@1.0.0 (two real bikes shots), and a tiny train config."""
    from wfm_platform.curation.shards import ShardSample, write_shards
    from wfm_platform.models.train import load_train_config
    from wfm_platform.storage.datasets import DatasetRegistry
    from wfm_platform.video import transcode_clip

    tmp = tmp_path_factory.mktemp("pub")
    store = ObjectStore(f"memory://pub-{uuid.uuid4().hex[:8]}")
    samples = []
    for i, (a, b) in enumerate([(0, 29), (30, 75)]):
        dst = tmp / f"c{i}.mp4"
        transcode_clip(samples_dir / "bikes.mp4", a, b, dst, fps=25, preset="ultrafast", max_side=128)
        samples.append(ShardSample(f"bikes-{i}", str(dst), {}, "people riding bikes on a road"))
    DatasetRegistry(store).create("bikes", [write_shards(samples, store, "webdataset_shards/b1")])
    root = Path(__file__).resolve().parents[1]
    cfg = load_train_config(root / "configs/train/world_tiny.yaml", num_frames=9, size=(32, 32),
                            latent_stats_clips=2, warmup_steps=0, model={"depth": 2})
    return store, cfg


def test_train_and_publish_remote_store(remote_dataset, monkeypatch):
    from wfm_platform.models import publish

    store, cfg = remote_dataset
    seen = []
    pub = publish.train_and_publish(store, ASSET, "diffusion", PRESET, cfg, "bikes", version=publish.new_version(
        "run1abcdefgh"), steps=2, preview_steps=1, on_step=lambda s, n, p: seen.append(s))
    assert pub.version.endswith("-run1abcd") and pub.rel == f"{ASSET}/{PRESET}/{pub.version}"
    assert pub.dataset == "bikes@1.0.0" and pub.step == 2 and pub.saved_step == 2 and seen[-1] == 2
    assert len(pub.losses) == 2 and pub.loss_finite and pub.params > 100_000 and pub.tensors > 0
    assert pub.load_error == "" and pub.preview[:3] == b"\xff\xd8\xff"  # a JPEG
    # only the published files were uploaded (no train_state.pt, no cache/), and the pointer names them
    assert sorted(k.rsplit("/", 1)[1] for k in store.list(pub.rel)) == sorted(publish.PUBLISHED_FILES)
    assert pub.latest == read_latest(store, ASSET, PRESET)
    assert pub.latest.uri == pub.uri and pub.latest.dataset == "bikes@1.0.0" and pub.latest.step == 2
    with latest_checkpoint(store, ASSET, PRESET) as latest:
        _, meta = load_world_model(latest.model_path)
        assert meta["dataset"] == "bikes@1.0.0" and meta["step"] == 2 and meta["preset"] == PRESET

    # a checkpoint that does not load back is kept (with the error) but never becomes the latest one
    def broken(path, device="cpu"):
        raise CheckpointError(f"{path}: truncated")

    monkeypatch.setattr(publish, "load_world_model", broken)
    bad = publish.train_and_publish(store, ASSET, "diffusion", PRESET, cfg, "bikes@1.0.0",
                                    version=publish.new_version("run2abcdefgh"), steps=1, preview_steps=1)
    assert "truncated" in bad.load_error and bad.latest is None and bad.preview == b""
    assert store.exists(f"{bad.rel}/model.pt")
    assert read_latest(store, ASSET, PRESET).version == pub.version  # the pointer did not move


# ---------------------------------------------------------------- PRESET@latest, as the CLIs take it
def test_resolve_model_ref(ckpt_dir, tmp_path):
    store = ObjectStore(str(tmp_path / "store"))
    with resolve_model_ref(str(ckpt_dir), store) as spec:  # a folder or preset name passes through untouched
        assert spec == str(ckpt_dir)
    with resolve_model_ref(PRESET, store) as spec:
        assert spec == PRESET
    with pytest.raises(NoTrainedCheckpoint, match="no trained diffusion-tiny checkpoint"):
        with resolve_model_ref(f"{PRESET}@latest", store):
            pass
    publish_latest(store, ASSET, PRESET, _upload(store, ckpt_dir, "v1"), version="v1", dataset="bikes@1.0.0",
                   step=7, family="diffusion")
    with resolve_model_ref(f"{PRESET}@latest", store) as spec:
        _, meta = load_world_model(spec)
        assert Path(spec) == store.local_path(f"{ASSET}/{PRESET}/v1/model.pt")
        assert meta["step"] == 7 and not meta["untrained"]
    with pytest.raises(CheckpointError, match="not a preset") as e:
        with resolve_model_ref("diffusion-huge@latest", store):
            pass
    assert "diffusion-tiny" in str(e.value)  # lists the presets there are


def test_resolve_model_ref_reads_the_default_store(ckpt_dir, tmp_path, monkeypatch):
    store = ObjectStore(str(tmp_path / "elsewhere"))
    publish_latest(store, ASSET, PRESET, _upload(store, ckpt_dir, "v3"), version="v3", dataset="bikes@1.0.0",
                   step=7, family="diffusion")
    monkeypatch.setenv("WFM_STORAGE_ROOT", str(tmp_path / "elsewhere"))
    with resolve_model_ref(f"{PRESET}@latest") as spec:
        assert "v3" in spec and Path(spec).exists()
