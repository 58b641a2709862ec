"""Storage errors that say what went wrong and what to do, split into transient and permanent.

fsspec backends (s3fs, gcsfs, adlfs) raise their SDK's exceptions (botocore, aiohttp, azure-core,
google-auth); `classify` maps them onto this small hierarchy by class name and message, so the
library does not import any cloud SDK just to recognise its errors.

- TransientStorageError: retrying may help (endpoint unreachable, timeouts, 5xx, throttling).
  ObjectStore retries these a few times itself; Dagster assets put a RetryPolicy on top.
- PermanentStorageError: retrying cannot help (no credentials, access denied, missing bucket or
  object, undecryptable object); fix the configuration or the data.

Every class is an OSError (callers that already catch OSError keep working), and the "not found"
ones are also FileNotFoundError.
"""

from __future__ import annotations


class StorageError(OSError):
    """Base class; `uri` is the object or root the operation was about."""

    def __init__(self, message: str, uri: str = ""):
        super().__init__(message)
        self.uri = uri

    def __str__(self) -> str:  # OSError's __str__ would show the args tuple for some subclasses
        return str(self.args[0]) if self.args else ""


class TransientStorageError(StorageError):
    """Retrying later may succeed."""


class PermanentStorageError(StorageError):
    """Retrying will not help: fix credentials, permissions, names or data."""


class StorageUnreachableError(TransientStorageError):
    """The endpoint refused the connection, timed out or did not resolve."""


class StorageCredentialsError(PermanentStorageError):
    """No credentials, or credentials the service rejects."""


class StoragePermissionError(PermanentStorageError, PermissionError):
    """Credentials are valid but lack permission for this bucket/object."""


class BucketNotFoundError(PermanentStorageError, FileNotFoundError):
    """The bucket / container does not exist."""


class ObjectNotFoundError(PermanentStorageError, FileNotFoundError):
    """The object does not exist (for example deleted between listing and reading)."""


class DecryptionError(PermanentStorageError):
    """An encrypted object cannot be decrypted: wrong key or corrupted/tampered data."""


# Exception class names (anywhere in the MRO) from the cloud SDKs, by meaning.
_UNREACHABLE = {
    "EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",  # botocore
    "ClientConnectorError", "ClientConnectionError", "ServerDisconnectedError",  # aiohttp
    "ServiceRequestError",  # azure-core: the request never reached the service
    "ConnectionError", "ConnectionRefusedError", "TimeoutError",  # builtins / requests
}
_TRANSIENT = {
    "ReadTimeoutError", "ServerTimeoutError", "ServiceResponseError", "IncompleteReadError",
    "ResponseStreamingError", "RetryError", "ServiceUnavailable", "InternalServerError",
    "TooManyRequests", "GatewayTimeout", "BadGateway",
}
_CREDENTIALS = {
    "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",  # botocore
    "DefaultCredentialsError", "RefreshError",  # google-auth
    "ClientAuthenticationError", "CredentialUnavailableError",  # azure
}
# Words, not bare status numbers: URLs in messages carry ports like :40311.
_TRANSIENT_WORDS = ("slowdown", "throttl", "service unavailable", "timed out", "temporarily",
                    "too many requests", "serverbusy", "operationtimedout", "internalerror")
_DENIED_WORDS = ("accessdenied", "access denied", "forbidden", "authorizationfailure",
                 "authorizationpermissionmismatch", "not authorized", "permission")
_BAD_CREDS_WORDS = ("invalidaccesskeyid", "signaturedoesnotmatch", "authenticationfailed",
                    "invalid_grant", "expiredtoken", "invalidtoken", "unauthorized",
                    "failed to authenticate")
_NO_CREDS_WORDS = ("must provide either a connection_string", "unable to locate credentials",
                   "could not automatically determine credentials", "no credentials")
_NO_BUCKET_WORDS = ("nosuchbucket", "bucket does not exist", "containernotfound",
                    "container does not exist", "the specified container", "no such bucket",
                    "bucket not found")

_ENV_HINT = {
    "s3": "set WFM_S3_ENDPOINT (or StorageResource.s3_endpoint_url) and AWS_ACCESS_KEY_ID / "
          "AWS_SECRET_ACCESS_KEY (or s3_key / s3_secret)",
    "gs": "set WFM_GCS_ENDPOINT (or StorageResource.gcs_endpoint_url; STORAGE_EMULATOR_HOST for an "
          "emulator) and GOOGLE_APPLICATION_CREDENTIALS (or gcs_token)",
    "az": "set WFM_AZURE_CONNECTION_STRING (or StorageResource.azure_connection_string), or "
          "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY",
}


def _names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _chain(exc: BaseException):
    """exc and its causes/contexts (SDK errors are often wrapped by fsspec)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _status(exc: BaseException) -> int | None:
    """The HTTP status an SDK exception carries (botocore, azure-core, aiohttp, gcsfs, api-core)."""
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):  # botocore ClientError
        code = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code:
            return int(code)
    for attr in ("status_code", "status", "code"):
        v = getattr(exc, attr, None)
        if isinstance(v, int) and 100 <= v < 600:
            return v
    return None


def _scheme(protocol: str) -> str:
    return {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "adl": "az"}.get(protocol, protocol)


def classify(exc: BaseException, *, uri: str, protocol: str, endpoint: str = "",
             op: str = "access") -> StorageError | None:
    """The StorageError that explains `exc`, or None when it is not a storage failure we recognise."""
    if isinstance(exc, StorageError):
        return exc
    scheme = _scheme(protocol)
    hint = _ENV_HINT.get(scheme, "check the store URI and its storage options")
    where = f"{scheme} endpoint {endpoint}" if endpoint else f"the {scheme} service"
    chain = list(_chain(exc))
    names = set().union(*(_names(e) for e in chain))
    text = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    detail = f"{type(exc).__name__}: {exc}"
    status = next((s for s in map(_status, chain) if s), None)

    if names & _CREDENTIALS or any(w in text for w in _NO_CREDS_WORDS):
        return StorageCredentialsError(f"cannot {op} {uri}: missing or rejected {scheme} credentials "
                                       f"({detail}); {hint}", uri)
    if any(w in text for w in _NO_BUCKET_WORDS):
        return BucketNotFoundError(f"cannot {op} {uri}: the bucket/container does not exist ({detail}); "
                                   f"create it or fix the store URI", uri)
    if isinstance(exc, FileNotFoundError) or status == 404:
        return ObjectNotFoundError(f"{uri} does not exist (it may have been deleted after it was listed)", uri)
    if status == 401 or any(w in text for w in _BAD_CREDS_WORDS):
        return StorageCredentialsError(f"cannot {op} {uri}: the {scheme} credentials were rejected "
                                       f"({detail}); {hint}", uri)
    if status == 403 or isinstance(exc, PermissionError) or any(w in text for w in _DENIED_WORDS):
        return StoragePermissionError(f"cannot {op} {uri}: permission denied ({detail}); grant these "
                                      f"credentials access to the bucket or use other credentials", uri)
    if names & _UNREACHABLE:
        return StorageUnreachableError(f"cannot reach {where} to {op} {uri}: is it running and reachable? "
                                       f"({detail}); {hint}", uri)
    if (status in (408, 429) or (status or 0) >= 500 or names & _TRANSIENT
            or any(w in text for w in _TRANSIENT_WORDS)):
        return TransientStorageError(f"transient {scheme} failure to {op} {uri} ({detail}); retry later", uri)
    return None
