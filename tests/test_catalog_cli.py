"""`wfm catalog` on a catalog filled by curating real footage (bikes: real cuts; carphone: a real face)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from wfm_platform.storage.catalog_cli import catalog_app

runner = CliRunner()


@pytest.fixture(scope="module")
def curated(tmp_path_factory, samples_dir):
    """The curation stages up to dedup, run as library functions (the Dagster graph is tested elsewhere;
    the post-guard is left out to keep this quick)."""
    from wfm_platform.curation import pipeline as P
    from wfm_platform.curation.captions import make_captioner
    from wfm_platform.curation.config import PipelineConfig
    from wfm_platform.curation.embeddings import make_embedder
    from wfm_platform.storage.catalog import Catalog
    from wfm_platform.storage.objectstore import ObjectStore

    tmp = tmp_path_factory.mktemp("catalog_cli")
    up = tmp / "uploads" / "cam-1"
    up.mkdir(parents=True)
    shutil.copy(samples_dir / "bikes.mp4", up / "bikes.mp4")
    shutil.copy(samples_dir / "carphone_pristine.mp4", up / "carphone.mp4")
    store, cat, cfg = ObjectStore(str(tmp / "store")), Catalog(str(tmp / "catalog"), mirror=None), PipelineConfig.load(None)
    P.stage_raw_videos(store, cat, "cam-1", str(up), cfg)
    P.stage_clips(store, cat, "cam-1", cfg)
    P.stage_clip_scores(store, "cam-1", cfg)
    P.stage_filtered_clips(store, cat, "cam-1", cfg)
    P.stage_captions(store, cat, "cam-1", make_captioner("signals"))
    P.stage_clip_embeddings(store, cat, "cam-1", make_embedder("visual-signature"))
    P.stage_deduplicated_clips(store, cat, "cam-1", cfg)
    return {"uri": str(tmp / "catalog"), "cat": cat, "store": store}


def wfm_catalog(curated, *args):
    r = runner.invoke(catalog_app, [*args, "--catalog", curated["uri"]])
    return r


def _json(r):
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_clips_by_partition_resolution_and_caption(curated):
    clips = _json(wfm_catalog(curated, "clips", "--partition", "cam-1", "--json"))
    # bikes: 3 shots long enough; carphone: one 4 s shot
    assert len(clips) == 4 and all(c["embedded"] and "vector" not in c for c in clips)
    assert sorted((c["width"], c["height"]) for c in clips) == [(176, 144)] + [(640, 272)] * 3
    wide = _json(wfm_catalog(curated, "clips", "--min-width", "600", "--min-height", "200", "--json"))
    assert len(wide) == 3 and len({c["video_id"] for c in wide}) == 1  # all three from bikes.mp4
    # the carphone clip's caption mentions the face it shows; full-text finds it by that word
    face = _json(wfm_catalog(curated, "clips", "--caption", "face", "--json"))
    assert [c["width"] for c in face] == [176] and "face" in face[0]["caption"] and face[0]["score"] > 0
    assert _json(wfm_catalog(curated, "clips", "--caption", "face", "--min-width", "600", "--json")) == []
    assert _json(wfm_catalog(curated, "clips", "--partition", "other", "--json")) == []
    assert len(_json(wfm_catalog(curated, "clips", "--limit", "2", "--json"))) == 2
    table = wfm_catalog(curated, "clips", "--caption", "face")
    assert table.exit_code == 0 and "1 clips" in table.stdout


def test_neighbors_are_nearest_by_embedding(curated):
    import numpy as np

    cat = curated["cat"]
    clips = cat.clips()
    me = clips[0]
    got = _json(wfm_catalog(curated, "neighbors", me["clip_id"], "-k", "2", "--json"))
    assert len(got) == 2 and me["clip_id"] not in {g["clip_id"] for g in got}
    # the same ranking as cosine similarity computed here from the stored vectors
    others = [c for c in clips if c["clip_id"] != me["clip_id"]]
    sims = [float(me["vector"] @ c["vector"] / np.linalg.norm(me["vector"]) / np.linalg.norm(c["vector"]))
            for c in others]
    best = [others[i]["clip_id"] for i in np.argsort(sims)[::-1][:2]]
    assert [g["clip_id"] for g in got] == best
    assert got[0]["similarity"] == pytest.approx(max(sims), abs=1e-4)
    r = wfm_catalog(curated, "neighbors", "no-such-clip")
    assert r.exit_code == 1 and "not in the catalog" in r.output


def test_videos_and_show_say_where_a_clip_came_from(curated, samples_dir):
    vids = _json(wfm_catalog(curated, "videos", "--json"))
    assert sorted(v["source_uri"].rsplit("/", 1)[-1] for v in vids) == ["bikes.mp4", "carphone.mp4"]
    assert {v["status"] for v in vids} == {"ok"}
    face = curated["cat"].find_clips(caption="face")[0]
    info = _json(wfm_catalog(curated, "show", face["clip_id"], "--json"))
    assert info["clip"]["clip_id"] == face["clip_id"]
    assert info["video"]["source_uri"].endswith("carphone.mp4") and info["video"]["num_frames"] == 120
    kinds = {f["kind"] for f in info["frames"]}
    assert kinds == {"thumbnail", "caption"}
    thumb = next(f for f in info["frames"] if f["kind"] == "thumbnail")
    assert curated["store"].exists(curated["store"].rel(thumb["uri"]))  # the frame's image is really there
    assert thumb["source_frame"] == info["clip"]["start_frame"] + thumb["frame_index"]
    assert {m["key"]: m["value"] for m in info["metadata"]}["video_type"] == "natural"
    text = wfm_catalog(curated, "show", face["clip_id"])
    assert text.exit_code == 0 and "carphone.mp4" in text.stdout and "thumbnail" in text.stdout


def test_stats_counts_rows_and_reports_indexes(curated):
    s = _json(wfm_catalog(curated, "stats", "--json"))
    assert s["tables"]["videos"] == 2 and s["tables"]["clips"] == 4 and s["clips_embedded"] == 4
    assert s["tables"]["frames"] > 4 and s["tables"]["metadata"] == 4 and s["tables"]["datasets"] == 0
    fts = [i for i in s["indexes"] if i["column"] == "caption"]
    assert fts and fts[0]["index_type"] == "FTS" and fts[0]["builds"] == 1
    assert not [i for i in s["indexes"] if i["column"] == "vector"]  # 4 vectors: brute force is exact
    assert wfm_catalog(curated, "stats").exit_code == 0


def test_bad_input_says_what_to_do(curated, tmp_path):
    r = runner.invoke(catalog_app, ["clips", "--catalog", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "no catalog at" in r.output and "wfm curate" in r.output
    r = wfm_catalog(curated, "show", "nope")
    assert r.exit_code == 1 and "not in the catalog" in r.output
    r = wfm_catalog(curated, "clips", "--caption", " ")
    assert r.exit_code == 1 and "empty caption query" in r.output
    r = wfm_catalog(curated, "clips", "--where", "no_such_column > 3")
    assert r.exit_code == 1 and "no_such_column" in r.output
