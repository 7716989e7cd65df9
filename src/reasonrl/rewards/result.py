"""What the reward stage hands back: per-sample scores, verdicts and counters (no heavy imports, so
every grader and scorer can share it)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RewardResult", "RewardInfrastructureError"]


class RewardInfrastructureError(RuntimeError):
    """Too many samples could not be graded for reasons that are not the model's fault."""


@dataclass
class RewardResult:
    """Per-sample outputs of :meth:`Scorer.score`, all lists aligned with the input batch.

    ``counts`` holds the verdict tally (``correct + wrong + timeout + error == len(batch)``) and
    ``no_answer``: samples with nothing extracted, a subset of ``wrong``. ``valid`` is False
    exactly where the verdict is ``error``.
    """

    scores: list[float]
    correct: list[bool]
    components: dict[str, list[float]]
    counts: dict[str, int]
    extracted: list[str | None]
    verdicts: list[str] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)
