"""The small helpers that several modules share since the de-duplication: config_io (incl. repo_path), progress,
tokenizer.data.count_skip, tokenizer.train.load_state_strict, curation.pipeline._clip_errors.
Fast (no video, no training): each helper on good input and on the broken input it must refuse."""

from __future__ import annotations

import io
import json
import logging

import pytest
import torch
from pydantic import BaseModel, ValidationError
from rich.console import Console

from wfm_platform.config_io import (
    REPO_ROOT,
    read_jsonl,
    read_yaml_mapping,
    repo_path,
    trim_jsonl,
    with_overrides,
)
from wfm_platform.curation.pipeline import _clip_errors
from wfm_platform.models.checkpoint import CheckpointError as WorldCheckpointError
from wfm_platform.models.checkpoint import load_weights
from wfm_platform.models.train import load_train_config as load_world_config
from wfm_platform.progress import training_progress
from wfm_platform.storage.errors import TransientStorageError
from wfm_platform.tokenizer.data import ClipTooShortError, ShardSourceError, count_skip
from wfm_platform.tokenizer.train import CheckpointError, load_state_strict
from wfm_platform.tokenizer.train import load_train_config as load_tok_config


def test_repo_path_resolves_config_names_against_the_checkout(tmp_path):
    # relative names in configs/*.yaml mean the checkout, whatever the working directory
    assert repo_path("configs/guardrails.yaml") == REPO_ROOT / "configs/guardrails.yaml"
    assert repo_path("configs/guardrails.yaml").is_file()
    assert (REPO_ROOT / "pyproject.toml").is_file()
    assert repo_path(tmp_path / "x.yaml") == tmp_path / "x.yaml"  # absolute: unchanged


class _Cfg(BaseModel):
    model_config = {"extra": "forbid"}
    steps: int = 10
    lr: float = 1e-3


def test_yaml_mapping_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 5\nlr: 0.5\n")
    data = read_yaml_mapping(p, example="x.yaml")
    assert data == {"steps": 5, "lr": 0.5}
    cfg = with_overrides(_Cfg, data, {"steps": 7, "lr": None})  # None: an option not given keeps the file's
    assert (cfg.steps, cfg.lr) == (7, 0.5)
    assert data == {"steps": 5, "lr": 0.5}  # the caller's dict is not changed
    assert read_yaml_mapping(None, example="x.yaml") == {}
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml_mapping(tmp_path / "empty.yaml", example="x.yaml") == {}


def test_yaml_mapping_refuses_broken_input(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist \(see configs/a.yaml\)"):
        read_yaml_mapping(tmp_path / "missing.yaml", example="configs/a.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping at the top level"):
        read_yaml_mapping(tmp_path / "list.yaml", example="x.yaml")
    (tmp_path / "typo.yaml").write_text("stepz: 3\n")
    with pytest.raises(ValidationError):
        with_overrides(_Cfg, read_yaml_mapping(tmp_path / "typo.yaml", example="x.yaml"), {})


def test_both_training_configs_use_the_shared_loader(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("steps: 3\ndataset: {dataset: city@1.0.0}\n")  # a run folder's train_config.yaml
    assert load_tok_config(p, lr=None).steps == 3  # the `dataset` record is dropped, not a config error
    with pytest.raises(FileNotFoundError, match="configs/train/world_tiny.yaml"):
        load_world_config(tmp_path / "nope.yaml")
    assert load_world_config(None, steps=4, strategy=None).steps == 4


def test_jsonl_read_and_trim(tmp_path):
    p = tmp_path / "loss.jsonl"
    assert read_jsonl(p) == []
    trim_jsonl(p, 3)  # nothing to trim yet: no file is created
    assert not p.exists()
    p.write_text("".join(json.dumps({"step": i, "loss": 1.0 / i}) + "\n" for i in range(1, 6)) + "\n")
    trim_jsonl(p, 3)
    assert [r["step"] for r in read_jsonl(p)] == [1, 2, 3]
    p.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(json.JSONDecodeError):
        read_jsonl(p)


def test_training_progress_moves_the_bar():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=120)
    with training_progress("train demo", 4, console) as on_step:
        for s in range(1, 5):
            on_step(s, 2, {"loss": 1.0 / s})
    out = buf.getvalue()
    assert "train demo" in out and "4/4" in out and "0.2500" in out
    buf = io.StringIO()
    with training_progress("quiet", 2, Console(file=buf), disable=True) as on_step:
        on_step(1, 1, {"loss": 0.5})
    assert buf.getvalue() == ""


def test_count_skip_fails_only_when_nothing_is_usable(caplog):
    e = ClipTooShortError("clip k is 3 frames, needs 9")
    with caplog.at_level(logging.WARNING):
        assert count_skip(e, 0, 0, "shards") == 1
    assert "skipped: clip k" in caplog.text
    assert count_skip(e, 500, 1, "shards") == 501  # some clips were usable: keep going
    with pytest.raises(ShardSourceError, match="no usable clip in the dataset after 51 tries"):
        count_skip(e, 50, 0, "dataset")


def test_load_state_strict_raises_the_callers_error():
    a, b = torch.nn.Linear(2, 3), torch.nn.Linear(2, 4)
    load_state_strict(b, torch.nn.Linear(2, 4).state_dict(), "ok.pt", "b")
    with pytest.raises(CheckpointError, match=r"(?s)run1 does not fit tiny/x \(why\?\): .*size mismatch"):
        load_state_strict(b, a.state_dict(), "run1", "tiny/x (why?)")
    with pytest.raises(WorldCheckpointError, match="does not fit this model"):
        load_weights(b, a.state_dict(), "runs/dit")
    assert not issubclass(WorldCheckpointError, CheckpointError)  # the two families keep their own errors


def test_clip_errors_records_and_goes_on_but_storage_outage_fails(caplog):
    errors: list[dict] = []
    with caplog.at_level(logging.WARNING), _clip_errors("clip_scores", "c1", errors):
        raise ValueError("undecodable")
    with _clip_errors("clip_scores", "c2", errors):
        pass
    assert len(errors) == 1 and errors[0]["clip_id"] == "c1" and "undecodable" in errors[0]["reason"]
    assert "clip_scores c1" in caplog.text
    with pytest.raises(TransientStorageError), _clip_errors("captions", "c3", errors):
        raise TransientStorageError("endpoint down")
    assert [e["clip_id"] for e in errors] == ["c1"]


def test_default_store_is_one_rule_everywhere(tmp_path, monkeypatch):
    """$WFM_STORAGE_ROOT, else $WFM_DATA_DIR/store: the CLI commands and the Dagster resource agree."""
    from resources import StorageResource
    from wfm_platform.cli import curate_locations
    from wfm_platform.storage.objectstore import default_store, default_store_uri

    monkeypatch.delenv("WFM_STORAGE_ROOT", raising=False)
    monkeypatch.setenv("WFM_DATA_DIR", str(tmp_path / "d"))
    assert default_store_uri() == str(tmp_path / "d" / "store")
    monkeypatch.setenv("WFM_STORAGE_ROOT", "memory://named-store")
    for root in (default_store().root, StorageResource().store().root, curate_locations("", "")[0]):
        assert root == "memory://named-store"


def test_local_file_reads_paths_and_uris(tmp_path):
    from wfm_platform.storage.errors import StorageError
    from wfm_platform.storage.objectstore import ObjectStore, local_file

    (tmp_path / "a.bin").write_bytes(b"local")
    with local_file(tmp_path / "a.bin") as p:
        assert p == tmp_path / "a.bin"
    store = ObjectStore(f"memory://lf-{tmp_path.name}")
    store.write_bytes("dir/b.bin", b"remote")
    with local_file(store.uri("dir/b.bin")) as p:
        assert p.read_bytes() == b"remote"
    assert not p.exists()  # the temp download is gone after the block
    with pytest.raises((StorageError, FileNotFoundError)), local_file(store.uri("dir/missing.bin")):
        pass
