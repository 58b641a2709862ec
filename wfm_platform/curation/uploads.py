"""Upload batches: a folder under the uploads prefix is one batch, complete once `_READY` exists.

The rule uploaders follow (documented in README): copy every file of the batch first, then write
an empty `{uploads}/{batch}/_READY` object last. A batch without the marker is still uploading and
is never picked up. The same code serves file://, s3://, gs:// and az:// prefixes.
"""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from ..storage.objectstore import ObjectStore
from .pipeline import READY_MARKER

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Sidecars: `{stem}.json` next to `{stem}.mp4` (any video suffix) in a batch is metadata about that video,
# not a video. generated_videos writes one per video: {"prompt", "model", "checkpoint", "seed", "generated"};
# curation captions such a video with its prompt and marks it generated in the catalog.
SIDECAR_SUFFIX = ".json"


class UploadSidecar(BaseModel):
    """What a sidecar may say about its video; unknown keys are kept (carried into the raw_videos row)."""

    model_config = ConfigDict(extra="allow")

    prompt: str | None = None  # used as the video's caption (caption source "prompt") when non-empty
    model: str = ""
    checkpoint: str = ""
    seed: int | None = None
    generated: bool = False


def sidecar_key(video_key: str) -> str:
    """The sidecar key of a video key: `batch/001-x.mp4` -> `batch/001-x.json`."""
    return str(Path(video_key).with_suffix(SIDECAR_SUFFIX).as_posix())


def split_sidecars(keys: list[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """(video candidates, {video key: sidecar key}, sidecars with no video of the same stem).

    Every `.json` is a sidecar, never a video candidate (so it is not probed and rejected as a broken video).
    """
    side = {k for k in keys if k.lower().endswith(SIDECAR_SUFFIX)}
    videos = [k for k in keys if k not in side]
    by_stem = {str(Path(k).with_suffix("").as_posix()): k for k in side}
    pairs = {v: by_stem[s] for v in videos if (s := str(Path(v).with_suffix("").as_posix())) in by_stem}
    orphans = sorted(side - set(pairs.values()))
    return videos, pairs, orphans


def read_sidecar(store: ObjectStore, key: str) -> dict:
    """A sidecar's validated content; ValueError saying what is wrong with it."""
    import json

    try:
        return UploadSidecar.model_validate(json.loads(store.read_bytes(key))).model_dump(exclude_none=True)
    except json.JSONDecodeError as e:
        raise ValueError(f"sidecar {key} is not valid JSON ({e}); write an object like "
                         '{"prompt": "...", "generated": true}') from e
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "top level"
        raise ValueError(f"sidecar {key}: {where}: {err['msg']}") from e


def valid_batch_name(name: str) -> bool:
    return bool(_NAME.match(name))


def batch_name_for(path: str | os.PathLike) -> str:
    """A partition-safe batch name from a folder name (non-safe characters become '-')."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(path).rstrip("/")).name).strip("-.") or "batch"
    return base[:100]


def ready_batches(uploads: ObjectStore) -> list[str]:
    """Names of complete batches (those with a _READY marker), sorted."""
    names = set()
    for key in uploads.list(""):
        parts = key.split("/")
        if len(parts) == 2 and parts[1] == READY_MARKER and valid_batch_name(parts[0]):
            names.add(parts[0])
    return sorted(names)


def new_batch_name(prefix: str = "batch") -> str:
    return f"{prefix}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}"


def upload_folder(src: str | os.PathLike, uploads: ObjectStore, batch: str) -> list[str]:
    """Copy a local folder's files into {uploads}/{batch}/ then write the _READY marker last."""
    if not valid_batch_name(batch):
        raise ValueError(f"batch name {batch!r}: use letters, digits, '.', '_' or '-' (max 128)")
    src = Path(src)
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is not a folder")
    written = []
    for p in sorted(src.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and p.name != READY_MARKER:
            rel = f"{batch}/{p.relative_to(src).as_posix()}"
            if uploads.is_local:
                with uploads.staged(rel) as tmp:
                    shutil.copyfile(p, tmp)
            else:
                uploads.put_file(p, rel)
            written.append(rel)
    uploads.write_bytes(f"{batch}/{READY_MARKER}", b"")
    return written
