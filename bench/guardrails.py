"""Benchmark: the whole guardrails measurement in one JSON object, the entry point the issue names.

    python bench/guardrails.py [--quick] [--out FILE]

Runs the two halves, each in its own process (a clean peak and a crash in one does not lose the other):
- `bench/guardrails_prompts.py`: pre-guard TPR/FPR per split and per stage (blind holdouts included, each
  measured once when it was new: see README), beside the plain better-profanity baseline, and prompt latency;
- `bench/guardrails_faces.py`: face-blur recall on real faces (LFW, astronaut, faces composited into real
  footage, real faces in real video) counted by an independent detector, non-face pixels changed, ms per
  frame, and the unsafe-frame classifier's false positives. `--quick` is passed on to it.
Prints {"prompts": {...}, "faces": {...}, "device": ...}; a half that fails is {"error": "..."} with its stderr tail.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import device_name, emit_json


def run_half(script: str, args: list[str]) -> dict:
    p = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                       cwd=ROOT, check=False)
    if p.returncode != 0:
        return {"error": f"{script} exited {p.returncode}", "stderr_tail": p.stderr[-2000:]}
    return json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the faces half's --quick (fewer sizes and frames)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args()
    report = {"device": device_name("cpu"),
              "prompts": run_half("guardrails_prompts.py", []),
              "faces": run_half("guardrails_faces.py", ["--quick"] if a.quick else [])}
    emit_json(report, a.out)


if __name__ == "__main__":
    main()
