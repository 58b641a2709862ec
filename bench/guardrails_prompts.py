"""Prompt pre-guard benchmark: TPR / FPR per stage and for the chain, beside better-profanity.

    python bench/guardrails_prompts.py [--data bench/data/prompts_labelled.jsonl] [--config configs/guardrails.yaml]
                                       [--show-errors dev]   # never tune on the test split

Prints one JSON object. The labelled set has a `test` split written first and never tuned on, and
a `dev` split the thresholds and word lists were tuned on; both are reported. Latency is the whole
chain per prompt on this machine's CPU (p50 / p95, warm).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wfm_platform.guardrails.preguard import (
    BlocklistStage,
    ClassifierStage,
    PreGuard,
    PreGuardConfig,
    SemanticStage,
)


def rates(pred: list[bool], rows: list[dict]) -> dict:
    harm = [p for p, r in zip(pred, rows) if r["label"] == "harmful"]
    ben = [p for p, r in zip(pred, rows) if r["label"] == "benign"]
    return {"tpr": round(float(np.mean(harm)), 4) if harm else None,
            "fpr": round(float(np.mean(ben)), 4) if ben else None,
            "harmful": len(harm), "benign": len(ben)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", default=None,
                    help="labelled jsonl (repeatable); default: prompts_labelled.jsonl + prompts_holdout2.jsonl + "
                    "prompts_holdout3.jsonl")
    ap.add_argument("--config", default=str(ROOT / "configs/guardrails.yaml"))
    ap.add_argument("--show-errors", choices=["dev", "test", "holdout2", "holdout3", "none"], default="none")
    a = ap.parse_args()
    a.data = a.data or [str(ROOT / f"bench/data/{n}.jsonl")
                        for n in ("prompts_labelled", "prompts_holdout2", "prompts_holdout3")]

    rows = [json.loads(ln) for d in a.data for ln in Path(d).read_text().splitlines() if ln.strip()]
    test_digest = hashlib.sha256("\n".join(json.dumps(r, sort_keys=True) for r in rows
                                           if r["split"] == "test").encode()).hexdigest()
    cfg = PreGuardConfig.from_yaml(a.config)
    t0 = time.perf_counter()
    stages = {"blocklist": BlocklistStage(cfg.blocklist), "classifier": ClassifierStage(cfg.classifier),
              "semantic": SemanticStage(cfg.semantic)}
    load_s = time.perf_counter() - t0
    prompts = [r["prompt"] for r in rows]
    blocked = {n: [not st.check(p).allowed for p in prompts] for n, st in stages.items()}
    # the classifier is advisory in the default config (block: false): measure it as if it blocked
    blocked["classifier"] = [stages["classifier"].score(p) >= cfg.classifier.threshold for p in prompts]

    from better_profanity import profanity

    profanity.load_censor_words()
    blocked["baseline_better_profanity"] = [profanity.contains_profanity(p) for p in prompts]
    chains = {
        # "chain" is the default config: blocklist + semantic (classifier advisory)
        "chain": ["blocklist", "semantic"] if not cfg.classifier.block else ["blocklist", "classifier", "semantic"],
        "chain_without_semantic": ["blocklist"],
        "chain_with_classifier_blocking": ["blocklist", "classifier", "semantic"],
    }
    for name, parts in chains.items():
        blocked[name] = [any(blocked[s][i] for s in parts) for i in range(len(rows))]

    out: dict = {"data": a.data, "n": len(rows), "test_split_sha256": test_digest,
                 "thresholds": {"classifier": cfg.classifier.threshold, "semantic": cfg.semantic.threshold,
                                "semantic_margin": cfg.semantic.margin,
                                "semantic_hard": cfg.semantic.hard_threshold},
                 "load_s": round(load_s, 2), "splits": {}}
    for split in [s for s in ("dev", "test", "holdout2", "holdout3") if any(r["split"] == s for r in rows)]:
        idx = [i for i, r in enumerate(rows) if r["split"] == split]
        sub = [rows[i] for i in idx]
        out["splits"][split] = {n: rates([b[i] for i in idx], sub) for n, b in blocked.items()}
        cats: dict = {}
        for i in idx:
            r = rows[i]
            if r["label"] == "harmful":
                c = cats.setdefault(r["category"], [0, 0])
                c[0] += blocked["chain"][i]
                c[1] += 1
        out["splits"][split]["chain_tpr_by_category"] = {k: f"{v[0]}/{v[1]}" for k, v in sorted(cats.items())}
        if a.show_errors == split:
            out["splits"][split]["errors"] = [
                {"label": rows[i]["label"], "prompt": rows[i]["prompt"],
                 "by": [n for n in ("blocklist", "classifier", "semantic") if blocked[n][i]]}
                for i in idx if blocked["chain"][i] != (rows[i]["label"] == "harmful")]

    # latency of the whole PreGuard (fresh prompts, warm models); no violation log
    guard = PreGuard(cfg, stages=list(stages.values()))
    ms = []
    for p in prompts:
        t = time.perf_counter()
        guard.check(p + " ")  # bypass the normalization cache
        ms.append((time.perf_counter() - t) * 1000)
    out["latency_ms"] = {"p50": round(float(np.percentile(ms, 50)), 2),
                         "p95": round(float(np.percentile(ms, 95)), 2), "n": len(ms)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
