"""Real object-store servers on 127.0.0.1 for tests: moto (S3), gcp-storage-emulator (GCS), Azurite.

Each fixture starts the server as a subprocess on a free port, waits until it answers HTTP, yields a
CloudServer and stops it at the end of the session. A fixture skips (with the install command)
only when the server's executable cannot be found; a server that is found but does not come up
is a test error. Install (what scripts/test.sh does):

    pip install "moto[server]==5.2.5" gcp-storage-emulator==2026.7.19
    npm install --prefix .cache azurite@3.35.0      # or set WFM_AZURITE_BIN to azurite-blob
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_exe(name: str, *extra: Path) -> str | None:
    """An executable from the venv's bin folder (beside sys.executable), PATH, or extra places."""
    for cand in (Path(sys.executable).parent / name, *extra):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which(name)


def _require_exe(name: str, install: str, *extra: Path) -> str:
    """find_exe, or skip the test saying how to install the server (the only reason a server test skips)."""
    exe = find_exe(name, *extra)
    if exe is None:
        pytest.skip(f"{name} not found: {install}")
    return exe


@dataclass
class CloudServer:
    scheme: str  # "s3" | "gs" | "az"
    endpoint: str
    storage_options: dict
    env: dict  # environment that points the wfm CLI / default_storage_options at this server
    resource_fields: dict  # StorageResource fields for this server
    proc: subprocess.Popen
    log: Path
    cmd: list = field(default_factory=list)

    def filesystem(self):
        import fsspec

        return fsspec.filesystem(self.scheme, skip_instance_cache=True, **self.storage_options)

    def make_bucket(self, prefix: str = "wfm") -> str:
        """A new empty bucket/container; returns its root URI."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.filesystem().mkdir(name)
        return f"{self.scheme}://{name}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer (400/403/404) means the server is up
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"{proc.args[0]} did not answer on {url} within {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def _start(cmd: list[str], log: Path, probe: str, env: dict | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)
    _wait_http(probe, proc, log)
    return proc


def start_moto(tmp: Path) -> CloudServer:
    exe = _require_exe("moto_server", 'pip install "moto[server]==5.2.5"')
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [exe, "-H", "127.0.0.1", "-p", str(port)]
    proc = _start(cmd, tmp / "moto.log", f"{endpoint}/")
    so = {"key": "testing", "secret": "testing", "endpoint_url": endpoint}
    env = {"WFM_S3_ENDPOINT": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    fields = {"s3_key": "testing", "s3_secret": "testing", "s3_endpoint_url": endpoint}
    return CloudServer("s3", endpoint, so, env, fields, proc, tmp / "moto.log", cmd)


def start_gcs(tmp: Path) -> CloudServer:
    exe = _require_exe("gcp-storage-emulator", "pip install gcp-storage-emulator==2026.7.19")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [exe, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"]
    proc = _start(cmd, tmp / "gcs.log", f"{endpoint}/storage/v1/b")
    so = {"endpoint_url": endpoint, "token": "anon", "project": "wfm-test"}
    env = {"WFM_GCS_ENDPOINT": endpoint, "WFM_GCS_PROJECT": "wfm-test"}
    fields = {"gcs_endpoint_url": endpoint, "gcs_token": "anon", "gcs_project": "wfm-test"}
    return CloudServer("gs", endpoint, so, env, fields, proc, tmp / "gcs.log", cmd)


def azurite_connection_string(endpoint: str, key: str = AZURITE_KEY) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
            f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};")


def start_azurite(tmp: Path, port: int | None = None, location: Path | None = None) -> CloudServer:
    exe = os.environ.get("WFM_AZURITE_BIN") or _require_exe(
        "azurite-blob", "npm install --prefix .cache azurite@3.35.0 (or set WFM_AZURITE_BIN)",
        ROOT / ".cache/node_modules/.bin/azurite-blob")
    port = port or free_port()
    location = location or (tmp / f"azurite-{port}")
    location.mkdir(parents=True, exist_ok=True)
    endpoint = f"http://127.0.0.1:{port}"
    # --disableTelemetry: otherwise it tries to phone home; --skipApiVersionCheck: newer SDKs
    cmd = [exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(location),
           "--skipApiVersionCheck", "--disableTelemetry", "--silent"]
    log = tmp / f"azurite-{port}.log"
    proc = _start(cmd, log, f"{endpoint}/{AZURITE_ACCOUNT}?comp=list")
    cs = azurite_connection_string(endpoint)
    return CloudServer("az", endpoint, {"connection_string": cs}, {"WFM_AZURE_CONNECTION_STRING": cs},
                       {"azure_connection_string": cs}, proc, log, cmd)


def _session_server(tmp_path_factory, start) -> Iterator[CloudServer]:
    server = start(tmp_path_factory.mktemp("cloud"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory) -> Iterator[CloudServer]:
    yield from _session_server(tmp_path_factory, start_moto)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory) -> Iterator[CloudServer]:
    yield from _session_server(tmp_path_factory, start_gcs)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> Iterator[CloudServer]:
    yield from _session_server(tmp_path_factory, start_azurite)


SERVER_FIXTURES = {"s3": "moto_s3", "gs": "gcs_emulator", "az": "azurite"}


@pytest.fixture(params=sorted(SERVER_FIXTURES))
def cloud(request) -> CloudServer:
    """Each of the three servers in turn (tests using it run once per scheme)."""
    return request.getfixturevalue(SERVER_FIXTURES[request.param])
