"""Run the curation graph in this process: what `wfm curate`, `wfm ingest --run` and `wfm backfill` do.

Each asset is materialized in turn (one Dagster run per stage, so a progress bar can follow), into the
instance under DAGSTER_HOME, so `wfm ui` shows real materializations. The CLI imports this module
lazily: the library (wfm_platform/) itself never imports Dagster.
"""

import os
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from assets.curation import CURATION_ASSETS, upload_batches
from resources import CatalogResource, PipelineConfigResource, StorageResource, default_resources
from wfm_platform.curation.config import REPO_ROOT
from wfm_platform.storage.objectstore import ObjectStore

STAGES = [a.key.to_user_string() for a in CURATION_ASSETS]  # already in dependency order


def dagster_home() -> Path:
    """DAGSTER_HOME (default <repo>/.dagster_home), created with a dagster.yaml if it has none:
    SQLite storage, telemetry off (many of our machines are offline)."""
    from resources.instance import check_postgres_connection, ensure_dagster_yaml

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home"))).resolve()
    cfg = ensure_dagster_yaml(home)  # SQLite unless WFM_DAGSTER_STORAGE=postgres; an existing file is kept
    if "postgres" in cfg.read_text():
        check_postgres_connection()  # a clear error instead of Dagster's "too many retries"
    return home


def uploads_store(uri: str = "") -> ObjectStore:
    return ObjectStore(uri) if uri else StorageResource().uploads()


def resources_for(out: str | None, catalog: str | None = None, config: Path | None = None) -> dict:
    """The default resources, with the object-store root, catalog and pipeline YAML overridden."""
    res = default_resources()
    if out:
        res["storage"] = StorageResource(root_uri=out, uploads_uri=os.environ.get("WFM_UPLOADS_URI", ""))
        default_catalog = f"{out.rstrip('/')}/catalog" if "://" in out else str(Path(out) / "catalog")
        res["catalog"] = CatalogResource(uri=catalog or os.environ.get("WFM_CATALOG_URI") or default_catalog)
    elif catalog:
        res["catalog"] = CatalogResource(uri=catalog)
    if config:
        res["pipeline_config"] = PipelineConfigResource(path=str(config.resolve()))
    return res


def run_batch(partition: str, source_uri: str, resources: dict,
              on_stage: Callable[[str, int], None] | None = None) -> ObjectStore:
    """Materialize every curation asset for one batch; on_stage(name, index) before each.
    Raises RuntimeError naming the stage that failed. Returns the object store the outputs are in."""
    dagster_home()
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(upload_batches.name, [partition])
    quiet_logs = {"loggers": {"console": {"config": {"log_level": os.environ.get("WFM_DAGSTER_LOG_LEVEL", "WARNING")}}}}
    source = {"ops": {"raw_videos": {"config": {"source_uri": source_uri}}}}
    for i, stage in enumerate(STAGES):
        if on_stage is not None:
            on_stage(stage, i)
        result = dg.materialize(
            CURATION_ASSETS,
            selection=[stage],
            partition_key=partition,
            resources=resources,
            instance=instance,
            run_config={**quiet_logs, **(source if stage == "raw_videos" else {})},
            tags={"wfm/batch": partition, "wfm/launched_by": "wfm-cli"},
            raise_on_error=False,
        )
        if not result.success:
            failures = [e.message or e.event_type_value for e in result.all_events
                        if e.is_failure or e.event_type_value == "STEP_FAILURE"]
            raise RuntimeError(f"stage {stage} failed for batch {partition}: {' | '.join(failures)[:2000]}")
    return resources["storage"].store()
