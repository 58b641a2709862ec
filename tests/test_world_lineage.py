"""World-model lineage and the synthetic-data loop, on real footage and tiny CPU presets.

dataset_versions -> diffusion_wfm (2 steps) -> generated_videos (the LATEST trained checkpoint, 2 prompts)
-> a _READY upload batch with a {stem}.json sidecar per video -> upload_sensor -> curation in-process
-> the captions are the prompts. Also: the declared asset lineage, the clear failure when no trained
checkpoint exists, and sidecars on a hand-made batch of real footage (bad and orphan sidecars included).
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from wfm_platform.curation.pipeline import read_stage
from wfm_platform.video import iter_frames, transcode_clip, write_mp4

ROOT = Path(__file__).resolve().parents[1]
PROMPT_SET = "city_streets"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for tiny tensors


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A temp DAGSTER_HOME for the module (jobs/local_runs.run_batch reads DAGSTER_HOME)."""
    mp = pytest.MonkeyPatch()
    h = tmp_path_factory.mktemp("dagster_home")
    mp.setenv("DAGSTER_HOME", str(h))
    yield h
    mp.undo()


def _pipeline_yaml(tmp: Path, *, permissive: bool) -> Path:
    """Pipeline config for a fast in-process curation: guard off (its own tests cover it), OCR off.
    permissive: filters that keep any clip (generated noise from a 2-step model is what is curated)."""
    filters = yaml.safe_load((ROOT / "configs/filters.yaml").read_text())
    filters["ocr_frames"] = 0
    if permissive:
        for k in list(filters):
            if k.startswith(("min_", "max_")) and k not in ("min_duration_s",):
                filters[k] = None
        from wfm_platform.curation.filters import VIDEO_TYPES

        filters["allowed_video_types"] = list(VIDEO_TYPES)
    (tmp / "filters.yaml").write_text(yaml.safe_dump(filters))
    cfg = yaml.safe_load((ROOT / "configs/pipeline.yaml").read_text())
    cfg["filters"] = {"config": str(tmp / "filters.yaml")}
    cfg["guard"] = {"face_blur": False, "unsafe_check": False}
    cfg["clips"]["min_duration_s"] = 1.0
    cfg["clips"]["preset"] = "ultrafast"
    (tmp / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "pipeline.yaml"


def _resources(tmp: Path, pipeline_yaml: Path) -> dict:
    from resources import CatalogResource, PipelineConfigResource, StorageResource, default_resources

    res = default_resources()
    res["storage"] = StorageResource(root_uri=str(tmp / "store"), uploads_uri=str(tmp / "uploads"))
    res["catalog"] = CatalogResource(uri=str(tmp / "catalog"))
    res["pipeline_config"] = PipelineConfigResource(path=str(pipeline_yaml))
    return res


def _failure(r) -> str:
    assert not r.success
    return " ".join(str(e.event_specific_data) for e in r.all_events if e.is_step_failure)


# ---------------------------------------------------------------------------------------------------------
# declared lineage
# ---------------------------------------------------------------------------------------------------------
def test_declared_lineage():
    from assets.datasets import dataset_versions
    from assets.generation import generated_videos
    from assets.models import autoregressive_wfm, diffusion_wfm
    from assets.tokenizer import tokenizer_checkpoint

    for wm in (diffusion_wfm, autoregressive_wfm):
        deps = wm.asset_deps[wm.key]
        assert dataset_versions.key in deps and tokenizer_checkpoint.key in deps
    assert {diffusion_wfm.key, autoregressive_wfm.key} <= generated_videos.asset_deps[generated_videos.key]
    # and in the code location's graph
    from definitions import defs

    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
               for k in graph.get_all_asset_keys()}
    assert parents["diffusion_wfm"] == parents["autoregressive_wfm"] == {"dataset_versions", "tokenizer_checkpoint"}
    assert parents["generated_videos"] == {"diffusion_wfm", "autoregressive_wfm"}


# ---------------------------------------------------------------------------------------------------------
# dataset_versions -> diffusion_wfm -> generated_videos -> sensor -> curation: captions are the prompts
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain(samples_dir, tmp_path_factory, home):
    from wfm_platform.curation.shards import ShardSample, write_shards

    tmp = tmp_path_factory.mktemp("lineage")
    res = _resources(tmp, _pipeline_yaml(tmp, permissive=True))
    store = res["storage"].store()
    # curated shards of one batch (two real bikes shots), as webdataset_shards writes them
    samples = []
    for i, (a, b) in enumerate([(0, 29), (30, 75)]):
        dst = tmp / f"c{i}.mp4"
        transcode_clip(samples_dir / "bikes.mp4", a, b, dst, fps=25, preset="ultrafast", max_side=128)
        samples.append(ShardSample(f"bikes-{i}", str(dst), {}, "people riding bikes on a road"))
    write_shards(samples, store, "webdataset_shards/b1")
    cfg = yaml.safe_load((ROOT / "configs/train/world_tiny.yaml").read_text())
    cfg.update(num_frames=9, size=[32, 32], latent_stats_clips=2, warmup_steps=0, model={"depth": 2})
    (tmp / "train.yaml").write_text(yaml.safe_dump(cfg))
    return {"tmp": tmp, "res": res, "store": store, "train_yaml": str(tmp / "train.yaml")}


def _gen_config(**kw) -> dict:
    return {"max_prompts": 2, "frames": 17, "width": 64, "height": 64, "fps": 8, "steps": 1, **kw}


def test_generation_needs_a_trained_checkpoint_unless_allowed(chain, tmp_path):
    from assets.generation import GENERATION_ASSETS

    (tmp_path / "dh").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dh")) as instance:
        r = dg.materialize(GENERATION_ASSETS, partition_key=PROMPT_SET, resources=chain["res"], instance=instance,
                           raise_on_error=False,
                           run_config={"ops": {"generated_videos": {"config": _gen_config(preset="diffusion-small")}}})
        msg = _failure(r)
        assert "no trained diffusion-small checkpoint" in msg and "materialize diffusion_wfm first" in msg
        assert "allow_untrained: true" in msg
        r = dg.materialize(GENERATION_ASSETS, partition_key=PROMPT_SET, resources=chain["res"], instance=instance,
                           raise_on_error=False, run_config={"ops": {"generated_videos": {"config": _gen_config(
                               model="diffusion-tiny")}}})
        assert "is not a checkpoint folder" in _failure(r)
        r = dg.materialize(GENERATION_ASSETS, partition_key=PROMPT_SET, resources=chain["res"], instance=instance,
                           raise_on_error=False, run_config={"ops": {"generated_videos": {"config": _gen_config(
                               family="autoregressive", preset="diffusion-tiny")}}})
        assert "set family: diffusion" in _failure(r)
    assert not chain["res"]["storage"].uploads().list("")  # nothing landed in the uploads


def test_chain_dataset_model_generation_curation(chain):
    from assets.datasets import DATASET_ASSETS
    from assets.generation import GENERATION_ASSETS
    from assets.models import MODEL_ASSETS
    from jobs.local_runs import dagster_home, run_batch
    from sensors.uploads import upload_sensor

    res, store = chain["res"], chain["store"]
    dagster_home()
    instance = dg.DagsterInstance.get()  # the module's DAGSTER_HOME: run_batch uses the same one
    # 1. a dataset version of the curated shards
    r = dg.materialize(DATASET_ASSETS, resources=res, instance=instance,
                       run_config={"ops": {"dataset_versions": {"config": {"name": "bikes"}}}})
    assert r.success
    # 2. a world model trained on "bikes" (the latest version: recorded exactly)
    r = dg.materialize(MODEL_ASSETS, selection=["diffusion_wfm"], resources=res, instance=instance,
                       run_config={"ops": {"diffusion_wfm": {"config": {
                           "dataset": "bikes", "config_path": chain["train_yaml"], "steps": 2, "preview_steps": 1,
                           "allow_untrained_tokenizer": True}}}})
    assert r.success
    md = r.get_asset_materialization_events()[0].materialization.metadata
    assert md["dataset"].value == "bikes@1.0.0"
    latest = store.read_json("diffusion_wfm/diffusion-tiny/latest.json")
    assert latest["version"] == md["version"].value and latest["dataset"] == "bikes@1.0.0"

    # 3. generation with that latest checkpoint (no model named, allow_untrained left off)
    r = dg.materialize(GENERATION_ASSETS, partition_key=PROMPT_SET, resources=res, instance=instance,
                       run_config={"ops": {"generated_videos": {"config": _gen_config()}}})
    assert r.success
    gmd = r.get_asset_materialization_events()[0].materialization.metadata
    checks = {e.check_name: e.passed for e in r.get_asset_check_evaluations()}
    assert checks == {"batch_ready": True, "videos_decodable": True, "sidecars_match": True}
    assert gmd["untrained"].value is False and gmd["checkpoint"].value == latest["uri"]
    assert gmd["checkpoint_version"].value == latest["version"] and gmd["trained_on"].value == "bikes@1.0.0"
    batch = gmd["batch"].value
    up = res["storage"].uploads()
    files = sorted(up.list(batch))
    mp4s = [k for k in files if k.endswith(".mp4")]
    assert len(mp4s) == 2 and len(files) == 5  # 2 videos, 2 sidecars, _READY
    from wfm_platform.models.generate import load_prompt_set

    prompts = load_prompt_set(PROMPT_SET).prompts[:2]
    for i, (k, prompt) in enumerate(zip(mp4s, prompts)):
        side = up.read_json(k[:-4] + ".json")
        assert side == {"prompt": prompt, "model": "diffusion-tiny", "checkpoint": latest["uri"], "seed": i,
                        "generated": True}
    # 4. the upload sensor picks the batch up
    with dg.build_sensor_context(instance=instance, resources={"storage": res["storage"]}) as ctx:
        sr = upload_sensor(ctx)
    assert [q.partition_key for q in sr.run_requests] == [batch]
    source = sr.run_requests[0].run_config["ops"]["raw_videos"]["config"]["source_uri"]

    # 5. curated in-process (guard off, permissive filters): each clip's caption is its video's prompt
    run_batch(batch, source, res)
    raw = read_stage(store, "raw_videos", batch)
    assert raw["num_ok"] == 2 and raw["num_rejected"] == 0 and raw["num_sidecars"] == 2  # .json not a video
    prompt_of = {v["video_id"]: v["sidecar"]["prompt"] for v in raw["videos"]}
    caps = read_stage(store, "captions", batch)
    passed = read_stage(store, "filtered_clips", batch)["passed"]
    assert passed, "no generated clip reached the captions stage"
    assert {c["video_id"] for c in passed} <= set(prompt_of)
    for c in passed:
        cap = caps["captions"][c["clip_id"]]
        assert cap["text"] == prompt_of[c["video_id"]] and cap["source"] == "prompt" and cap["captioner"] == "prompt"
    catalog = res["catalog"].catalog()
    for vid, prompt in prompt_of.items():
        meta = {m["key"]: m["value"] for m in catalog.metadata(vid, entity_type="video")}
        assert meta["generated"] is True and meta["prompt"] == prompt and meta["checkpoint"] == latest["uri"]


# ---------------------------------------------------------------------------------------------------------
# sidecars on a hand-made batch of real footage
# ---------------------------------------------------------------------------------------------------------
def test_sidecar_prompt_becomes_caption_on_real_footage(samples_dir, tmp_path, home):
    from jobs.local_runs import run_batch

    res = _resources(tmp_path, _pipeline_yaml(tmp_path, permissive=False))
    d = tmp_path / "uploads" / "hand-1"
    d.mkdir(parents=True)
    bikes = samples_dir / "bikes.mp4"
    # two real shots of bikes.mp4 (76..136 and 187..241), downscaled to keep it fast
    write_mp4((f for _, f in iter_frames(bikes, start=76, end=136, size=(320, 136))), d / "000-ride.mp4", fps=25)
    write_mp4((f for _, f in iter_frames(bikes, start=187, end=241, size=(320, 136))), d / "001-plain.mp4", fps=25)
    write_mp4((f for _, f in iter_frames(bikes, start=137, end=186, size=(320, 136))), d / "002-badside.mp4", fps=25)
    prompt = "Cyclists ride along a sunny road past parked cars"
    (d / "000-ride.json").write_text(json.dumps({"prompt": prompt, "model": "diffusion-tiny", "checkpoint": "x",
                                                 "seed": 3, "generated": True}))
    (d / "002-badside.json").write_text("{not json")  # a broken sidecar: the video still counts
    (d / "notes.json").write_text("{}")  # a sidecar with no video
    (d / "_READY").write_bytes(b"")
    store = run_batch("hand-1", str(d), res)

    raw = read_stage(store, "raw_videos", "hand-1")
    assert raw["num_ok"] == 3 and raw["num_rejected"] == 0, raw["videos"]  # no .json probed as a video
    assert raw["orphan_sidecars"] == ["notes.json"] and raw["num_sidecars"] == 1
    by_name = {v["name"]: v for v in raw["videos"]}
    assert by_name["000-ride.mp4"]["sidecar"]["prompt"] == prompt
    assert "not valid JSON" in by_name["002-badside.mp4"]["sidecar_error"]
    assert "sidecar" not in by_name["001-plain.mp4"]

    caps = read_stage(store, "captions", "hand-1")
    passed = read_stage(store, "filtered_clips", "hand-1")["passed"]
    vid_of = {c["clip_id"]: c["video_id"] for c in passed}
    ride = by_name["000-ride.mp4"]["video_id"]
    assert ride in vid_of.values(), "the real bikes shot should pass the default filters"
    assert len(set(vid_of.values())) >= 2, "expected a captioned clip without a sidecar too"
    assert caps["num_from_prompt"] == sum(v == ride for v in vid_of.values())
    for cid, vid in vid_of.items():
        cap = caps["captions"][cid]
        if vid == ride:
            assert (cap["text"], cap["source"], cap["captioner"], cap["frames_used"]) == (prompt, "prompt", "prompt", [])
        else:  # no or broken sidecar: the captioner resource's caption
            assert cap["source"] == "captioner" and cap["captioner"] != "prompt" and cap["text"] != prompt
    catalog = res["catalog"].catalog()
    meta = {m["key"]: m["value"] for m in catalog.metadata(ride, entity_type="video")}
    assert meta["generated"] is True and meta["prompt"] == prompt and meta["seed"] == 3
    assert not catalog.metadata(by_name["001-plain.mp4"]["video_id"], entity_type="video") or all(
        m["key"] != "generated" for m in catalog.metadata(by_name["001-plain.mp4"]["video_id"], entity_type="video"))
    ride_clip = next(cid for cid, vid in vid_of.items() if vid == ride)
    assert catalog.get_clip(ride_clip)["caption"] == prompt


# ---------------------------------------------------------------------------------------------------------
# non-local stores (memory://: every non-file:// branch, no server)
# ---------------------------------------------------------------------------------------------------------
def test_remote_store_checkpoint_and_sidecar(samples_dir, tmp_path):
    import contextlib
    import logging
    import uuid

    from assets.generation import GeneratedVideosConfig, resolve_model
    from wfm_platform.curation import pipeline as P
    from wfm_platform.curation.config import PipelineConfig
    from wfm_platform.models import presets
    from wfm_platform.models.checkpoint import load_world_model, save_checkpoint
    from wfm_platform.storage.objectstore import ObjectStore

    run = uuid.uuid4().hex[:8]
    store = ObjectStore(f"memory://wm-{run}")
    # the latest checkpoint lives only in the remote store: it is downloaded for the run, then removed
    save_checkpoint(tmp_path / "ck", presets.build_model("diffusion-tiny"), step=7,
                    meta={"preset": "diffusion-tiny", "dataset": "x@1.0.0"})
    store.put_file(tmp_path / "ck/model.pt", "diffusion_wfm/diffusion-tiny/v1/model.pt")
    store.write_json("diffusion_wfm/diffusion-tiny/latest.json",
                     {"version": "v1", "uri": store.uri("diffusion_wfm/diffusion-tiny/v1"), "dataset": "x@1.0.0"})
    with contextlib.ExitStack() as stack:
        src = resolve_model(store, GeneratedVideosConfig(), stack, logging.getLogger("t"))
        assert src["checkpoint"] == store.uri("diffusion_wfm/diffusion-tiny/v1") and not src["untrained"]
        _, meta = load_world_model(src["spec"])
        assert meta["step"] == 7 and meta["dataset"] == "x@1.0.0"
    assert not Path(src["spec"]).exists()
    # a latest.json pointing at nothing fails with what to do
    store.write_json("diffusion_wfm/diffusion-tiny/latest.json", {"version": "v2", "uri": store.uri("nowhere")})
    with pytest.raises(dg.Failure, match="materialize diffusion_wfm"), contextlib.ExitStack() as stack:
        resolve_model(store, GeneratedVideosConfig(), stack, logging.getLogger("t"))

    # a remote upload batch: the sidecar is read through the store, not probed as a video
    uploads = ObjectStore(f"memory://up-{run}")
    uploads.put_file(samples_dir / "carphone_pristine.mp4", "b1/a.mp4")
    uploads.write_bytes("b1/a.json", json.dumps({"prompt": "a man talks on a phone in a car"}).encode())
    uploads.write_bytes("b1/_READY", b"")
    raw = P.stage_raw_videos(store, None, "b1", uploads.uri("b1"), PipelineConfig.load())
    assert raw["num_ok"] == 1 and raw["num_rejected"] == 0 and raw["num_sidecars"] == 1
    side = raw["videos"][0]["sidecar"]
    assert side == {"prompt": "a man talks on a phone in a car", "model": "", "checkpoint": "", "generated": False}
