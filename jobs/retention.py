"""Retention (daily schedule) and erasure as Dagster op jobs; the logic is in wfm_platform/storage.

- `retention_job` + `retention_schedule` (daily 03:00 UTC; off by default like the upload sensor: it
  deletes data, so someone switches it on in the UI on purpose). Run config `dry_run: true` reports only.
- `erasure_job`: `wfm erase` from the launchpad (video_id, reason, dry_run), so an erasure is a run
  with its own record in the Dagster instance too. Note: the run config (with the video id) stays in
  the Dagster run storage; where that matters, use `wfm erase`, which records only hashes.
"""

from datetime import datetime

import dagster as dg

from resources import CatalogResource, StorageResource


class RetentionRunConfig(dg.Config):
    dry_run: bool = False
    config_path: str = ""  # retention YAML; empty = configs/retention.yaml
    now: str = ""  # ISO time to evaluate ages at; empty = now


@dg.op(description="Delete partitions and logs older than their policy; keep what dataset versions use.")
def apply_retention_op(context: dg.OpExecutionContext, config: RetentionRunConfig, storage: StorageResource,
                       catalog: CatalogResource) -> dict:
    from wfm_platform.storage.retention import RetentionConfig, apply_retention

    rep = apply_retention(storage.store(), catalog.catalog(), RetentionConfig.load(config.config_path or None),
                          now=datetime.fromisoformat(config.now) if config.now else None, dry_run=config.dry_run)
    for a in rep.deleted:
        context.log.info(f"{'would delete' if rep.dry_run else 'deleted'} {a.asset}/{a.partition} "
                         f"({a.objects} objects, {a.age_days:.0f} days old)")
    context.add_output_metadata({
        "dry_run": rep.dry_run,
        "partitions_deleted": len(rep.deleted),
        "partitions_kept_for_datasets": len(rep.kept_for_datasets),
        "log_files_deleted": len(rep.logs_deleted),
        "objects_deleted": rep.objects_deleted,
        "bytes_deleted": rep.bytes_deleted,
        "catalog_rows_deleted": dg.MetadataValue.json(rep.catalog_rows_deleted),
        "deleted": dg.MetadataValue.md("\n".join(f"- {a.asset}/{a.partition}: {a.objects} objects, "
                                                 f"{a.age_days:.0f} d" for a in rep.deleted) or "nothing"),
        "log": rep.log_uri or "(dry run: not logged)",
    })
    return rep.model_dump(mode="json")


@dg.job(description="Apply configs/retention.yaml: raw 90 d, processed 365 d, logs 30 d, datasets kept.",
        tags={"wfm/kind": "maintenance"})
def retention_job():
    apply_retention_op()

retention_schedule = dg.ScheduleDefinition(
    name="retention_daily",
    job=retention_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Daily retention run (switch on in the UI; set dry_run in the run config to preview).",
)


class ErasureRunConfig(dg.Config):
    video_id: str
    reason: str
    dry_run: bool = False


@dg.op(description="Erase a source video and everything derived from it (GDPR / CCPA).")
def erase_video_op(context: dg.OpExecutionContext, config: ErasureRunConfig, storage: StorageResource,
                   catalog: CatalogResource) -> dict:
    from wfm_platform.storage.erasure import erase_video

    rep = erase_video(config.video_id, storage.store(), catalog.catalog(), reason=config.reason,
                      dry_run=config.dry_run, uploads=storage.uploads())
    context.add_output_metadata({
        "erasure_id": rep.erasure_id,
        "dry_run": rep.dry_run,
        "found": rep.found,
        "clips": len(rep.clip_ids),
        "objects_deleted": len(rep.objects_deleted),
        "objects_rewritten": len(rep.objects_redacted),
        "shards_rewritten": len(rep.shards_rewritten),
        "datasets_created": dg.MetadataValue.json(rep.datasets_created),
        "catalog_rows_deleted": dg.MetadataValue.json(rep.catalog_rows_deleted),
        "kept_outside": dg.MetadataValue.json(rep.kept_outside),
        "log": rep.log_uri or "(dry run: not logged)",
    })
    # the run's record holds the log line (hashes and counts), not the ids
    return rep.log_record()


@dg.job(description="wfm erase from the launchpad: video_id, reason, dry_run.", tags={"wfm/kind": "maintenance"})
def erasure_job():
    erase_video_op()

RETENTION_JOBS = [retention_job, erasure_job]
RETENTION_SCHEDULES = [retention_schedule]
