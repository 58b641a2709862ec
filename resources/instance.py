"""Which Dagster instance storage `wfm` and `dagster dev` use: SQLite (default) or PostgreSQL.

DAGSTER_HOME/dagster.yaml decides. `ensure_dagster_yaml(home)` writes one when the folder has none:
SQLite files under DAGSTER_HOME by default, or, with WFM_DAGSTER_STORAGE=postgres, the PostgreSQL
template deploy/dagster-postgres.yaml (connection from DAGSTER_PG_HOST/PORT/USER/PASSWORD/DB).
An existing dagster.yaml is never overwritten: it is the operator's file.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_TEMPLATE = REPO_ROOT / "deploy" / "dagster-postgres.yaml"
SQLITE_YAML = "telemetry:\n  enabled: false\n"
PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


def instance_yaml(storage: str | None = None) -> str:
    """dagster.yaml text for `storage` ("sqlite" | "postgres"; default: WFM_DAGSTER_STORAGE or sqlite)."""
    storage = (storage or os.environ.get("WFM_DAGSTER_STORAGE") or "sqlite").lower()
    if storage == "sqlite":
        return SQLITE_YAML
    if storage in ("postgres", "postgresql"):
        missing = [v for v in PG_ENV if v != "DAGSTER_PG_PASSWORD" and not os.environ.get(v)]
        if missing:
            raise ValueError(
                f"WFM_DAGSTER_STORAGE=postgres needs {', '.join(missing)} in the environment "
                f"(see {POSTGRES_TEMPLATE})"
            )
        return POSTGRES_TEMPLATE.read_text()
    raise ValueError(f"unknown Dagster storage {storage!r}: sqlite or postgres")


def ensure_dagster_yaml(home: str | Path, storage: str | None = None) -> Path:
    """DAGSTER_HOME/dagster.yaml, written from instance_yaml(storage) if the folder has none."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(instance_yaml(storage))
    return cfg


def check_postgres_connection(timeout_s: int = 5) -> None:
    """Connect once with the DAGSTER_PG_* settings and raise a clear error if that fails.

    Dagster retries a failing connection several times and then reports only "too many retries for DB
    connection"; call this first (e.g. in `wfm` before opening the instance) to tell the user why.
    """
    import psycopg2

    env = {k: os.environ.get(k, "") for k in PG_ENV}
    where = f"{env['DAGSTER_PG_USER']}@{env['DAGSTER_PG_HOST']}:{env['DAGSTER_PG_PORT'] or 5432}/{env['DAGSTER_PG_DB']}"
    try:
        psycopg2.connect(
            host=env["DAGSTER_PG_HOST"], port=int(env["DAGSTER_PG_PORT"] or 5432), user=env["DAGSTER_PG_USER"],
            password=env["DAGSTER_PG_PASSWORD"], dbname=env["DAGSTER_PG_DB"], connect_timeout=timeout_s,
        ).close()
    except psycopg2.OperationalError as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ConnectionError(
            f"cannot reach the Dagster PostgreSQL database {where}: {reason}. Check DAGSTER_PG_HOST/PORT/USER/"
            "PASSWORD/DB (and that the database exists), or unset WFM_DAGSTER_STORAGE to use SQLite"
        ) from e
