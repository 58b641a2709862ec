#!/usr/bin/env bash
# Create .venv (if missing) and install wfm-platform with the given extras. Idempotent.
#   scripts/setup_env.sh            -> runtime
#   scripts/setup_env.sh dev        -> runtime + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null || true
if [ -n "$EXTRAS" ]; then SPEC=".[$EXTRAS]"; else SPEC="."; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$SPEC" 2>&1 | grep -v "^WARNING: Location" || true
# rapidocr-onnxruntime pulls opencv-python, whose cv2 can shadow the contrib build we need
# (CascadeClassifier, optflow, quality). Keep exactly one cv2: the 4.x contrib headless wheel.
if .venv/bin/python -m pip show opencv-python >/dev/null 2>&1; then
  CONTRIB=$(.venv/bin/python -m pip show opencv-contrib-python-headless | awk '/^Version/{print $2}')
  .venv/bin/python -m pip uninstall --quiet -y opencv-python
  .venv/bin/python -m pip install --quiet --force-reinstall --no-deps "opencv-contrib-python-headless==$CONTRIB" 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -c "import cv2, av, dagster; assert cv2.__version__.startswith('4'), cv2.__version__" 
