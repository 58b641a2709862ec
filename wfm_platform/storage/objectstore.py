"""One object-store root URI for every artifact: file://, s3://, gs://, az:// through fsspec.

Layout: {root}/{asset}/{partition}/... . Writes are staged and committed whole, so a reader never
sees half an object:
- file://: write a temp name beside the target, then rename (atomic on one filesystem).
- s3:// gs:// az://: object stores have no rename, but every object PUT is atomic: a single PUT,
  an S3 multipart upload (visible only at CompleteMultipartUpload), a GCS resumable upload
  (visible only once finalized) and an Azure block-blob commit all publish the object whole or not
  at all. So the data is first written completely to a local temp file and then sent as ONE
  put_file to the final key; a failure before that leaves nothing, a failed upload leaves the old
  object. Writers that publish several objects (shards, then manifest) write the manifest last.
Names starting with ".tmp-" are staging names and are skipped by listings.

Failures are mapped to wfm_platform.storage.errors (transient vs permanent, with what to do);
transient ones are retried here a few times with backoff before they propagate. Optional
envelope encryption at rest (crypto.Encryption) is applied on every write and undone on every read.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

# gcsfs >= 2025.x probes every bucket's layout over gRPC (experimental zonal/HNS support); against
# emulators, private endpoints and offline machines that probe waits 60 s per bucket. Plain JSON-API
# access works for every bucket type; set the variable to "true" before import to opt back in.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec

from .atomic import atomic_path
from .crypto import MAX_HEADER, Encryption, is_encrypted
from .errors import (
    DecryptionError,
    StorageError,
    TransientStorageError,
    classify,
)

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
T = TypeVar("T")


def _norm_root(root: str) -> str:
    if "://" not in root:
        # not Path.as_uri(): fsspec does not unquote %20 and friends, and paths may have spaces/unicode
        root = "file://" + Path(root).expanduser().resolve().as_posix()
    return root.rstrip("/")


def endpoint_of(protocol: str, storage_options: dict) -> str:
    """The service endpoint a store talks to (for error messages); '' for the provider default."""
    so = storage_options or {}
    if protocol in ("s3", "s3a"):
        return so.get("endpoint_url") or (so.get("client_kwargs") or {}).get("endpoint_url") or ""
    if protocol in ("gs", "gcs"):
        return so.get("endpoint_url") or os.environ.get("STORAGE_EMULATOR_HOST", "")
    if protocol in ("az", "abfs", "abfss"):
        m = re.search(r"BlobEndpoint=([^;]+)", so.get("connection_string") or "")
        if m:
            return m.group(1)
        if so.get("account_host"):
            return f"https://{so['account_host']}"
        if so.get("account_name"):
            return f"https://{so['account_name']}.blob.core.windows.net"
    return ""


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def default_storage_options(protocol: str, env: dict | None = None) -> dict:
    """fsspec options a store gets from the environment; explicit storage_options override them.

    The SDKs still read their own variables (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS,
    AZURE_STORAGE_ACCOUNT_KEY, ...); these add endpoints and bounded timeouts/retries, so the CLI,
    the assets and the sensors reach the same bucket with the same settings.
    """
    env = os.environ if env is None else env
    if protocol in ("s3", "s3a"):
        # Bounded SDK retries: ObjectStore retries transient failures itself on top of these.
        so: dict = {"config_kwargs": {"connect_timeout": 10, "read_timeout": 120,
                                      "retries": {"max_attempts": 3, "mode": "standard"}}}
        if env.get("WFM_S3_ENDPOINT"):
            so["endpoint_url"] = env["WFM_S3_ENDPOINT"]
        region = env.get("WFM_S3_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region:
            so["client_kwargs"] = {"region_name": region}
        return so
    if protocol in ("gs", "gcs"):
        so = {}
        endpoint = env.get("WFM_GCS_ENDPOINT") or env.get("STORAGE_EMULATOR_HOST")
        if endpoint:
            so["endpoint_url"] = endpoint if "://" in endpoint else f"http://{endpoint}"
            if not env.get("GOOGLE_APPLICATION_CREDENTIALS"):
                so["token"] = "anon"  # emulators take no credentials
        project = env.get("WFM_GCS_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT")
        if project:
            so["project"] = project
        return so
    if protocol in ("az", "abfs", "abfss"):
        cs = env.get("WFM_AZURE_CONNECTION_STRING") or env.get("AZURE_STORAGE_CONNECTION_STRING")
        return {"connection_string": cs} if cs else {}
    return {}


def _bound_azure_retries(fs) -> None:
    """Shorten the Azure SDK's own retry backoff (15 s, 18 s, 24 s by default: about 90 s before an
    unreachable endpoint is reported). ObjectStore retries and the Dagster RetryPolicy sit on top,
    so three stacked layers of that would stall a step for many minutes. Best effort: the policy
    object is the SDK's documented ExponentialRetry, reached through the client's configuration."""
    try:
        policy = fs.service_client._config.retry_policy
        policy.initial_backoff, policy.increment_base = 1, 2  # waits ~1 s, 3 s, 5 s
        policy.random_jitter_range = 1
        policy.total_retries = policy.connect_retries = policy.read_retries = policy.status_retries = 3
    except AttributeError:
        log.debug("azure retry policy not found; keeping the SDK defaults")


class ObjectStore:
    """Thin wrapper over an fsspec filesystem rooted at `root` (a URI or a local path).

    storage_options: passed to the fsspec filesystem (credentials, endpoint), over the
    defaults from the environment (default_storage_options); resources/storage.py builds them.
    encryption: an Encryption, None (off), or "env" (default): from WFM_ENCRYPTION_KEY when set.
    retries: attempts for transient failures (connection refused, timeouts, 5xx, throttling).
    """

    def __init__(self, root: str | os.PathLike, storage_options: dict | None = None, *,
                 encryption: Encryption | None | Literal["env"] = "env", retries: int = 3,
                 backoff_s: float = 0.5):
        self.root = _norm_root(str(root))
        self.protocol = urlparse(self.root).scheme or "file"
        self.storage_options = _merge(default_storage_options(self.protocol), storage_options or {})
        self.encryption = Encryption.from_env() if encryption == "env" else encryption
        self.retries = max(1, int(retries))
        self.backoff_s = backoff_s
        self.endpoint = endpoint_of(self.protocol, self.storage_options)
        try:
            self.fs, self._root_path = fsspec.core.url_to_fs(self.root, **self.storage_options)
        except ImportError as e:
            pkg = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(self.protocol, "?")
            raise ImportError(f"{self.root}: the {self.protocol}:// backend needs `pip install {pkg}` ({e})") from e
        except Exception as e:  # e.g. a malformed Azure connection string
            err = classify(e, uri=self.root, protocol=self.protocol, endpoint=self.endpoint, op="open store")
            if err is None:
                raise
            raise err from e

        if self.protocol in ("az", "abfs", "abfss"):
            _bound_azure_retries(self.fs)

    def __repr__(self) -> str:
        return f"ObjectStore({self.root!r}, encrypted={self.encryption is not None})"

    # -- names -------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def is_plain_local(self) -> bool:
        """file:// without encryption: callers may write/read local_path() directly. With encryption
        they must go through staged()/local_copy()/open(), or bytes would bypass it."""
        return self.is_local and self.encryption is None

    def uri(self, rel: str = "") -> str:
        rel = rel.strip("/")
        return f"{self.root}/{rel}" if rel else self.root

    def _path(self, rel: str) -> str:
        rel = rel.strip("/")
        return f"{self._root_path.rstrip('/')}/{rel}" if rel else self._root_path

    def local_path(self, rel: str) -> Path:
        """The filesystem path of `rel`; only for file:// roots (the stored bytes: ciphertext if encrypted)."""
        if not self.is_local:
            raise ValueError(f"{self.root} is not a local store")
        return Path(self._path(rel))

    def rel(self, uri: str) -> str:
        """Relative key of a URI under this root."""
        root = self.root.rstrip("/")
        if uri != root and not uri.startswith(root + "/"):  # ".../store2/x" is not under ".../store"
            raise ValueError(f"{uri} is not under {self.root}")
        return uri[len(root) :].strip("/")

    # -- errors and retries --------------------------------------------------------------------
    def _call(self, op: str, rel: str, fn: Callable[[], T]) -> T:
        """Run fn, mapping SDK errors to StorageError and retrying transient ones with backoff."""
        for attempt in range(1, self.retries + 1):
            try:
                return fn()
            except StorageError as e:
                err, cause = e, None
            except Exception as e:
                err = classify(e, uri=self.uri(rel), protocol=self.protocol, endpoint=self.endpoint, op=op)
                if err is None:
                    raise
                cause = e
            if isinstance(err, TransientStorageError) and attempt < self.retries:
                delay = self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())  # jitter
                log.warning("%s (attempt %d/%d, retrying in %.1f s)", err, attempt, self.retries, delay)
                time.sleep(delay)
                self.fs.invalidate_cache()
                continue
            if cause is None:
                raise err
            raise err from cause
        raise AssertionError("unreachable")

    # -- reads -------------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        p = self._path(rel)

        def run() -> bool:
            self.fs.invalidate_cache(p)  # listings are cached per process; sensors need fresh answers
            return self.fs.exists(p)

        return self._call("check", rel, run)

    def _head(self, rel: str) -> bytes:
        p = self._path(rel)
        return self._call("read", rel, lambda: self.fs.cat_file(p, start=0, end=MAX_HEADER))

    def read_bytes(self, rel: str) -> bytes:
        data = self._call("read", rel, lambda: self.fs.cat_file(self._path(rel)))
        return self._decrypt_bytes(data, rel)

    def _decrypt_bytes(self, data: bytes, rel: str) -> bytes:
        if self.encryption is not None:
            return self.encryption.decrypt_bytes(data, self.uri(rel))
        if is_encrypted(data):
            raise self._needs_key(rel)
        return data

    def _needs_key(self, rel: str) -> DecryptionError:
        return DecryptionError(f"{self.uri(rel)} is encrypted: set WFM_ENCRYPTION_KEY (or the "
                               "StorageResource encryption key) to the key it was written with", self.uri(rel))

    def read_json(self, rel: str):
        return json.loads(self.read_bytes(rel))

    def open(self, rel: str, mode: str = "rb"):
        """A file object; in "rb" mode encrypted objects are decrypted as they stream.

        Writing through open() is not atomic on object stores and cannot encrypt: use staged()."""
        if "r" not in mode:
            if self.encryption is not None:
                raise ValueError(f"{self.root} is encrypted: write with staged()/write_bytes(), not open({mode!r})")
            return self._call("open", rel, lambda: self.fs.open(self._path(rel), mode))
        raw = self._call("open", rel, lambda: self.fs.open(self._path(rel), "rb"))
        if self.encryption is not None:
            return self.encryption.reader(raw, self.uri(rel))
        head = raw.read(len(b"WFMENC"))
        raw.seek(0)
        if is_encrypted(head):
            raw.close()
            raise self._needs_key(rel)
        return raw

    def list(self, prefix: str = "", *, recursive: bool = True) -> list[str]:
        """Relative keys of the files under prefix, sorted, staging files excluded."""
        base = self._path(prefix)

        def run() -> list[str]:
            self.fs.invalidate_cache(base)  # a long-lived sensor process must see new uploads
            if (self.is_local or self.protocol == "memory") and not self.fs.exists(base):
                return []
            # Remote: no exists() first. s3fs answers False for a bucket it cannot reach, which would
            # turn missing credentials or a dead endpoint into an empty listing (a silent sensor).
            try:
                found = self.fs.find(base) if recursive else self.fs.ls(base, detail=False)
            except FileNotFoundError as e:
                if recursive:  # find() returns [] for a missing prefix; it raises for a missing bucket
                    raise self._no_bucket(e) from e
                return []
            if not found and self.protocol in ("az", "abfs", "abfss"):
                container = self._root_path.strip("/").split("/")[0]
                if not self.fs.exists(container):  # adlfs lists a missing container as empty
                    raise self._no_bucket(None)
            return found

        paths = self._call("list", prefix, run)
        root = self._root_path.rstrip("/") + "/"
        out = []
        for p in paths:
            key = p[len(root) :] if p.startswith(root) else p.split(self._root_path.strip("/"), 1)[-1].strip("/")
            if not key or any(part.startswith(TMP_PREFIX) for part in key.split("/")):
                continue
            out.append(key)
        return sorted(out)

    def _no_bucket(self, e: BaseException | None):
        from .errors import BucketNotFoundError

        bucket = self._root_path.strip("/").split("/")[0]
        return BucketNotFoundError(f"cannot list {self.root}: bucket/container {bucket!r} does not exist "
                                   f"({e or 'no such container'}); create it or fix the store URI", self.root)

    def version_tag(self, rel: str) -> str:
        """What changes when the object is rewritten, as the backend reports it (ETag, generation, mtime):
        with the size, a cheap identity for caches keyed on a remote file."""
        info = self._call("stat", rel, lambda: self.fs.info(self._path(rel)))
        for k in ("ETag", "etag", "generation", "md5Hash", "mtime", "LastModified", "last_modified", "created"):
            if info.get(k) is not None:
                return str(info[k])
        return ""

    def size(self, rel: str) -> int:
        """Size in bytes of the object's content (the plaintext size for encrypted objects)."""
        total = int(self._call("stat", rel, lambda: self.fs.size(self._path(rel))))
        if self.encryption is None:
            return total
        return self.encryption.plaintext_size(self._head(rel), total, self.uri(rel))

    @contextlib.contextmanager
    def local_copy(self, rel: str) -> Iterator[Path]:
        """A local file path for reading `rel`: the file itself for plaintext file:// objects, else a
        temp download (decrypted when the store is encrypted), removed afterwards."""
        if self.is_plain_local:
            path = self.local_path(rel)
            with self._call("open", rel, lambda: open(path, "rb")) as f:
                if is_encrypted(f.read(len(b"WFMENC"))):
                    raise self._needs_key(rel)
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="wfm-get-") as tmp:
            dst = Path(tmp) / Path(rel).name
            if self.encryption is None:
                self._call("download", rel, lambda: self.fs.get_file(self._path(rel), str(dst)))
            else:
                def fetch() -> None:
                    with self.open(rel, "rb") as src, open(dst, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)

                self._call("download", rel, fetch)
            yield dst

    # -- writes ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def staged(self, rel: str) -> Iterator[Path]:
        """Yield a local temp path to write; on success it becomes `rel` in one step (see module doc)."""
        if self.is_plain_local:
            with atomic_path(self.local_path(rel)) as tmp:
                yield Path(tmp)
            return
        with tempfile.TemporaryDirectory(prefix="wfm-put-") as tmp:
            p = Path(tmp) / Path(rel).name  # keeps the suffix: encoders pick the format from it
            yield p
            if not p.exists():
                raise FileNotFoundError(f"nothing was written to the staging file for {self.uri(rel)}")
            if self.is_local:  # encrypted file:// (plain file:// returned above)
                with atomic_path(self.local_path(rel)) as final:
                    self.encryption.encrypt_file(p, final)
                return
            if self.encryption is not None:
                enc = Path(tmp) / (TMP_PREFIX + "enc")
                self.encryption.encrypt_file(p, enc)
                p = enc
            # ONE put of complete data to the final key: atomic on S3/GCS/Azure (module doc).
            self._call("write", rel, lambda: self.fs.put_file(str(p), self._path(rel)))

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

        def run() -> None:
            self.fs.invalidate_cache(p)
            if self.fs.exists(p):
                self.fs.rm(p, recursive=recursive)

        self._call("delete", rel, run)

    # -- other clients of the same bucket -----------------------------------------------------
    def lance_storage_options(self) -> dict[str, str]:
        """The same bucket and credentials as LanceDB / Arrow object_store options, so a catalog can
        live beside the artifacts (lancedb.connect(uri, storage_options=...)). Verified against moto
        (s3) and Azurite (az); the GCS emulator lacks the XML API object_store uses."""
        so, out = self.storage_options, {}
        endpoint = self.endpoint
        if self.protocol in ("s3", "s3a"):
            for k, v in (("key", "aws_access_key_id"), ("secret", "aws_secret_access_key"),
                         ("token", "aws_session_token")):
                if so.get(k):
                    out[v] = so[k]
            region = (so.get("client_kwargs") or {}).get("region_name")
            if region:
                out["aws_region"] = region
            if endpoint:
                out["aws_endpoint"] = endpoint
        elif self.protocol in ("az", "abfs", "abfss"):
            parts = dict(p.split("=", 1) for p in (so.get("connection_string") or "").split(";") if "=" in p)
            name = so.get("account_name") or parts.get("AccountName")
            key = so.get("account_key") or parts.get("AccountKey")
            sas = so.get("sas_token") or parts.get("SharedAccessSignature")
            for k, v in (("account_name", name), ("account_key", key), ("azure_storage_sas_token", sas)):
                if v:
                    out[k] = v
            if parts.get("BlobEndpoint"):
                out["azure_storage_endpoint"] = parts["BlobEndpoint"]
        elif self.protocol in ("gs", "gcs"):
            token = so.get("token")
            if isinstance(token, str) and token.endswith(".json"):
                out["google_service_account"] = token
            elif token == "anon":  # anonymous (emulators, public buckets): no metadata-server lookup
                out["google_skip_signature"] = "true"
            if endpoint:
                out["google_base_url"] = endpoint
        if endpoint.startswith("http://"):
            out["allow_http"] = "true"  # local servers (MinIO, moto, Azurite) speak plain HTTP
        return out

    # -- streaming readers (webdataset) --------------------------------------------------------
    def gopen(self, url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any):
        """A webdataset gopen handler for URLs of this store: its credentials, retries, decryption."""
        if mode != "rb":
            raise ValueError(f"{url}: webdataset streams from an ObjectStore are read-only")
        return self.open(self.rel(url), "rb")

    def webdataset_urls(self, urls: Sequence[str]) -> list[str]:
        """URLs that webdataset opens through this store (`gopen`): needed for encrypted stores
        (including file://, which webdataset would otherwise open itself) and for credentials that
        differ per store. Registers a scheme unique to this store's configuration, e.g.
        "wfm-1a2b3c4d5e:s3://bucket/shard-000000.tar"."""
        gopen_module = importlib.import_module("webdataset.gopen")  # `webdataset.gopen` the function shadows it
        cfg = json.dumps([self.root, sorted(self.storage_options.items(), key=str),
                          self.encryption.key_id if self.encryption else ""], default=str)
        scheme = "wfm-" + hashlib.sha256(cfg.encode()).hexdigest()[:10]
        _GOPEN_STORES[scheme] = self

        def handler(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any):
            return _GOPEN_STORES[scheme].gopen(url[len(scheme) + 1 :], mode, bufsize, **kw)

        gopen_module.gopen_schemes[scheme] = handler
        return [f"{scheme}:{u}" for u in urls]


_GOPEN_STORES: dict[str, ObjectStore] = {}


def default_store_uri() -> str:
    """$WFM_STORAGE_ROOT, else $WFM_DATA_DIR/store, else <repo>/data/store: the store the `wfm` commands and
    the Dagster resources open when none is named."""
    if os.environ.get("WFM_STORAGE_ROOT"):
        return os.environ["WFM_STORAGE_ROOT"]
    from ..curation.config import data_dir

    return str(data_dir() / "store")


def default_store() -> ObjectStore:
    return ObjectStore(default_store_uri())


def store_for(uri_or_path: str | os.PathLike, storage_options: dict | None = None, **kw: Any) -> ObjectStore:
    return ObjectStore(uri_or_path, storage_options, **kw)


def store_and_key(uri: str) -> tuple[ObjectStore, str]:
    """(the store of the URI's folder, the file name): "s3://b/x/y.pt" -> (ObjectStore("s3://b/x"), "y.pt")."""
    parent, _, name = str(uri).rstrip("/").rpartition("/")
    return store_for(parent), name


@contextlib.contextmanager
def local_file(uri_or_path: str | os.PathLike) -> Iterator[Path]:
    """A local path for reading the file `uri_or_path` names: a plain path as it is; a URI (s3://, gs://,
    az://, memory://, or file:// of an encrypted store) through its store's local_copy: a temp download,
    decrypted, removed after the `with` block."""
    s = str(uri_or_path)
    if "://" not in s:
        yield Path(s)
        return
    store, name = store_and_key(s)
    with store.local_copy(name) as p:
        yield p
