"""The code location `dagster dev -w workspace.yaml` loads: graph, checks, job, sensor, resources."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_with_checks_on_every_asset():
    from definitions import defs

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assets = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert assets == {"raw_videos", "clips", "clip_scores", "filtered_clips", "captions", "clip_embeddings",
                      "deduplicated_clips", "guarded_clips", "webdataset_shards",
                      "dataset_versions", "tokenizer_checkpoint", "video_tokens",
                      "diffusion_wfm", "autoregressive_wfm", "generated_videos"}
    checked = {k.asset_key.to_user_string() for k in graph.asset_check_keys}
    assert checked == assets  # every asset has at least one check
    assert defs.resolve_job_def("curation_job") is not None
    assert defs.resolve_sensor_def("upload_sensor") is not None
    for job in ("dataset_version_job", "retention_job", "erasure_job"):
        assert defs.resolve_job_def(job) is not None
    assert defs.resolve_schedule_def("retention_daily") is not None
    # lineage as designed
    deps = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys} for k in graph.get_all_asset_keys()}
    assert deps["webdataset_shards"] == {"guarded_clips", "captions"}
    assert deps["guarded_clips"] == {"deduplicated_clips"}
    assert deps["clip_embeddings"] == {"filtered_clips"}


def test_workspace_loads_with_dagster_cli(tmp_path):
    r = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        capture_output=True, text=True, cwd=tmp_path, env={"DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
