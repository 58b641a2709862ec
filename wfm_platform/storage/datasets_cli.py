"""`wfm dataset ...`, `wfm erase` and `wfm retention ...`.

The lead mounts these in wfm_platform/cli.py:
    app.add_typer(dataset_app, name="dataset")
    app.command("erase")(erase_command)
    app.add_typer(retention_app, name="retention")

Every command takes --store (object-store root; default $WFM_STORAGE_ROOT or ./data/store) and
--catalog (default $WFM_CATALOG_URI, else <store>/catalog when --store is given, else ./data/catalog),
the same defaults `wfm curate` uses. Exit codes: 0 fine, 1 a check failed (verify), 2 bad request.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:  # the registry (lancedb, fsspec) is imported inside the commands: `wfm --help` stays fast
    from .datasets import DatasetRegistry

log = logging.getLogger(__name__)
T = TypeVar("T")

StoreOpt = Annotated[str, typer.Option("--store", help="object-store root (path or file/s3/gs/az URI); "
                                       "default $WFM_STORAGE_ROOT or data/store")]
CatalogOpt = Annotated[str, typer.Option("--catalog", help="LanceDB catalog URI; default $WFM_CATALOG_URI, "
                                         "<store>/catalog with --store, else data/catalog")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]


def _data_dir() -> Path:  # imported here: `wfm --help` does not load pydantic
    from ..curation.config import data_dir

    return data_dir()


def _open(store: str, catalog: str, *, need_catalog: bool = True):
    from .objectstore import ObjectStore, default_store_uri

    root = store or default_store_uri()
    cat_uri = catalog or os.environ.get("WFM_CATALOG_URI") or (
        f"{store.rstrip('/')}/catalog" if store else str(_data_dir() / "catalog"))
    st = ObjectStore(root)
    cat = None
    if need_catalog:
        from .catalog import Catalog

        cat = Catalog(cat_uri)
    return st, cat


def _fail(msg: str, code: int = 2):
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _read_registry(store: str, op: Callable[[DatasetRegistry], T]) -> T:
    """op(the store's DatasetRegistry) for the read-only commands; a DatasetError exits 2 with its message."""
    from .datasets import DatasetError, DatasetRegistry

    st, _ = _open(store, "", need_catalog=False)
    try:
        return op(DatasetRegistry(st))
    except DatasetError as e:
        _fail(str(e))


# ---------------------------------------------------------------------------------------------------
dataset_app = typer.Typer(help="Versioned datasets: immutable manifests of curated shards.", no_args_is_help=True)


@dataset_app.callback()
def _dataset_group() -> None:
    """Versioned datasets: immutable manifests of curated shards."""


@dataset_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="dataset name (letters, digits, . _ -)")],
    batch: Annotated[list[str], typer.Option("--batch", "-b", help="upload batch whose shards to include "
                                             "(repeat for several)")],
    bump: Annotated[str, typer.Option(help="major | minor | patch, from the latest version")] = "minor",
    version: Annotated[str, typer.Option(help="exact version instead of --bump (must be new and newer)")] = "",
    note: Annotated[str, typer.Option(help="free text kept in the manifest")] = "",
    config: Annotated[Path | None, typer.Option(help="pipeline YAML whose digest to record; "
                                                "default configs/pipeline.yaml")] = None,
    verify: Annotated[bool, typer.Option(help="check every shard's size and sha256 first")] = True,
    store: StoreOpt = "",
    catalog: CatalogOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a new version of NAME from the webdataset_shards of the given batches.

    If the content (shards, clips, config) equals the latest version, nothing is written and the
    latest version is printed ("unchanged")."""
    from ..curation.config import PipelineConfig
    from .datasets import DatasetError, DatasetRegistry

    if bump not in ("major", "minor", "patch"):
        _fail(f"--bump must be major, minor or patch, not {bump!r}")
    st, cat = _open(store, catalog)
    reg = DatasetRegistry(st, cat)
    try:
        before = reg.latest(name)
        v = reg.create(name, partitions=batch, bump=bump, note=note, version=version or None,
                       config=PipelineConfig.load(config), verify=verify)
    except (DatasetError, FileNotFoundError) as e:
        _fail(str(e))
    unchanged = before is not None and before.version == v.version
    if as_json:
        _print_json({"dataset": v.ref, "unchanged": unchanged, "num_clips": len(v.clip_ids),
                     "num_shards": len(v.shards), "bytes": v.num_bytes, "digest": v.digest,
                     "manifest": st.uri(reg.rel(v.name, v.version))})
        return
    if unchanged:
        typer.echo(f"unchanged: {v.ref} already holds exactly these shards and clips")
    else:
        typer.echo(f"created {v.ref}: {len(v.clip_ids)} clips in {len(v.shards)} shards "
                   f"({v.num_bytes / 1e6:.1f} MB), parent {v.parent or '-'}")


@dataset_app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="only this dataset")] = None,
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Every dataset version (or those of NAME), oldest first."""
    versions = _read_registry(store, lambda reg: reg.list(name))
    rows = [{"dataset": v.ref, "created_at": v.created_at, "parent": v.parent, "clips": len(v.clip_ids),
             "shards": len(v.shards), "bytes": v.num_bytes, "note": v.note, "redacted": bool(v.redactions)}
            for v in versions]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        typer.echo("no datasets yet: `wfm dataset create NAME --batch BATCH`")
    for r in rows:
        flag = "  [redacted]" if r["redacted"] else ""
        typer.echo(f"{r['dataset']:<32} {r['created_at']}  {r['clips']:>6} clips {r['shards']:>4} shards  "
                   f"{r['note']}{flag}")


@dataset_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME (latest) or NAME@VERSION")],
    clips: Annotated[bool, typer.Option(help="also print every clip id")] = False,
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """The manifest of one version: shards, clips, digests, parent, lineage batches."""
    v = _read_registry(store, lambda reg: reg.get(ref))
    if as_json:
        _print_json(v.model_dump(mode="json"))
        return
    typer.echo(f"{v.ref}  created {v.created_at}  parent {v.parent or '-'}")
    typer.echo(f"  batches: {', '.join(v.batches) or '-'}")
    typer.echo(f"  clips: {len(v.clip_ids)}  shards: {len(v.shards)}  bytes: {v.num_bytes}")
    typer.echo(f"  digest: {v.digest}\n  config: {v.config_digest}\n  code:   {v.code_digest}")
    if v.note:
        typer.echo(f"  note: {v.note}")
    for r in v.redactions:
        typer.echo(f"  redacted by erasure {r.erasure_id} at {r.time}: -{r.clips_removed} clips, "
                   f"-{r.shards_removed} shards")
    for s in v.shards:
        typer.echo(f"  {s.uri}  {len(s.clips)} clips  {s.bytes} B  sha256 {s.sha256[:12]}")
    if clips:
        for c in v.clip_ids:
            typer.echo(f"  clip {c}")


@dataset_app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME = latest)")],
    b: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME = latest)")],
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Clips and shards added and removed from A to B."""
    d = _read_registry(store, lambda reg: reg.diff(a, b))
    if as_json:
        _print_json(d.model_dump())
        return
    typer.echo(f"{d.a} -> {d.b}: +{len(d.added_clips)} / -{len(d.removed_clips)} clips "
               f"({d.unchanged_clips} unchanged), +{len(d.added_shards)} / -{len(d.removed_shards)} shards"
               + ("; pipeline config changed" if d.config_changed else ""))
    for c in d.added_clips:
        typer.echo(f"  + clip {c}")
    for c in d.removed_clips:
        typer.echo(f"  - clip {c}")


@dataset_app.command("verify")
def verify(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")],
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Check the manifest digest and every shard (exists, size, sha256, members). Exit 1 on a problem."""
    def get_and_verify(reg: DatasetRegistry) -> tuple:
        v = reg.get(ref)
        return v, reg.verify(v)

    v, problems = _read_registry(store, get_and_verify)
    if as_json:
        _print_json({"dataset": v.ref, "ok": not problems, "problems": problems})
    else:
        typer.echo(f"{v.ref}: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
        for p in problems:
            typer.echo(f"  {p}")
    if problems:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------------
def erase_command(
    video: Annotated[str, typer.Option("--video", help="the video id to erase (16 hex digits)")],
    reason: Annotated[str, typer.Option(help="why (request ticket); recorded in the erasure log")] =
        "erasure request",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would go; change nothing")] = False,
    uploads: Annotated[str, typer.Option(help="uploads prefix, to delete the original upload too; "
                                         "default $WFM_UPLOADS_URI or data/uploads")] = "",
    store: StoreOpt = "",
    catalog: CatalogOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Erase a source video and everything derived from it (GDPR / CCPA): clips, scores, captions,
    embeddings, tokens, shard members, catalog rows; affected shards and datasets get new versions."""
    from .erasure import ErasureError, erase_video
    from .objectstore import ObjectStore

    st, cat = _open(store, catalog)
    up_root = uploads or os.environ.get("WFM_UPLOADS_URI") or str(_data_dir() / "uploads")
    try:
        rep = erase_video(video, st, cat, reason=reason, dry_run=dry_run, uploads=ObjectStore(up_root))
    except ErasureError as e:
        _fail(str(e))
    if as_json:
        _print_json(rep.model_dump(mode="json"))
        return
    what = "would erase" if dry_run else "erased"
    if not rep.found:
        typer.echo(f"nothing found for video {video} (already erased, or never ingested here)"
                   + ("" if dry_run else f"; logged as {rep.erasure_id}"))
        return
    typer.echo(f"{what} video {video}: {len(rep.clip_ids)} clips in {', '.join(rep.partitions) or '-'}")
    typer.echo(f"  objects deleted {len(rep.objects_deleted)} ({rep.bytes_deleted / 1e6:.1f} MB), "
               f"rewritten {len(rep.objects_redacted)}, shards rewritten {len(rep.shards_rewritten)}")
    typer.echo(f"  datasets: new {', '.join(rep.datasets_created) or '-'}; redacted "
               f"{', '.join(rep.datasets_redacted) or '-'}")
    typer.echo(f"  catalog rows deleted: {rep.catalog_rows_deleted or '-'}")
    for src in rep.kept_outside:
        typer.echo(f"  NOT deleted (outside this platform's stores; delete it there): {src}")
    if rep.log_uri:
        typer.echo(f"  logged: {rep.log_uri}")


# ---------------------------------------------------------------------------------------------------
retention_app = typer.Typer(help="Retention policies: delete what expired, keep what datasets use.",
                            no_args_is_help=True)


@retention_app.callback()
def _retention_group() -> None:
    """Retention policies: delete what expired, keep what datasets use."""


@retention_app.command("apply")
def retention_apply(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would go; change nothing")] = False,
    config: Annotated[Path | None, typer.Option(help="retention YAML; default configs/retention.yaml")] = None,
    now: Annotated[str, typer.Option(help="ISO time to evaluate ages at (default: now)")] = "",
    store: StoreOpt = "",
    catalog: CatalogOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Delete every partition and log file older than its policy (configs/retention.yaml)."""
    from .retention import RetentionConfig, apply_retention

    try:
        policies = RetentionConfig.load(config)
        when = datetime.fromisoformat(now) if now else None
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    st, cat = _open(store, catalog)
    rep = apply_retention(st, cat, policies, now=when, dry_run=dry_run)
    if as_json:
        _print_json(rep.model_dump(mode="json"))
        return
    verb = "would delete" if dry_run else "deleted"
    for a in rep.deleted:
        typer.echo(f"{verb} {a.asset}/{a.partition}: {a.objects} objects, {a.bytes / 1e6:.1f} MB, "
                   f"{a.age_days:.0f} days old")
    for a in rep.kept_for_datasets:
        typer.echo(f"kept {a.asset}/{a.partition} ({a.age_days:.0f} days old): {a.note}")
    for lg in rep.logs_deleted:
        typer.echo(f"{verb} log {lg.key} ({lg.age_days:.0f} days old)")
    typer.echo(f"{verb} {rep.objects_deleted} objects ({rep.bytes_deleted / 1e6:.1f} MB); catalog rows "
               f"{rep.catalog_rows_deleted or '-'}" + (f"; logged {rep.log_uri}" if rep.log_uri else ""))


@retention_app.command("show")
def retention_show(
    config: Annotated[Path | None, typer.Option(help="retention YAML; default configs/retention.yaml")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The policies in effect (days; null = kept forever)."""
    from .retention import RetentionConfig

    try:
        policies = RetentionConfig.load(config)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    if as_json:
        _print_json(policies.model_dump())
        return
    for section, items in policies.model_dump().items():
        typer.echo(f"{section}:")
        for k, d in items.items():
            typer.echo(f"  {k:<24} {'kept' if d is None else f'{d} days'}")
    typer.echo("datasets/ and shards referenced by any dataset version: kept")


__all__ = ["dataset_app", "erase_command", "retention_app"]
