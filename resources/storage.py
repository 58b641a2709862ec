"""Object-store resources: the root / uploads URIs, per-scheme credentials and the encryption key.

Every secret is a plain string field so a deployment passes dg.EnvVar("...") for it (Dagster then
reads it from the environment at run time and never shows it in the UI), for example:

    StorageResource(
        root_uri="s3://my-bucket/wfm", uploads_uri="s3://my-bucket/uploads",
        s3_key=dg.EnvVar("AWS_ACCESS_KEY_ID"), s3_secret=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
        encryption_key=dg.EnvVar("WFM_ENCRYPTION_KEY"),
    )

Empty fields fall back to the environment (wfm_platform.storage.objectstore.default_storage_options
and each SDK's own variables), so the defaults keep working on a laptop under ./data.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import dagster as dg

from wfm_platform.curation.config import data_dir
from wfm_platform.storage.crypto import Encryption
from wfm_platform.storage.errors import TransientStorageError
from wfm_platform.storage.objectstore import ObjectStore, default_store_uri

# For assets that read or write the object store: transient failures (endpoint briefly down,
# throttling, 5xx) that outlive ObjectStore's own few retries get whole-step retries. A RetryPolicy
# retries on ANY exception; wrap the body in retry_transient_storage() to retry only transient ones.
STORAGE_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL,
                                      jitter=dg.Jitter.PLUS_MINUS)


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is worth a step retry (a TransientStorageError anywhere in its chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, TransientStorageError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _encryption(key: str, previous_keys: str, required: bool) -> Encryption | None:
    if not key:
        enc = Encryption.from_env()
        if enc is not None and required:
            enc.require_encrypted = True
        return enc
    prev = [k for k in previous_keys.split(",") if k.strip()]
    return Encryption(key, prev, require_encrypted=required)


@contextlib.contextmanager
def retry_transient_storage(max_retries: int = 3, seconds_to_wait: float = 10.0) -> Iterator[None]:
    """In an asset/op body: a TransientStorageError becomes dg.RetryRequested (the step reruns
    later); permanent errors (credentials, permissions, missing bucket) fail at once."""
    try:
        yield
    except Exception as e:
        if is_transient(e):
            raise dg.RetryRequested(max_retries=max_retries, seconds_to_wait=seconds_to_wait) from e
        raise


class EncryptionKeyResource(dg.ConfigurableResource):
    """Master key for AES-256-GCM envelope encryption at rest (base64 of 32 bytes), for code that
    reads or writes encrypted objects outside StorageResource (which has the same three fields).

    key empty: WFM_ENCRYPTION_KEY from the environment; neither set: no encryption.
    previous_keys: older master keys, comma-separated, still accepted for reading after a rotation.
    required: refuse to read plaintext objects (fail closed) instead of passing them through.
    """

    key: str = ""
    previous_keys: str = ""
    required: bool = False

    def encryption(self) -> Encryption | None:
        return _encryption(self.key, self.previous_keys, self.required)


class StorageResource(dg.ConfigurableResource):
    """Object-store root for every artifact and the upload prefix the sensor watches.

    The same fields serve file://, s3://, gs:// and az:// roots; only the scheme's own fields apply.
    """

    root_uri: str = ""
    uploads_uri: str = ""
    # S3 and S3-compatible (MinIO, Ceph, moto): empty = the AWS credential chain / WFM_S3_ENDPOINT
    s3_key: str = ""
    s3_secret: str = ""
    s3_session_token: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    # Google Cloud Storage: token = path to a service-account JSON, "google_default", "cloud" or "anon"
    gcs_token: str = ""
    gcs_project: str = ""
    gcs_endpoint_url: str = ""
    # Azure Blob: a connection string, or account name + key (or SAS token)
    azure_connection_string: str = ""
    azure_account_name: str = ""
    azure_account_key: str = ""
    azure_sas_token: str = ""
    # transient-failure attempts inside ObjectStore (the asset RetryPolicy comes on top)
    retries: int = 3
    # encryption at rest (flat fields, not a nested resource: nesting would make every sensor
    # test need `with build_sensor_context(...)`); see EncryptionKeyResource for their meaning
    encryption_key: str = ""
    encryption_previous_keys: str = ""
    encryption_required: bool = False
    # uploads come from outside (users, cameras) and stay as written; set True to encrypt them too
    # when wfm itself writes them (`wfm ingest`). Reading plaintext uploads works either way.
    encrypt_uploads: bool = False

    def storage_options(self, uri: str) -> dict:
        """fsspec options for `uri`'s scheme from the fields that are set."""
        scheme = uri.split("://", 1)[0] if "://" in uri else "file"
        so: dict = {}
        if scheme in ("s3", "s3a"):
            for field, opt in (("s3_key", "key"), ("s3_secret", "secret"), ("s3_session_token", "token"),
                               ("s3_endpoint_url", "endpoint_url")):
                if getattr(self, field):
                    so[opt] = getattr(self, field)
            if self.s3_region:
                so["client_kwargs"] = {"region_name": self.s3_region}
        elif scheme in ("gs", "gcs"):
            for field, opt in (("gcs_token", "token"), ("gcs_project", "project"),
                               ("gcs_endpoint_url", "endpoint_url")):
                if getattr(self, field):
                    so[opt] = getattr(self, field)
        elif scheme in ("az", "abfs", "abfss"):
            if self.azure_connection_string:
                so["connection_string"] = self.azure_connection_string
            for field, opt in (("azure_account_name", "account_name"), ("azure_account_key", "account_key"),
                               ("azure_sas_token", "sas_token")):
                if getattr(self, field):
                    so[opt] = getattr(self, field)
        return so

    def _encryption(self) -> Encryption | None:
        return _encryption(self.encryption_key, self.encryption_previous_keys, self.encryption_required)

    def _open(self, uri: str, encrypt: bool) -> ObjectStore:
        return ObjectStore(uri, self.storage_options(uri), retries=self.retries,
                           encryption=self._encryption() if encrypt else None)

    def store_for_uri(self, uri: str) -> ObjectStore:
        """A store rooted at any URI (e.g. a batch's source_uri) with this resource's credentials;
        the artifact store's encryption applies under root_uri, the uploads setting under uploads_uri."""
        for candidate in (self.store(), self.uploads()):
            if uri.rstrip("/") == candidate.root or uri.startswith(candidate.root + "/"):
                return self._open(uri, candidate.encryption is not None)
        return self._open(uri, False)

    def store(self) -> ObjectStore:
        return self._open(self.root_uri or default_store_uri(), True)

    def uploads(self) -> ObjectStore:
        uri = self.uploads_uri or os.environ.get("WFM_UPLOADS_URI", str(data_dir() / "uploads"))
        # Reads of plaintext uploads pass through an encrypting store, so one code path serves both.
        return self._open(uri, self.encrypt_uploads)
