"""Adapter for an Aegis / LlamaGuard-style safety LLM behind an OpenAI-compatible endpoint.

The model is served elsewhere (vLLM, TGI, NIM: POST {base_url}/v1/chat/completions) and answers
"safe", or "unsafe" followed by a line of category codes ("S1,S9" for Llama Guard 3, "O3" for Aegis).
Retries on 5xx and connection errors; anything else that is not a clean answer (4xx, garbage,
timeouts after the retries) raises GuardError, which the chain turns into a block (fail closed).
"""

from __future__ import annotations

import logging
import os
import re
import time

import requests

from .preguard import AegisConfig
from .verdict import GuardError, StageResult

log = logging.getLogger(__name__)

# Llama Guard 3 hazard taxonomy (MLCommons) and NVIDIA Aegis categories, for readable reasons
CATEGORIES = {
    "S1": "violent crimes", "S2": "non-violent crimes", "S3": "sex-related crimes",
    "S4": "child sexual exploitation", "S5": "defamation", "S6": "specialized advice", "S7": "privacy",
    "S8": "intellectual property", "S9": "indiscriminate weapons", "S10": "hate",
    "S11": "suicide & self-harm", "S12": "sexual content", "S13": "elections", "S14": "code interpreter abuse",
    "O1": "violence", "O2": "sexual", "O3": "criminal planning", "O4": "guns and illegal weapons",
    "O5": "regulated substances", "O6": "suicide and self harm", "O7": "sexual (minor)", "O8": "hate",
    "O9": "PII/privacy", "O10": "harassment", "O11": "threat", "O12": "profanity", "O13": "needs caution",
}
_CODE = re.compile(r"\b([SO]\d{1,2})\b")


def parse_answer(text: str) -> tuple[bool, list[str]]:
    """'safe' -> (True, []); 'unsafe\\nS1,S9' -> (False, ['S1', 'S9']); anything else -> GuardError."""
    if not isinstance(text, str) or not text.strip():
        raise GuardError("aegis: empty answer from the safety model")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    head = lines[0].lower().rstrip(".")
    # Aegis may prefix "User: " or "Safety: "; accept "safe"/"unsafe" as the first word
    head = re.sub(r"^(?:(?:user|agent|response|safety|assessment|answer)\s*)+[:\-]\s*", "", head)
    word = head.split()[0] if head.split() else ""
    if word == "safe":
        return True, []
    if word == "unsafe":
        codes = _CODE.findall(" ".join(lines[1:] + [lines[0]]).upper())
        return False, list(dict.fromkeys(codes))
    raise GuardError(f"aegis: unparseable answer {text[:80]!r} (expected 'safe' or 'unsafe\\nS1,...')")


class AegisStage:
    """One chat completion per prompt; the model's own chat template wraps it in the safety policy."""

    name = "aegis"

    def __init__(self, cfg: AegisConfig, session: requests.Session | None = None):
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.url += "/chat/completions"
        self.session = session or requests.Session()
        self.headers = {"Content-Type": "application/json"}
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def classify(self, prompt: str) -> tuple[bool, list[str]]:
        body = {"model": self.cfg.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "max_tokens": 32}
        last = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            try:
                r = self.session.post(self.url, json=body, headers=self.headers, timeout=self.cfg.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as e:
                last = f"{type(e).__name__}: {e}"
                log.warning("aegis attempt %d: %s", attempt + 1, last)
                continue
            if r.status_code >= 500:
                last = f"HTTP {r.status_code}"
                log.warning("aegis attempt %d: %s", attempt + 1, last)
                continue
            if r.status_code >= 400:  # auth, wrong model name, bad request: retrying will not help
                raise GuardError(f"aegis: HTTP {r.status_code} from {self.url}: {r.text[:200]} "
                                 f"(check base_url, model and the {self.cfg.api_key_env} key)")
            try:
                content = r.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise GuardError(f"aegis: not an OpenAI chat completion: {r.text[:120]!r}") from e
            return parse_answer(content)
        raise GuardError(f"aegis: {self.url} unavailable after {self.cfg.retries + 1} attempts ({last})")

    def check(self, prompt: str) -> StageResult:
        safe, codes = self.classify(prompt)
        if safe:
            return StageResult(self.name, True, [], {self.name: 0.0})
        names = ", ".join(f"{c} {CATEGORIES.get(c, '?')}" for c in codes) or "no category given"
        return StageResult(self.name, False, [f"aegis: unsafe ({names})"], {self.name: 1.0})
