"""Prompt pre-guard benchmark: TPR / FPR per stage and for the chain, beside better-profanity.

    python bench/guardrails_prompts.py [--data bench/data/prompts_labelled.jsonl] [--config configs/guardrails.yaml]
                                       [--show-errors dev]   # never tune on the test split

Prints one JSON object. The labelled set has a `test` split written first and never tuned on, and
a `dev` split the thresholds and word lists were tuned on; bench/data/prompts_holdout*.jsonl were written
by people who had not seen the guard's data (holdout4 blind, by someone who had not seen the guard at all)
and are never trained or tuned on; every split is reported. Latency is the configured chain per prompt on
this machine's CPU (p50 / p95, warm).
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
    LanguageStage,
    PreGuard,
    PreGuardConfig,
    SafetyClassifierStage,
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
                    help="labelled jsonl (repeatable); default: prompts_labelled.jsonl + every "
                    "bench/data/prompts_holdout*.jsonl")
    ap.add_argument("--config", default=str(ROOT / "configs/guardrails.yaml"))
    ap.add_argument("--show-errors", default="none", metavar="SPLIT",
                    help="list the chain's errors on this split (dev, test, holdout2, ...); never tune on test/holdout*")
    a = ap.parse_args()
    a.data = a.data or [str(ROOT / "bench/data/prompts_labelled.jsonl"),
                        *map(str, sorted((ROOT / "bench/data").glob("prompts_holdout*.jsonl")))]

    rows = [json.loads(ln) for d in a.data for ln in Path(d).read_text().splitlines() if ln.strip()]
    test_digest = hashlib.sha256("\n".join(json.dumps(r, sort_keys=True) for r in rows
                                           if r["split"] == "test").encode()).hexdigest()
    cfg = PreGuardConfig.from_yaml(a.config)
    t0 = time.perf_counter()
    stages = {"language": LanguageStage(cfg.language), "blocklist": BlocklistStage(cfg.blocklist),
              "classifier": ClassifierStage(cfg.classifier), "semantic": SemanticStage(cfg.semantic)}
    if cfg.safety_classifier.enabled:
        stages["safety_classifier"] = SafetyClassifierStage(cfg.safety_classifier)
    load_s = time.perf_counter() - t0
    prompts = [r["prompt"] for r in rows]
    results = {n: [st.check(p) for p in prompts] for n, st in stages.items()}
    blocked = {n: [not r.allowed for r in rs] for n, rs in results.items()}
    if "safety_classifier" in stages:  # the same verdicts without its multilingual head (non-English prompts)
        t = stages["safety_classifier"].threshold
        blocked["safety_classifier_minilm_only"] = [r.scores["safety_classifier"] >= t
                                                    for r in results["safety_classifier"]]
    # stages off or advisory in the config are still measured alone (semantic, the profanity classifier)
    # the classifier is advisory in the default config (block: false): measure it as if it blocked
    blocked["classifier"] = [stages["classifier"].score(p) >= cfg.classifier.threshold for p in prompts]

    from better_profanity import profanity

    profanity.load_censor_words()
    blocked["baseline_better_profanity"] = [profanity.contains_profanity(p) for p in prompts]
    # "chain" is the configured one: blocklist + safety classifier (profanity classifier advisory, semantic off)
    chain = [n for n in ("language", "blocklist", "classifier", "safety_classifier", "semantic") if n in stages
             and (n != "classifier" or cfg.classifier.block) and (n != "semantic" or cfg.semantic.enabled)
             and (n != "language" or cfg.language.enabled)]
    chains = {
        "chain": chain,
        "chain_with_semantic": sorted(set(chain) | {"semantic"}),
        "chain_without_safety_classifier": [n for n in chain if n != "safety_classifier"],
        "chain_without_multilingual_head": [n if n != "safety_classifier" else "safety_classifier_minilm_only"
                                            for n in chain],
        "chain_with_language_gate": ["language"] + [n for n in chain if n != "language"],
        "chain_with_classifier_blocking": sorted(set(chain) | {"classifier"}),
    }
    for name, parts in chains.items():
        blocked[name] = [any(blocked[s][i] for s in parts) for i in range(len(rows))]

    out: dict = {"data": a.data, "n": len(rows), "test_split_sha256": test_digest,
                 "thresholds": {"classifier": cfg.classifier.threshold, "semantic": cfg.semantic.threshold,
                                "safety_classifier": stages["safety_classifier"].threshold
                                if "safety_classifier" in stages else None,
                                "multilingual_head": cfg.safety_classifier.multilingual_threshold
                                if cfg.safety_classifier.head_file else None,
                                "semantic_margin": cfg.semantic.margin,
                                "semantic_hard": cfg.semantic.hard_threshold},
                 "load_s": round(load_s, 2), "splits": {}}
    for split in dict.fromkeys(r["split"] for r in rows):
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
                 "by": [n for n in stages if blocked[n][i]]}
                for i in idx if blocked["chain"][i] != (rows[i]["label"] == "harmful")]

    # latency of the whole PreGuard (fresh prompts, warm models); no violation log
    guard = PreGuard(cfg, stages=[stages[n] for n in chain])
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
