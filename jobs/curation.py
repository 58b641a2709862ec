"""The curation job: the whole curation graph for one upload batch (partition)."""

import dagster as dg

from assets.curation import upload_batches

curation_job = dg.define_asset_job(
    "curation_job",
    selection=dg.AssetSelection.groups("curation"),
    partitions_def=upload_batches,
    description="raw video -> clips -> scores -> filtered -> captions, embeddings -> dedup -> shards",
)
