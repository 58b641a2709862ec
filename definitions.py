"""The Dagster code location: assets, checks, jobs, sensors and resources of wfm-platform."""

import sys
from pathlib import Path

# The Dagster folders (assets/, resources/, jobs/, sensors/) are not installed packages: make them
# importable from wherever `dagster dev -w workspace.yaml` or `wfm curate` loads this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dagster as dg  # noqa: E402

from assets.curation import CURATION_ASSETS  # noqa: E402
from assets.datasets import DATASET_ASSETS, DATASET_JOBS  # noqa: E402
from assets.generation import GENERATION_ASSETS  # noqa: E402
from assets.models import MODEL_ASSETS  # noqa: E402
from assets.tokenizer import TOKENIZER_ASSETS  # noqa: E402
from jobs.curation import curation_job  # noqa: E402
from jobs.retention import RETENTION_JOBS, RETENTION_SCHEDULES  # noqa: E402
from resources import default_resources  # noqa: E402
from sensors.uploads import upload_sensor  # noqa: E402

defs = dg.Definitions(
    assets=CURATION_ASSETS + DATASET_ASSETS + TOKENIZER_ASSETS + MODEL_ASSETS + GENERATION_ASSETS,
    jobs=[curation_job, *DATASET_JOBS, *RETENTION_JOBS],
    schedules=RETENTION_SCHEDULES,
    sensors=[upload_sensor],
    resources=default_resources(),
)
