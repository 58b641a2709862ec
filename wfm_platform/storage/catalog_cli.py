"""`wfm catalog`: query the clip catalog without the UI (what is in it, where each clip came from).

    wfm catalog clips --partition cam1 --min-width 640 --caption "cyclist" --limit 20 --json
    wfm catalog neighbors CLIP_ID -k 10 --json
    wfm catalog videos --partition cam1
    wfm catalog show CLIP_ID
    wfm catalog stats

The catalog is --catalog, else WFM_CATALOG_URI, else $WFM_DATA_DIR/catalog (default ./data/catalog),
the same one the Dagster assets write. Tables print to stdout; --json prints machine-readable rows.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

catalog_app = typer.Typer(
    help="Query the clip catalog: clips, nearest neighbours, videos, where a clip came from, stats.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

CatalogOpt = Annotated[str, typer.Option("--catalog", help="catalog URI (default: WFM_CATALOG_URI or <data>/catalog)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]


def default_catalog_uri() -> str:
    """WFM_CATALOG_URI, else $WFM_DATA_DIR/catalog, else <repo>/data/catalog (what resources/ use)."""
    if os.environ.get("WFM_CATALOG_URI"):
        return os.environ["WFM_CATALOG_URI"]
    from ..curation.config import data_dir

    return str(data_dir() / "catalog")


def _die(msg: str, code: int = 1):
    err.print(f"[red]error:[/red] {msg}", soft_wrap=True)
    raise typer.Exit(code)


def _open(uri: str):
    from .catalog import Catalog

    uri = uri or default_catalog_uri()
    local = uri.removeprefix("file://")
    if "://" not in local and not Path(local).exists():
        _die(f"no catalog at {uri}: curate a batch first (`wfm curate DIR`), or pass --catalog / set WFM_CATALOG_URI")
    return Catalog(uri)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _clean(row: dict, vectors: bool = False) -> dict:
    """A row for output: no vector unless asked (384 floats per clip drown everything else)."""
    r = {k: v for k, v in row.items() if vectors or k != "vector"}
    if not vectors and "vector" in row:
        r["embedded"] = row["vector"] is not None
    return _jsonable(r)


def _print_json(data: Any) -> None:
    print(json.dumps(_jsonable(data), indent=1, sort_keys=False))


def _table(rows: list[dict], cols: list[str], title: str) -> None:
    t = Table(title=title)
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*["" if r.get(c) is None else f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r[c])
                    for c in cols])
    out.print(t)


def _guard(fn):
    """Catalog errors (bad filter, missing clip) become one clear line and exit code 1, not a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except (KeyError, ValueError) as e:
            _die(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))

    return wrapper


@catalog_app.command()
@_guard
def clips(
    partition: Annotated[str | None, typer.Option(help="upload batch (partition) name")] = None,
    min_width: Annotated[int | None, typer.Option(help="least clip width in pixels")] = None,
    min_height: Annotated[int | None, typer.Option(help="least clip height in pixels")] = None,
    caption: Annotated[str | None, typer.Option(help="words to find in captions (full-text, ranked)")] = None,
    status: Annotated[str | None, typer.Option(help="clip status: clipped, passed, rejected")] = None,
    where: Annotated[str | None, typer.Option(help="extra SQL filter, e.g. \"duration_s > 3\"")] = None,
    limit: Annotated[int, typer.Option(help="at most this many clips")] = 50,
    catalog: CatalogOpt = "",
    as_json: JsonOpt = False,
):
    """Clips by partition, resolution, status and caption text."""
    cat = _open(catalog)
    rows = cat.find_clips(partition=partition, min_width=min_width, min_height=min_height, caption=caption,
                          status=status, where=where, limit=limit)
    if as_json:
        _print_json([_clean(r) for r in rows])
        return
    cols = ["clip_id", "partition", "width", "height", "duration_s", "status"]
    cols += ["score", "caption"] if caption else ["caption"]
    _table(rows, cols, f"{len(rows)} clips")


@catalog_app.command()
@_guard
def neighbors(
    clip_id: Annotated[str, typer.Argument(help="an embedded clip")],
    k: Annotated[int, typer.Option("-k", help="how many neighbours")] = 10,
    partition: Annotated[str | None, typer.Option(help="only neighbours from this partition")] = None,
    catalog: CatalogOpt = "",
    as_json: JsonOpt = False,
):
    """The clips nearest to CLIP_ID by embedding (cosine similarity, 1 = same direction)."""
    from .catalog import sql_str

    cat = _open(catalog)
    rows = cat.neighbors(clip_id, k=k, where=f"partition = {sql_str(partition)}" if partition else None)
    if as_json:
        _print_json([_clean(r) for r in rows])
        return
    _table(rows, ["clip_id", "similarity", "partition", "video_id", "duplicate_of", "caption"],
           f"{len(rows)} nearest clips to {clip_id}")


@catalog_app.command()
@_guard
def videos(
    partition: Annotated[str | None, typer.Option(help="upload batch (partition) name")] = None,
    status: Annotated[str | None, typer.Option(help="ok or rejected")] = None,
    catalog: CatalogOpt = "",
    as_json: JsonOpt = False,
):
    """Source videos: where each came from, its format, and why it was rejected if it was."""
    from .catalog import sql_str

    cat = _open(catalog)
    rows = cat.videos(partition, where=f"status = {sql_str(status)}" if status else None)
    if as_json:
        _print_json([_clean(r) for r in rows])
        return
    _table(rows, ["video_id", "partition", "source_uri", "width", "height", "duration_s", "status", "reason"],
           f"{len(rows)} videos")


@catalog_app.command()
@_guard
def show(
    clip_id: Annotated[str, typer.Argument(help="a clip id")],
    catalog: CatalogOpt = "",
    as_json: JsonOpt = False,
):
    """Where a clip came from: the clip, its source video, frames, metadata and annotations."""
    cat = _open(catalog)
    info = cat.describe_clip(clip_id)
    if info is None:
        _die(f"clip {clip_id} not in the catalog {cat.uri}; list clips with `wfm catalog clips`")
    info["clip"] = _clean(info["clip"])
    if as_json:
        _print_json(info)
        return
    c, v = info["clip"], info["video"] or {}
    out.print(f"[bold]clip[/bold] {c['clip_id']}  {c.get('width')}x{c.get('height')}  "
              f"{c.get('duration_s')} s  status={c.get('status')}  {c.get('uri')}")
    out.print(f"  frames {c.get('start_frame')}..{c.get('end_frame')} of video [bold]{c.get('video_id')}[/bold]"
              f" (partition {c.get('partition')})")
    out.print(f"  source: {v.get('source_uri', '?')}  ingested {v.get('ingested_at', '?')}  "
              f"{v.get('codec', '?')} {v.get('width', '?')}x{v.get('height', '?')}")
    if c.get("caption"):
        out.print(f"  caption ({c.get('captioner')}): {c['caption']}")
    if c.get("reasons"):
        out.print(f"  reasons: {', '.join(c['reasons'])}")
    if c.get("duplicate_of"):
        out.print(f"  duplicate of {c['duplicate_of']}")
    for m in info["metadata"] + info["video_metadata"]:
        out.print(f"  {m['entity_type']}.{m['key']} = {json.dumps(m['value'])}")
    for f in info["frames"]:
        out.print(f"  frame {f['frame_index']} ({f['kind']}, t={f['timestamp_s']} s) {f.get('uri') or ''}")
    for a in info["annotations"]:
        out.print(f"  annotation {a['kind']}: {a['label']} ({a['source']})")


@catalog_app.command()
@_guard
def stats(catalog: CatalogOpt = "", as_json: JsonOpt = False):
    """Row counts per table and the state of the vector and full-text indexes."""
    from .catalog import INDEX_MIN_ROWS

    cat = _open(catalog)
    s = cat.stats()
    if as_json:
        _print_json(s)
        return
    _table([{"table": k, "rows": v} for k, v in s["tables"].items()], ["table", "rows"], f"catalog {s['uri']}")
    out.print(f"clips embedded: {s['clips_embedded']} (dim {s['vector_dim']}), captioned: {s['clips_captioned']}")
    if s["indexes"]:
        rows = [{"index": f"{i['table_name']}.{i['column']}", "type": i["index_type"],
                 "indexed": i["num_indexed_rows"], "pending": i["num_unindexed_rows"],
                 "built at rows": i.get("rows_at_build"), "builds": i.get("builds"),
                 "optimized": i.get("optimizations")} for i in s["indexes"]]
        _table(rows, ["index", "type", "indexed", "pending", "built at rows", "builds", "optimized"],
               "indexes (pending rows are searched by brute force until folded in)")
    else:
        out.print(f"no indexes yet (vector index from {INDEX_MIN_ROWS} embedded clips, full-text from the first caption)")
