"""Dataset versions: a named, immutable, semantically versioned manifest of curated shards.

dataset_versions    reads the webdataset_shards manifests of the chosen upload batches (default: every
                    batch that has shards) and writes the next version of a dataset through
                    wfm_platform.storage.datasets.DatasetRegistry; nothing new is written when the content
                    equals the latest version. Training reads a version by name: `wfm tokenizer train
                    --dataset NAME@VERSION`, tokenizer_checkpoint's `dataset` config, `wfm train ...`.
"""

from typing import Literal

import dagster as dg

from assets.curation import webdataset_shards
from resources import CatalogResource, PipelineConfigResource, StorageResource
from wfm_platform import report

GROUP = "datasets"
SHARDS_PREFIX = "webdataset_shards"


def batches_with_shards(store) -> list[str]:
    """Every upload batch (partition) whose webdataset_shards manifest is in the store."""
    return sorted({k.split("/")[1] for k in store.list(SHARDS_PREFIX)
                   if k.count("/") == 2 and k.endswith("/manifest.json")})


class DatasetVersionConfig(dg.Config):
    name: str = "curated"  # dataset name: letters, digits, '.', '_' or '-'
    batches: list[str] = []  # upload batches whose shards to include; empty: every batch with shards
    bump: Literal["major", "minor", "patch"] = "minor"  # from the latest version (the first is 1.0.0)
    note: str = ""  # free text kept in the manifest
    deep_verify: bool = True  # the check also opens every tar (members per clip), not only sha256


@dg.asset(
    group_name=GROUP,
    deps=[dg.AssetDep(webdataset_shards, partition_mapping=dg.AllPartitionMapping())],
    kinds={"webdataset", "json"},
    code_version="1",
    description="A new immutable version (NAME@MAJOR.MINOR.PATCH) of a dataset from the curated shards "
    "of the chosen upload batches: shard URIs + sha256, clip ids, pipeline-config and code digests, "
    "parent version. Unchanged content writes no new version.",
    check_specs=[dg.AssetCheckSpec("dataset_verifies", asset="dataset_versions", blocking=True,
                                   description="manifest digest intact; every shard present with the "
                                   "recorded size and sha256 (and complete tar members)")],
)
def dataset_versions(
    context: dg.AssetExecutionContext,
    config: DatasetVersionConfig,
    storage: StorageResource,
    catalog: CatalogResource,
    pipeline_config: PipelineConfigResource,
) -> dg.MaterializeResult:
    from wfm_platform.storage.datasets import DatasetError, DatasetRegistry

    store = storage.store()
    reg = DatasetRegistry(store, catalog.catalog())
    batches = sorted(config.batches) or batches_with_shards(store)
    if not batches:
        raise dg.Failure("no curated shards yet: materialize webdataset_shards for at least one upload batch "
                         "first (or `wfm backfill BATCH`)")
    try:
        before = reg.latest(config.name)
        # verify=True: sizes and sha256 are checked before a version is sealed (fail closed)
        v = reg.create(config.name, partitions=batches, bump=config.bump, note=config.note,
                       config=pipeline_config.load(), verify=True)
    except (DatasetError, FileNotFoundError) as e:
        raise dg.Failure(f"dataset {config.name}: {e}") from e
    unchanged = before is not None and before.version == v.version
    context.log.info(f"{v.ref}: {'unchanged' if unchanged else 'written'}, {len(v.clip_ids)} clips "
                     f"in {len(v.shards)} shards from {', '.join(batches)}")
    # unchanged content re-checks the existing version: its shards may have been damaged since
    problems = reg.verify(v, deep=config.deep_verify)

    added = removed = added_shards = removed_shards = None
    if v.parent and not unchanged:
        d = reg.diff(f"{v.name}@{v.parent}", v)
        added, removed = len(d.added_clips), len(d.removed_clips)
        added_shards, removed_shards = len(d.added_shards), len(d.removed_shards)
    elif v.parent is None and not unchanged:  # the first version: everything is new
        added, removed, added_shards, removed_shards = len(v.clip_ids), 0, len(v.shards), 0
    buckets = [{"bucket": k or "-", "clips": b["num_samples"], "shards": len(b["shards"])}
               for k, b in sorted(v.as_shard_manifest()["buckets"].items())]
    diff_md = ("_unchanged: the latest version already holds exactly these shards and clips_" if unchanged
               else f"vs parent {v.parent or '- (first version)'}: +{added} / -{removed} clips, "
                    f"+{added_shards} / -{removed_shards} shards")
    return dg.MaterializeResult(
        metadata={
            "dataset": v.ref,
            "unchanged": unchanged,
            "manifest": dg.MetadataValue.path(store.uri(reg.rel(v.name, v.version))),
            "parent": f"{v.name}@{v.parent}" if v.parent else "",
            "batches": ", ".join(v.batches),
            "num_clips": len(v.clip_ids),
            "num_shards": len(v.shards),
            "bytes": v.num_bytes,
            "clips_added": -1 if added is None else added,  # -1: no new version, nothing to compare
            "clips_removed": -1 if removed is None else removed,
            "diff": dg.MetadataValue.md(diff_md),
            "buckets": dg.MetadataValue.md(report.table_md(buckets, ["bucket", "clips", "shards"])),
            "digest": v.digest,
            "config_digest": v.config_digest,
            "code_digest": v.code_digest,
        },
        data_version=dg.DataVersion(v.digest),  # the same content -> the same data version downstream
        check_results=[dg.AssetCheckResult(
            check_name="dataset_verifies", passed=not problems,
            metadata={"dataset": v.ref, "problems": "; ".join(problems[:20]) or "none",
                      "num_problems": len(problems), "deep": config.deep_verify})],
    )


dataset_version_job = dg.define_asset_job(
    "dataset_version_job", selection=[dataset_versions],
    description="Write the next version of a dataset from the curated shards (config: name, batches, bump).")

DATASET_ASSETS = [dataset_versions]
DATASET_JOBS = [dataset_version_job]
