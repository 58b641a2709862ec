"""Reading YAML configs and the JSON-lines logs that training runs write, and resolving the repo-relative paths
configs name: one implementation each.

    data = read_yaml_mapping("configs/train/world_tiny.yaml", example="configs/train/world_tiny.yaml")
    cfg = with_overrides(TrainConfig, data, {"steps": 200, "lr": None})   # None: keep the file's value
    trim_jsonl(run / "loss.jsonl", step=40); rows = read_jsonl(run / "loss.jsonl")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

# the checkout (configs/, bench/, data/ live here); the package is installed editable from it
REPO_ROOT = Path(__file__).resolve().parents[1]


def repo_path(path: str | os.PathLike) -> Path:
    """`path` itself when absolute, else relative to the repository root: how configs name their files."""
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def read_yaml_mapping(path: str | os.PathLike | None, *, what: str = "training config", example: str) -> dict:
    """The top-level mapping of a YAML file ({} for None or an empty file).

    A missing file or a non-mapping document is an error that names `example`, a file that works."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist (see {example})")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        # ValueError, not TypeError: the CLIs report ValueErrors as a bad request
        raise ValueError(f"{p}: expected a mapping at the top level")  # noqa: TRY004
    return data


def with_overrides(cls: type[M], data: dict, overrides: dict) -> M:
    """`cls` validated from `data` updated with `overrides`; None overrides (CLI options not given) are ignored."""
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return cls.model_validate(data)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every JSON line of `path` (blank lines skipped); [] when the file does not exist yet."""
    p = Path(path)
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.exists() else []


def trim_jsonl(path: Path, step: int) -> None:
    """Drop log lines past `step` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in keep))
