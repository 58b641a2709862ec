"""A real, throwaway PostgreSQL server on 127.0.0.1 for tests (and `.ci/run`).

initdb into a fresh temp folder, pg_ctl start on a free port with password (scram-sha-256) auth over
TCP, a database created, everything stopped and removed afterwards. PostgreSQL refuses to run as root,
so under root the server runs as the `postgres` system user (runuser). Needs Debian's `postgresql`
package (`apt-get install postgresql`); without it the fixture skips and says so.

    with postgres_server() as pg:   # pg: host, port, user, password, db, url
        ...
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    db: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.db}"

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables that deploy/dagster-postgres.yaml reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": self.db}


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin with initdb and pg_ctl, or None."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if Path(d, "initdb").exists() and Path(d, "pg_ctl").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runner() -> tuple[list[str], str | None]:
    """Command prefix to run the server binaries as a non-root user, and that user (None: ourselves)."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam("postgres")
    except KeyError as e:
        raise RuntimeError("running as root and there is no `postgres` user to run PostgreSQL as") from e
    return ["runuser", "-u", "postgres", "--"], "postgres"


@contextlib.contextmanager
def postgres_server(db: str = "dagster", user: str = "wfm", password: str = "wfm-test-pw") -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        import pytest

        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin): apt-get install postgresql")
    prefix, owner = _runner()
    # Not under pytest's tmp_path: its parents are private to root, and the server may run as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="wfm-pg-"))
    data, log = base / "data", base / "server.log"
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if owner:
        shutil.chown(base, owner)
        shutil.chown(pwfile, owner)
    port = _free_port()

    def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        r = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if r.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stderr[-2000:]}\n{tail}")
        return r

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}", "--auth-local=trust",
            "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start")
        started = True
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()
        yield PostgresServer("127.0.0.1", port, user, password, db)
    finally:
        if started:
            with contextlib.suppress(Exception):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop", timeout=60)
        shutil.rmtree(base, ignore_errors=True)
