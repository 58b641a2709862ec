"""Guardrails: the prompt pre-guard, the video post-guard and the violation log.

Import the heavy parts from their modules (`preguard`, `aegis`, `violations`); this package
only re-exports the shared contract so that importing it stays cheap.
"""

from .verdict import GuardError, Stage, StageResult, Verdict

__all__ = ["GuardError", "Stage", "StageResult", "Verdict"]
