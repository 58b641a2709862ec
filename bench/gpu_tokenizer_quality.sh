#!/usr/bin/env bash
# One device session: tokenizer quality after a fixed training budget on a GPU box without the curation
# stack. Prepare here first:  .venv/bin/python bench/tokenizer_quality.py --prepare .cache/tokq
# and carry .cache/tokq plus .whl (cp312 wheels) to the GPU box (Python 3.12 + torch there, no PyAV,
# webdataset, pydantic or cryptography). The wheels, here:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     av==18.1.0 webdataset braceexpand pydantic==2.14.4 pydantic_core==2.50.5 annotated_types \
#     typing_inspection typing_extensions cryptography==50.0.2 cffi pycparser
# (av 19 dropped the metadata_errors argument we pass). Run:  STEPS=400 PER_RUN_S=200 bash bench/gpu_tokenizer_quality.sh
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
STEPS=${STEPS:-1500}
for name in ${NAMES:-cv4x8x8 dv4x8x8}; do
  timeout "${PER_RUN_S:-200}" python3 bench/tokenizer_quality.py --data .cache/tokq --names "$name" --preset default \
    --crop 128 --resize-short 144 --num-frames 17 --batch-size 8 --steps "$STEPS" --lr 5e-4 --num-workers 12 \
    --out "$OUT/runs_$name" \
    > "$OUT/tokq_$name.json" 2> "$OUT/tokq_$name.log"
  echo "$name rc=$?"; grep '^{"tokenizer"' "$OUT/tokq_$name.json"; tail -3 "$OUT/tokq_$name.log"
done
