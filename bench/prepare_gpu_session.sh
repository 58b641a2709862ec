#!/usr/bin/env bash
# Prepare, on this (CPU) machine, what bench/gpu_session.sh needs on the device machine, which reaches no
# package index: the cp312 wheels its image (Python 3.12, torch 2.11) lacks, into .whl/, and the curated
# training shards + held-out clips for the tokenizer-quality stage, into .cache/tokq/. Both are git-ignored,
# so every fresh VM must run this once before:
#   run(command="bash bench/gpu_session.sh", carry=[".whl", ".cache/tokq"], timeout_s=590)
# Idempotent: a part that is already there is kept (delete it to rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup_env.sh dev
if ! ls .whl/av-*.whl >/dev/null 2>&1; then
  # av 19 dropped the metadata_errors argument we pass; the whole set is ~42 MB of the 64 MiB a run may carry
  rm -rf .whl.tmp
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl.tmp \
    av==18.1.0 webdataset braceexpand pydantic==2.14.4 pydantic_core==2.50.5 annotated_types \
    typing_inspection typing_extensions cryptography==50.0.2 cffi pycparser
  mv .whl.tmp .whl
fi
if [ ! -f .cache/tokq/heldout_vtest.mp4 ]; then
  .venv/bin/wfm samples >/dev/null   # the real footage the shards are curated from
  rm -rf .cache/tokq.tmp
  .venv/bin/python bench/tokenizer_quality.py --prepare .cache/tokq.tmp 2>/dev/null
  mv .cache/tokq.tmp .cache/tokq
fi
echo "ready: .whl ($(du -sh .whl | cut -f1)), .cache/tokq ($(du -sh .cache/tokq | cut -f1)); carry both"
