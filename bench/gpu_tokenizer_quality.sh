#!/usr/bin/env bash
# One device session: tokenizer quality after a fixed training budget on a GPU box without the curation
# stack. Prepare here first:  .venv/bin/python bench/tokenizer_quality.py --prepare .cache/tokq
# and carry .cache/tokq plus .whl (cp312 wheels of av, webdataset, braceexpand, pydantic) to the GPU box.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
STEPS=${STEPS:-1500}
for name in ${NAMES:-cv4x8x8 dv4x8x8}; do
  timeout "${PER_RUN_S:-200}" python3 bench/tokenizer_quality.py --data .cache/tokq --names "$name" --preset default \
    --crop 128 --num-frames 17 --batch-size 8 --steps "$STEPS" --lr 5e-4 --num-workers 12 --out "$OUT/runs_$name" \
    > "$OUT/tokq_$name.json" 2> "$OUT/tokq_$name.log"
  echo "$name rc=$?"; grep '^{"tokenizer"' "$OUT/tokq_$name.json"; tail -3 "$OUT/tokq_$name.log"
done
