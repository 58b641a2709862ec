"""The `wfm` command as a user runs it (a real subprocess, real footage)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import media_factory as mf

WFM = [sys.executable, "-m", "wfm_platform.cli"]


def run(args, env=None, cwd=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(WFM + args, capture_output=True, text=True, env=e, cwd=cwd, timeout=600)


def test_shots_json_on_real_cuts(samples_dir):
    r = run(["shots", str(samples_dir / "bikes.mp4"), "--json"])
    assert r.returncode == 0, r.stderr
    shots = json.loads(r.stdout)
    assert [s["start_frame"] for s in shots] == [0, 30, 76, 137, 187, 242]
    assert shots[-1]["end_frame"] == 249 and all(set(s) == {"start_frame", "end_frame"} for s in shots)


def test_shots_bad_input_says_why(tmp_path):
    r = run(["shots", str(mf.not_a_video(tmp_path / "x.mp4")), "--json"])
    assert r.returncode != 0 and "not a video" in r.stderr


def test_help_explains():
    r = run(["--help"])
    assert r.returncode == 0 and "curate" in r.stdout and "shots" in r.stdout
    r = run(["curate", "--help"])
    assert "--out" in r.stdout and "one batch" in r.stdout


def test_every_command_has_a_one_line_summary():
    """The command panels of `--help` show a command's first help paragraph with its line breaks kept, so a
    summary wrapped in the docstring comes out ragged: each one must be a single line."""
    import inspect

    import typer

    from wfm_platform.cli import app

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            yield path + [name], inspect.cleandoc(sub.short_help or sub.help or "").split("\n\n")[0]
            yield from walk(sub, path + [name])

    summaries = dict((" ".join(p), h) for p, h in walk(typer.main.get_command(app), []))
    assert len(summaries) > 30 and "tokenizer train" in summaries
    assert not {p: h for p, h in summaries.items() if "\n" in h or not h}


def test_curate_json_summary(tmp_path, samples_dir):
    d = tmp_path / "my batch"
    d.mkdir()
    mf.copy_as(samples_dir / "bikes.mp4", d / "bikes.mp4")
    mf.zero_byte(d / "broken.mp4")
    out = tmp_path / "out"
    r = run(["curate", str(d), "--out", str(out), "--json"], env={"DAGSTER_HOME": str(tmp_path / "dh")})
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert s["batch"] == "my-batch"
    assert [Path(p).name for p in s["processed"]] == ["bikes.mp4"]
    assert [(Path(x["path"]).name, x["reason"]) for x in s["rejected"]] == [("broken.mp4", "empty file (0 bytes)")]
    assert s["clips"] == 3 and s["shards"] and all(u.startswith("file://") for u in s["shards"])
    assert (out / "webdataset_shards" / "my-batch" / "manifest.json").exists()
    # the runs are real Dagster materializations in DAGSTER_HOME (what `wfm ui` shows)
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(tmp_path / "dh")
    try:
        with dg.DagsterInstance.get() as inst:
            ev = inst.get_latest_materialization_event(dg.AssetKey("webdataset_shards"))
            assert ev is not None and ev.dagster_event.partition == "my-batch"
    finally:
        del os.environ["DAGSTER_HOME"]


def test_ingest_then_backfill(tmp_path, samples_dir):
    src = tmp_path / "src"
    src.mkdir()
    mf.copy_as(samples_dir / "bikes.mp4", src / "bikes.mp4")
    env = {"DAGSTER_HOME": str(tmp_path / "dh"), "WFM_DATA_DIR": str(tmp_path / "data")}
    r = run(["ingest", str(src), "--batch", "cam1", "--json"], env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["batch"] == "cam1"
    assert (tmp_path / "data" / "uploads" / "cam1" / "_READY").exists()
    r = run(["backfill", "cam1", "--json"], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)[0]["clips"] == 3
    r = run(["backfill", "nope"], env=env)
    assert r.returncode != 0 and "not ready" in r.stderr


def test_curate_locations_default_to_the_catalog_every_other_command_reads(tmp_path, monkeypatch):
    from wfm_platform.cli import curate_locations

    for k in ("WFM_STORAGE_ROOT", "WFM_CATALOG_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WFM_DATA_DIR", str(tmp_path / "data"))
    data = (tmp_path / "data").resolve()
    assert curate_locations("", "") == (str(data / "store"), str(data / "catalog"))
    assert curate_locations(str(tmp_path / "o"), "") == (str(tmp_path / "o"), str(tmp_path / "o" / "catalog"))
    assert curate_locations("s3://b/root/", "") == ("s3://b/root/", "s3://b/root/catalog")
    assert curate_locations("", "az://c/cat") == (str(data / "store"), "az://c/cat")
    monkeypatch.setenv("WFM_CATALOG_URI", "gs://b/cat")
    assert curate_locations(str(tmp_path / "o"), "")[1] == "gs://b/cat"
    monkeypatch.setenv("WFM_STORAGE_ROOT", "s3://b/store")
    assert curate_locations("", "") == ("s3://b/store", "gs://b/cat")
