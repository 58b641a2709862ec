"""The shared guard contract: a Verdict, the stage protocol and GuardError.

Pre-guard (prompts) and post-guard (videos) both run a chain of stages; each stage returns a
StageResult, the chain folds them into one Verdict. A stage that cannot load or run raises
GuardError and the chain FAILS CLOSED: the input is blocked with that error as the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


class GuardError(RuntimeError):
    """A stage that cannot load or run (missing model, endpoint down, bad answer).

    Guards treat it as a block (fail closed), never as a pass.
    """


@dataclass
class StageResult:
    """What one stage says about one input."""

    stage: str
    allowed: bool
    reasons: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Stage(Protocol):
    """One link of a guard chain. `check` takes the input (a prompt str, a video path, ...)."""

    name: str

    def check(self, item: Any) -> StageResult: ...


@dataclass
class Verdict:
    allowed: bool
    reasons: list[str]  # readable, one per triggered stage/rule, e.g. "blocklist: 'k1ll' ~ kill"
    scores: dict[str, float]  # per stage, e.g. {"classifier": 0.93, "semantic": 0.71}
    stage_results: list[dict]  # [{"stage", "allowed", "reasons", "scores", "ms"}]

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "scores": dict(self.scores),
            "stage_results": [dict(r) for r in self.stage_results],
        }

    @classmethod
    def from_stages(cls, results: list[StageResult]) -> Verdict:
        """Fold stage results: blocked if any stage blocked; reasons and scores concatenated."""
        reasons: list[str] = []
        scores: dict[str, float] = {}
        for r in results:
            reasons.extend(r.reasons if not r.allowed else [])
            for k, v in r.scores.items():
                # a stage's main score is keyed by the stage name; extra scores get "stage.key"
                scores[r.stage if k == r.stage else f"{r.stage}.{k}"] = float(v)
        return cls(
            allowed=all(r.allowed for r in results),
            reasons=reasons,
            scores=scores,
            stage_results=[r.to_dict() for r in results],
        )
