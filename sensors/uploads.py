"""Upload sensor: each new complete batch (a folder with a _READY marker) under the uploads prefix
becomes a dynamic partition and a curation run. Works for file://, s3://, gs://, az:// prefixes."""


import json

import dagster as dg

from assets.curation import upload_batches
from jobs.curation import curation_job
from resources import StorageResource
from wfm_platform.curation.uploads import ready_batches


@dg.sensor(
    job=curation_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Watches the uploads prefix; a batch is picked up only once its _READY marker exists.",
)
def upload_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    uploads = storage.uploads()
    new = [b for b in ready_batches(uploads) if b not in seen]
    if not new:
        return dg.SensorResult(skip_reason=f"no new complete batch under {uploads.root}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"batch:{b}",
                partition_key=b,
                run_config={"ops": {"raw_videos": {"config": {"source_uri": uploads.uri(b)}}}},
                tags={"wfm/batch": b},
            )
            for b in new
        ],
        dynamic_partitions_requests=[upload_batches.build_add_request(new)],
        cursor=json.dumps(sorted(seen | set(new))),
    )
