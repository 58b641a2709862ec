"""The same pipeline code on a non-local fsspec store (memory://): remote uploads and outputs.

The real S3 / GCS / Azure servers come with the storage issue; memory:// exercises every non-file://
branch (download to a temp file, staged upload, listings) without a server.
"""

import json
import uuid

import dagster as dg

from wfm_platform.curation import pipeline as P
from wfm_platform.curation.captions import make_captioner
from wfm_platform.curation.config import PipelineConfig
from wfm_platform.curation.embeddings import make_embedder
from wfm_platform.curation.shards import open_dataset
from wfm_platform.curation.uploads import ready_batches
from wfm_platform.storage.catalog import Catalog
from wfm_platform.storage.objectstore import ObjectStore


def test_pipeline_on_memory_store(tmp_path, samples_dir):
    run = uuid.uuid4().hex[:8]
    uploads = ObjectStore(f"memory://uploads-{run}")
    uploads.put_file(samples_dir / "bikes.mp4", "b1/bikes.mp4")
    uploads.write_bytes("b1/notes.txt", b"not a video")
    assert ready_batches(uploads) == []  # no marker yet: still uploading
    uploads.write_bytes("b1/_READY", b"")
    assert ready_batches(uploads) == ["b1"]

    store = ObjectStore(f"memory://store-{run}")
    catalog = Catalog(str(tmp_path / "catalog"))
    cfg = PipelineConfig.load()
    raw = P.stage_raw_videos(store, catalog, "b1", uploads.uri("b1"), cfg)
    assert raw["num_ok"] == 1 and raw["num_rejected"] == 1
    clips = P.stage_clips(store, catalog, "b1", cfg)
    assert clips["num_clips"] == 3 and not clips["failed_videos"]
    P.stage_clip_scores(store, "b1", cfg)
    P.stage_filtered_clips(store, catalog, "b1", cfg)
    P.stage_captions(store, catalog, "b1", make_captioner("signals"))
    P.stage_clip_embeddings(store, catalog, "b1", make_embedder("visual-signature"))
    P.stage_deduplicated_clips(store, catalog, "b1", cfg)
    P.stage_guarded_clips(store, catalog, "b1", P.make_post_guard(cfg))
    manifest = P.stage_webdataset_shards(store, "b1", cfg)
    assert manifest["num_samples"] >= 1
    assert all(s["uri"].startswith("memory://") for s in manifest["shards"])
    got = [json.loads(x["json"])["clip_id"] for x in open_dataset(manifest, store=store)]
    assert sorted(got) == sorted(c for s in manifest["shards"] for c in s["clip_ids"])
    assert not [k for k in store.list("") if ".tmp-" in k]


def test_sensor_on_memory_uploads(tmp_path):
    from resources import StorageResource
    from sensors.uploads import upload_sensor

    run = uuid.uuid4().hex[:8]
    uploads = ObjectStore(f"memory://sensor-{run}")
    uploads.write_bytes("cam-a/x.mp4", b"...")
    uploads.write_bytes("cam-a/_READY", b"")
    uploads.write_bytes("cam-b/y.mp4", b"...")  # half uploaded
    storage = StorageResource(root_uri=str(tmp_path / "store"), uploads_uri=uploads.root)
    with dg.instance_for_test() as instance:
        res = upload_sensor(dg.build_sensor_context(instance=instance, resources={"storage": storage}))
    assert [r.partition_key for r in res.run_requests] == ["cam-a"]
    assert res.run_requests[0].run_config["ops"]["raw_videos"]["config"]["source_uri"] == uploads.uri("cam-a")
