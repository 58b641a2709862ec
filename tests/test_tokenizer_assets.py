"""tokenizer_checkpoint and video_tokens materialized on tiny real shards (CPU, tiny preset)."""

import dagster as dg
import pytest

from wfm_platform.curation import pipeline as P
from wfm_platform.curation.captions import make_captioner
from wfm_platform.curation.config import PipelineConfig
from wfm_platform.curation.embeddings import make_embedder
from wfm_platform.storage.catalog import Catalog
from wfm_platform.tokenizer.tokens import load_tokens


@pytest.fixture(scope="module")
def shards_store(tmp_path_factory, samples_dir):
    """Two curated batches of real footage (bikes' shots), curated with the stage functions."""
    from resources import StorageResource

    tmp = tmp_path_factory.mktemp("tok")
    storage = StorageResource(root_uri=str(tmp / "store"), uploads_uri=str(tmp / "up"))
    store, catalog = storage.store(), Catalog(str(tmp / "catalog"))
    cfg = PipelineConfig.load()
    cfg.guard.face_blur = cfg.guard.unsafe_check = False  # not what this test is about
    for batch in ("b1", "b2"):
        src = tmp / "src" / batch
        src.mkdir(parents=True)
        (src / "bikes.mp4").write_bytes((samples_dir / "bikes.mp4").read_bytes())
        P.stage_raw_videos(store, catalog, batch, str(src), cfg)
        P.stage_clips(store, catalog, batch, cfg)
        P.stage_clip_scores(store, batch, cfg)
        P.stage_filtered_clips(store, catalog, batch, cfg)
        P.stage_captions(store, catalog, batch, make_captioner("signals", ocr=False))
        P.stage_clip_embeddings(store, catalog, batch, make_embedder("visual-signature"))
        P.stage_deduplicated_clips(store, None, batch, cfg)
        P.stage_guarded_clips(store, None, batch, None)
        assert P.stage_webdataset_shards(store, batch, cfg)["num_samples"] >= 1
    return storage


def test_checkpoint_then_tokens(shards_store, tmp_path):
    from assets.curation import upload_batches
    from assets.tokenizer import TOKENIZER_ASSETS

    (tmp_path / "dh").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dh")) as instance:
        instance.add_dynamic_partitions(upload_batches.name, ["b1", "b2"])
        r = dg.materialize(
            TOKENIZER_ASSETS, selection=["tokenizer_checkpoint"], partition_key="cv4x8x8", instance=instance,
            resources={"storage": shards_store},
            run_config={"ops": {"tokenizer_checkpoint": {"config": {"steps": 12}}}},
        )
        assert r.success
        md = r.get_asset_materialization_events()[0].materialization.metadata
        assert md["steps"].value == 12 and md["evaluated_on"].value == "held-out shard"
        assert md["psnr"].value > 5 and "image/png" in md["loss_curve"].value
        key = dg.MultiPartitionKey({"batch": "b1", "tokenizer": "cv4x8x8"})
        r2 = dg.materialize(
            TOKENIZER_ASSETS, selection=["video_tokens"], partition_key=key, instance=instance,
            resources={"storage": shards_store},
            run_config={"ops": {"video_tokens": {"config": {"max_frames": 9, "max_side": 96,
                                                            "min_roundtrip_psnr": 5.0}}}},
        )
        assert r2.success
        checks = {e.check_name: e.passed for e in r2.get_asset_check_evaluations()}
        assert checks["tokens_valid"]
    store = shards_store.store()
    m = store.read_json("video_tokens/b1/cv4x8x8/manifest.json")
    assert m["clips"]
    z, meta = load_tokens(store.local_path(store.rel(m["clips"][0]["uri"])))
    assert meta["kind"] == "cv" and tuple(z.shape[-3:]) == (3, 5, 12) and z.shape[1] == 16  # 9 frames 40x96


def test_video_tokens_without_checkpoint_says_what_to_do(shards_store, tmp_path):
    from assets.curation import upload_batches
    from assets.tokenizer import TOKENIZER_ASSETS

    (tmp_path / "dh").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dh")) as instance:
        instance.add_dynamic_partitions(upload_batches.name, ["b1"])
        r = dg.materialize(TOKENIZER_ASSETS, selection=["video_tokens"], instance=instance,
                           partition_key=dg.MultiPartitionKey({"batch": "b1", "tokenizer": "dv8x16x16"}),
                           resources={"storage": shards_store}, raise_on_error=False)
        assert not r.success
        msgs = " ".join(str(e.event_specific_data) for e in r.all_events if e.is_step_failure)
        assert "materialize tokenizer_checkpoint[dv8x16x16] first" in msgs
