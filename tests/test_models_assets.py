"""diffusion_wfm and autoregressive_wfm materialized on a real tiny dataset version (CPU, tiny presets):
versioned checkpoints that load, the dataset version recorded, loss curve and preview in the metadata,
clear failures for a missing tokenizer or dataset."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from wfm_platform.curation.shards import ShardSample, write_shards
from wfm_platform.models.checkpoint import load_world_model, read_checkpoint
from wfm_platform.storage.datasets import DatasetRegistry
from wfm_platform.video import transcode_clip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(samples_dir, tmp_path_factory) -> dict:
    """A store with dataset bikes@1.0.0 (two real shots) and a cv8x8x8 tokenizer trained for 2 steps."""
    from resources import StorageResource
    from wfm_platform.tokenizer.train import load_train_config as tok_cfg
    from wfm_platform.tokenizer.train import train as train_tokenizer

    tmp = tmp_path_factory.mktemp("wm_assets")
    storage = StorageResource(root_uri=str(tmp / "store"), uploads_uri=str(tmp / "up"))
    store = storage.store()
    samples = []
    for i, (a, b) in enumerate([(0, 29), (30, 75)]):
        dst = tmp / f"c{i}.mp4"
        transcode_clip(samples_dir / "bikes.mp4", a, b, dst, fps=25, preset="ultrafast", max_side=128)
        samples.append(ShardSample(f"bikes-{i}", str(dst), {}, "people riding bikes on a road"))
    m = write_shards(samples, store, "webdataset_shards/b1")
    DatasetRegistry(store).create("bikes", [m])
    # where the tokenizer_checkpoint asset puts its cv8x8x8 checkpoint
    train_tokenizer(tok_cfg(ROOT / "configs/tokenizer/train_tiny.yaml", tokenizer="cv8x8x8", num_frames=9,
                            crop=(32, 32), steps=2, warmup_steps=0, batch_size=1),
                    m, store.local_path("tokenizer_checkpoint/cv8x8x8"), store=store)
    cfg = yaml.safe_load((ROOT / "configs/train/world_tiny.yaml").read_text())
    cfg.update(num_frames=9, size=[32, 32], latent_stats_clips=2, warmup_steps=0, lr=2e-3,
               model={"depth": 2})
    (tmp / "train.yaml").write_text(yaml.safe_dump(cfg))
    return {"storage": storage, "store": store, "config": str(tmp / "train.yaml"), "tmp": tmp}


def _materialize(env, asset: str, tmp_path, **config):
    from assets.models import MODEL_ASSETS

    (tmp_path / "dh").mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(tmp_path / "dh")) as instance:
        return dg.materialize(MODEL_ASSETS, selection=[asset], instance=instance,
                              resources={"storage": env["storage"]}, raise_on_error=False,
                              run_config={"ops": {asset: {"config": {"config_path": env["config"], **config}}}})


@pytest.mark.parametrize("asset,extra", [
    ("diffusion_wfm", {}),  # the store's trained cv8x8x8 tokenizer
    ("autoregressive_wfm", {"allow_untrained_tokenizer": True, "preset": "ar-tiny"}),  # no dv8x8x8 trained
])
def test_world_model_asset(env, asset, extra, tmp_path):
    r = _materialize(env, asset, tmp_path, dataset="bikes", steps=6, preview_steps=2, **extra)
    assert r.success
    md = r.get_asset_materialization_events()[0].materialization.metadata
    assert md["dataset"].value == "bikes@1.0.0" and md["steps"].value == 6
    assert md["dataset_digest"].value == DatasetRegistry(env["store"]).get("bikes@1.0.0").digest
    assert "image/png" in md["loss_curve"].value and "image/jpeg" in md["sample_preview"].value
    assert md["params"].value > 100_000 and md["loss_last5"].value == md["loss_last5"].value  # finite
    checks = {e.check_name: e.passed for e in r.get_asset_check_evaluations()}
    assert checks == {"checkpoint_loads": True, "loss_finite": True}
    # a versioned checkpoint folder under the store, pointed to by latest.json
    preset = "diffusion-tiny" if asset == "diffusion_wfm" else "ar-tiny"
    latest = env["store"].read_json(f"{asset}/{preset}/latest.json")
    assert latest["version"] == md["version"].value and latest["dataset"] == "bikes@1.0.0"
    ckdir = env["store"].local_path(f"{asset}/{preset}/{latest['version']}")
    ck = read_checkpoint(ckdir)
    assert ck["dataset"] == "bikes@1.0.0" and ck["preset"] == preset
    if asset == "diffusion_wfm":
        assert ck["tokenizer"]["checkpoint"].endswith("tokenizer_checkpoint/cv8x8x8/checkpoint.pt")
    model, meta = load_world_model(ckdir)
    assert meta["untrained"] is False and model.family == ("diffusion" if asset == "diffusion_wfm" else "autoregressive")
    # the GPU step is tagged for the k8s executor
    from assets.models import MODEL_ASSETS

    spec = next(a for a in MODEL_ASSETS if a.key.to_user_string() == asset)
    tags = spec.op.tags["dagster-k8s/config"]
    tags = json.loads(tags) if isinstance(tags, str) else tags
    assert tags["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_failures_say_what_to_do(env, tmp_path):
    def failure(r) -> str:
        assert not r.success
        return " ".join(str(e.event_specific_data) for e in r.all_events if e.is_step_failure)

    r = _materialize(env, "autoregressive_wfm", tmp_path, dataset="bikes@1.0.0", steps=1)
    assert "materialize tokenizer_checkpoint[dv8x8x8] first" in failure(r)
    r = _materialize(env, "diffusion_wfm", tmp_path, dataset="bikes@3.0.0", steps=1)
    assert "bikes@3.0.0 does not exist" in failure(r)
    r = _materialize(env, "diffusion_wfm", tmp_path, dataset="bikes@1.0.0", steps=1, preset="ar-tiny")
    assert "in the autoregressive family" in failure(r)
