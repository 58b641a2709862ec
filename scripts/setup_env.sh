#!/usr/bin/env bash
# Create .venv (if missing) and install wfm-platform with the given extras. Idempotent.
#   scripts/setup_env.sh            -> runtime
#   scripts/setup_env.sh dev        -> runtime + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
LOG=.venv-install.log
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
pipi() {  # pip install, quiet; the full log is kept and shown on failure
  if ! .venv/bin/python -m pip install --disable-pip-version-check "$@" >>"$LOG" 2>&1; then
    tail -40 "$LOG"; echo "pip install $* failed (full log: $LOG)"; exit 1
  fi
}
: >"$LOG"
pipi --upgrade pip
if [ -n "$EXTRAS" ]; then SPEC=".[$EXTRAS]"; else SPEC="."; fi
echo "installing wfm-platform $SPEC into .venv (log: $LOG)"
pipi -e "$SPEC"
# rapidocr-onnxruntime and nudenet pull other OpenCV wheels whose cv2 shadows the contrib build we
# need (CascadeClassifier, optflow, quality). Keep exactly one cv2: the 4.x contrib headless wheel.
OTHERS=""
for d in opencv-python opencv-python-headless opencv-contrib-python; do
  if .venv/bin/python -m pip show "$d" >/dev/null 2>&1; then OTHERS="$OTHERS $d"; fi
done
if [ -n "$OTHERS" ]; then
  CONTRIB=$(.venv/bin/python -m pip show opencv-contrib-python-headless | awk '/^Version/{print $2}')
  .venv/bin/python -m pip uninstall --quiet -y $OTHERS >>"$LOG" 2>&1
  pipi --force-reinstall --no-deps "opencv-contrib-python-headless==$CONTRIB"
fi
.venv/bin/python -c "import cv2, av, dagster; assert cv2.__version__.startswith('4'), cv2.__version__; assert hasattr(cv2, 'optflow')"
