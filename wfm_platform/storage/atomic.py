"""Write to a temp name beside the target, then rename: readers never see half a file."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dst: str | os.PathLike):
    """Yield a temp path beside dst; on success rename it over dst, on failure remove it.

    The temp name keeps dst's suffix (encoders pick the format from it) and starts with ".tmp-"
    so listings can skip it.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{dst.name}")
    try:
        yield tmp
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes_atomic(dst: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(dst) as tmp:
        Path(tmp).write_bytes(data)
    return Path(dst)
