"""Content-derived ids: reruns produce the same ids, so outputs overwrite instead of duplicating."""

from __future__ import annotations

import hashlib
import os

_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def video_id(digest: str) -> str:
    return digest[:16]


def clip_id(source_digest: str, start_frame: int, end_frame: int) -> str:
    """Clip id = hash of the source content and the frame range (inclusive)."""
    return hashlib.sha256(f"{source_digest}:{start_frame}:{end_frame}".encode()).hexdigest()[:16]
