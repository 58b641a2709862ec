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

from ..storage.objectstore import ObjectStore
from .pipeline import READY_MARKER

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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
