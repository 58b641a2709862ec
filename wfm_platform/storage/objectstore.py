"""One object-store root URI for every artifact: file://, s3://, gs://, az:// through fsspec.

Layout: {root}/{asset}/{partition}/... . Writes are staged and committed whole: locally a temp
name and a rename, remotely a single PUT (or a completed multipart upload), so a reader never sees
half an object. Names starting with ".tmp-" are staging names and are skipped by listings.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import fsspec

from .atomic import atomic_path

TMP_PREFIX = ".tmp-"


def _norm_root(root: str) -> str:
    if "://" not in root:
        # not Path.as_uri(): fsspec does not unquote %20 and friends, and paths may have spaces/unicode
        root = "file://" + Path(root).expanduser().resolve().as_posix()
    return root.rstrip("/")


class ObjectStore:
    """Thin wrapper over an fsspec filesystem rooted at `root` (a URI or a local path)."""

    def __init__(self, root: str | os.PathLike, storage_options: dict | None = None):
        self.root = _norm_root(str(root))
        self.protocol = urlparse(self.root).scheme or "file"
        self.storage_options = storage_options or {}
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root, **self.storage_options)

    # -- names -------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    def uri(self, rel: str = "") -> str:
        rel = rel.strip("/")
        return f"{self.root}/{rel}" if rel else self.root

    def _path(self, rel: str) -> str:
        rel = rel.strip("/")
        return f"{self._root_path.rstrip('/')}/{rel}" if rel else self._root_path

    def local_path(self, rel: str) -> Path:
        """The filesystem path of `rel`; only for file:// roots."""
        if not self.is_local:
            raise ValueError(f"{self.root} is not a local store")
        return Path(self._path(rel))

    def rel(self, uri: str) -> str:
        """Relative key of a URI under this root."""
        if not uri.startswith(self.root):
            raise ValueError(f"{uri} is not under {self.root}")
        return uri[len(self.root) :].strip("/")

    # -- reads -------------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._path(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self._path(rel))

    def read_json(self, rel: str):
        return json.loads(self.read_bytes(rel))

    def open(self, rel: str, mode: str = "rb"):
        return self.fs.open(self._path(rel), mode)

    def list(self, prefix: str = "", *, recursive: bool = True) -> list[str]:
        """Relative keys of the files under prefix, sorted, staging files excluded."""
        base = self._path(prefix)
        if not self.fs.exists(base):
            return []
        paths = self.fs.find(base) if recursive else [p for p in self.fs.ls(base, detail=False)]
        root = self._root_path.rstrip("/") + "/"
        out = []
        for p in paths:
            key = p[len(root) :] if p.startswith(root) else p.split(self._root_path.strip("/"), 1)[-1].strip("/")
            if any(part.startswith(TMP_PREFIX) for part in key.split("/")):
                continue
            out.append(key)
        return sorted(out)

    def size(self, rel: str) -> int:
        return int(self.fs.size(self._path(rel)))

    @contextlib.contextmanager
    def local_copy(self, rel: str) -> Iterator[Path]:
        """A local file path for reading `rel` (the file itself for file://, else a temp download)."""
        if self.is_local:
            yield self.local_path(rel)
            return
        with tempfile.TemporaryDirectory(prefix="wfm-get-") as tmp:
            dst = Path(tmp) / Path(rel).name
            self.fs.get_file(self._path(rel), str(dst))
            yield dst

    # -- writes ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def staged(self, rel: str) -> Iterator[Path]:
        """Yield a local temp path to write; on success it becomes `rel` in one step."""
        if self.is_local:
            with atomic_path(self.local_path(rel)) as tmp:
                yield Path(tmp)
            return
        with tempfile.TemporaryDirectory(prefix="wfm-put-") as tmp:
            p = Path(tmp) / Path(rel).name
            yield p
            self.fs.put_file(str(p), self._path(rel))

    def put_file(self, local: str | os.PathLike, rel: str) -> str:
        with self.staged(rel) as tmp:
            shutil.copyfile(local, tmp)
        return self.uri(rel)

    def write_bytes(self, rel: str, data: bytes) -> str:
        with self.staged(rel) as tmp:
            tmp.write_bytes(data)
        return self.uri(rel)

    def write_json(self, rel: str, obj) -> str:
        return self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def delete(self, rel: str, recursive: bool = False) -> None:
        p = self._path(rel)
        if self.fs.exists(p):
            self.fs.rm(p, recursive=recursive)


def store_for(uri_or_path: str | os.PathLike, storage_options: dict | None = None) -> ObjectStore:
    return ObjectStore(uri_or_path, storage_options)
