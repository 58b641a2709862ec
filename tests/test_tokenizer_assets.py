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


def test_tokenizer_on_a_remote_store(samples_dir, tmp_path):
    """Off a local disk (memory://, the non-file:// branch every object store takes): the checkpoint is
    uploaded, resumed from the store, tokens are made from it, and a world model reads it by URI."""
    import uuid

    from assets.curation import upload_batches
    from assets.models import WorldModelTrainRun, _tokenizer_for
    from assets.tokenizer import TOKENIZER_ASSETS
    from resources import StorageResource
    from wfm_platform.models.data import tokenizer_identity
    from wfm_platform.tokenizer.train import load_tokenizer

    run = uuid.uuid4().hex[:8]
    storage = StorageResource(root_uri=f"memory://tokstore-{run}", uploads_uri=f"memory://tokup-{run}")
    store, catalog = storage.store(), Catalog(str(tmp_path / "catalog"))
    cfg = PipelineConfig.load()
    cfg.guard.face_blur = cfg.guard.unsafe_check = False
    uploads = storage.uploads()
    uploads.put_file(samples_dir / "bikes.mp4", "b1/bikes.mp4")
    P.stage_raw_videos(store, catalog, "b1", uploads.uri("b1"), cfg)
    P.stage_clips(store, catalog, "b1", cfg)
    P.stage_clip_scores(store, "b1", cfg)
    P.stage_filtered_clips(store, catalog, "b1", cfg)
    P.stage_captions(store, catalog, "b1", make_captioner("signals", ocr=False))
    P.stage_clip_embeddings(store, catalog, "b1", make_embedder("visual-signature"))
    P.stage_deduplicated_clips(store, None, "b1", cfg)
    P.stage_guarded_clips(store, None, "b1", None)
    assert P.stage_webdataset_shards(store, "b1", cfg)["num_samples"] >= 1

    (tmp_path / "dh").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dh")) as instance:
        instance.add_dynamic_partitions(upload_batches.name, ["b1"])

        def train(steps):
            r = dg.materialize(TOKENIZER_ASSETS, selection=["tokenizer_checkpoint"], partition_key="cv4x8x8",
                               instance=instance, resources={"storage": storage},
                               run_config={"ops": {"tokenizer_checkpoint": {"config": {"steps": steps}}}})
            assert r.success
            return r.get_asset_materialization_events()[0].materialization.metadata

        md = train(4)
        rel = "tokenizer_checkpoint/cv4x8x8"
        assert md["checkpoint"].value == store.uri(f"{rel}/checkpoint.pt")
        assert {f"{rel}/{f}" for f in ("checkpoint.pt", "loss.jsonl", "train_config.yaml")} <= set(store.list(rel))
        tag = store.version_tag(f"{rel}/checkpoint.pt")
        md = train(6)  # resumes from the stored run: 2 more steps, one loss line per step in all
        assert md["steps"].value == 6
        assert len(store.read_bytes(f"{rel}/loss.jsonl").decode().splitlines()) == 6
        assert store.version_tag(f"{rel}/checkpoint.pt") != tag

        key = dg.MultiPartitionKey({"batch": "b1", "tokenizer": "cv4x8x8"})
        r = dg.materialize(TOKENIZER_ASSETS, selection=["video_tokens"], partition_key=key, instance=instance,
                           resources={"storage": storage},
                           run_config={"ops": {"video_tokens": {"config": {"max_frames": 9, "max_side": 96,
                                                                         "min_roundtrip_psnr": 5.0}}}})
        assert r.success and all(e.passed for e in r.get_asset_check_evaluations())
    m = store.read_json("video_tokens/b1/cv4x8x8/manifest.json")
    assert m["checkpoint"] == store.uri(f"{rel}/checkpoint.pt") and m["clips"]

    # the world-model assets get the URI; the model records it and load_tokenizer reads it from the store
    uri = _tokenizer_for(store, "cv4x8x8", WorldModelTrainRun(), log=None)
    assert uri == store.uri(f"{rel}/checkpoint.pt")
    tok = load_tokenizer(uri)
    assert tok.kind == "cv" and tok.temporal_compression == 4
    ident = tokenizer_identity(tok, "cv4x8x8", "tiny", uri)
    assert ident["checkpoint"][0][:2] == [uri, store.size(f"{rel}/checkpoint.pt")]
    with pytest.raises(Exception, match="missing|not found|No such|does not exist"):
        load_tokenizer(store.uri(f"{rel}/nothing.pt"))
