"""The shape of a batch verifier: tasks and responses of one verifier in, verdicts out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from reasonrl.rewards.math_verify_worker import Verdict

if TYPE_CHECKING:
    from reasonrl.rewards.math_verify_worker import MathVerifier
    from reasonrl.rewards.sandbox import CodeExecutor, SandboxConfig
    from reasonrl.tasks.base import Task

__all__ = ["Graded", "GradingContext", "Verifier", "Verdict", "verdict_correctness"]


class GradingContext(Protocol):
    """What a verifier may use from the :class:`~reasonrl.rewards.Scorer` that calls it (the shared,
    lazily started graders and the scorer's grading options)."""

    @property
    def verifier(self) -> MathVerifier: ...

    @property
    def executor(self) -> CodeExecutor: ...

    sandbox: SandboxConfig
    code_partial_credit: bool
    extract: str  # answer extraction mode (reward.extract, rewards/answer_modes.py)


@dataclass
class Graded:
    """One verifier's verdicts on its slice of a batch, aligned with the tasks it was given.

    ``correctness`` is the correctness component (default: 1.0 where the verdict is ``correct``,
    else 0.0); ``counts`` are extra counters added to :attr:`RewardResult.counts` (e.g. the
    sandbox statuses of code samples, ``code_passed``)."""

    verdicts: list[Verdict]
    extracted: list[str | None]
    correctness: list[float] | None = None
    counts: dict[str, int] = field(default_factory=dict)


def verdict_correctness(verdicts: Sequence[Verdict]) -> list[float]:
    return [1.0 if v is Verdict.CORRECT else 0.0 for v in verdicts]


@dataclass(frozen=True)
class Verifier:
    """A named batch verifier (``Task.verifier`` selects it).

    ``grade(ctx, tasks, responses) -> Graded`` grades every sample of the batch that names this
    verifier, in one call (so a worker or sandbox is used once per batch). ``check(task)`` raises
    ``ValueError`` naming the task when it lacks what the verifier needs; it runs on the whole batch
    before any grading. Verdict ``error`` means the grader failed, not the model: when more than
    ``Scorer.max_error_fraction`` of a verifier's samples end that way the batch raises
    :class:`~reasonrl.rewards.RewardInfrastructureError` with ``infra_error(ctx, n_error, n)`` as
    its message (a generic one if unset).
    """

    name: str
    grade: Callable[[GradingContext, Sequence[Task], Sequence[str]], Graded]
    check: Callable[[Task], None] | None = None
    infra_error: Callable[[GradingContext, int, int], str] | None = None
    doc: str = ""
