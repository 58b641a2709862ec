"""The production Dagster instance on a real PostgreSQL server (started here on 127.0.0.1).

deploy/dagster-postgres.yaml becomes DAGSTER_HOME/dagster.yaml with its connection from DAGSTER_PG_*;
a real asset of the platform (raw_videos on a real video) is materialized on it and read back through
a second, fresh instance. SQLite stays the default.
"""

from __future__ import annotations

import dagster as dg
import media_factory as mf
import pytest
from postgres_server import postgres_server


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


@pytest.fixture()
def pg_home(tmp_path, monkeypatch, pg):
    from resources.instance import ensure_dagster_yaml

    for k, v in pg.env().items():
        monkeypatch.setenv(k, v)
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_yaml(home, "postgres")
    return home


def test_asset_materialization_round_trips_through_postgres(pg, pg_home, tmp_path, samples_dir):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    from assets.curation import CURATION_ASSETS, upload_batches
    from resources import CatalogResource, StorageResource, default_resources

    assert "postgres" in (pg_home / "dagster.yaml").read_text()
    up = tmp_path / "uploads" / "cam-1"
    up.mkdir(parents=True)
    mf.copy_as(samples_dir / "carphone_pristine.mp4", up / "carphone.mp4")
    res = default_resources()
    res["storage"] = StorageResource(root_uri=str(tmp_path / "store"), uploads_uri=str(tmp_path / "uploads"))
    res["catalog"] = CatalogResource(uri=str(tmp_path / "catalog"))

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        instance.add_dynamic_partitions(upload_batches.name, ["cam-1"])
        result = dg.materialize(
            CURATION_ASSETS, selection=["raw_videos"], partition_key="cam-1", resources=res, instance=instance,
            run_config={"ops": {"raw_videos": {"config": {"source_uri": str(up)}}}},
        )
        assert result.success
        run_id = result.run_id

    # A fresh instance from the same dagster.yaml (another process, the UI) reads it back from PostgreSQL.
    with dg.DagsterInstance.get() as again:
        ev = again.get_latest_materialization_event(dg.AssetKey("raw_videos"))
        assert ev is not None and ev.run_id == run_id and ev.dagster_event.partition == "cam-1"
        assert ev.asset_materialization.metadata["num_ok"].value == 1
        assert again.get_run_by_id(run_id).is_success
        assert again.get_dynamic_partitions(upload_batches.name) == ["cam-1"]

    import psycopg2

    with psycopg2.connect(pg.url) as conn, conn.cursor() as cur:  # the rows really are in PostgreSQL
        cur.execute("SELECT count(*) FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchone()[0] == 1


def test_wrong_password_fails_with_the_servers_reason(pg_home, monkeypatch):
    from resources.instance import check_postgres_connection

    check_postgres_connection()  # the right settings connect
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-the-password")
    with pytest.raises(ConnectionError, match=r"wfm@127\.0\.0\.1:\d+/dagster: .*password authentication failed"):
        check_postgres_connection()
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "wfm-test-pw")
    monkeypatch.setenv("DAGSTER_PG_DB", "no_such_db")
    with pytest.raises(ConnectionError, match='database "no_such_db" does not exist'):
        check_postgres_connection()


def test_postgres_needs_its_connection_settings_and_sqlite_stays_default(tmp_path, monkeypatch):
    from resources.instance import SQLITE_YAML, ensure_dagster_yaml, instance_yaml

    monkeypatch.delenv("WFM_DAGSTER_STORAGE", raising=False)
    assert instance_yaml() == SQLITE_YAML
    for k in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_DB"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WFM_DAGSTER_STORAGE", "postgres")
    with pytest.raises(ValueError, match="needs DAGSTER_PG_HOST.*DAGSTER_PG_DB"):
        instance_yaml()
    with pytest.raises(ValueError, match="unknown Dagster storage"):
        instance_yaml("mysql")
    cfg = tmp_path / "h" / "dagster.yaml"
    cfg.parent.mkdir()
    cfg.write_text("# the operator's own\n")
    assert ensure_dagster_yaml(cfg.parent, "sqlite").read_text() == "# the operator's own\n"  # never overwritten
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "sqlite_home"))
    ensure_dagster_yaml(tmp_path / "sqlite_home", "sqlite")
    with dg.DagsterInstance.get() as inst:
        assert type(inst.run_storage).__name__ == "SqliteRunStorage"
