"""``math``: the last ``\\boxed{}`` / ``<answer>`` of a response against the gold answer, through the
shared Math-Verify worker (numbers compared in the parent; a crashed or hung worker is ``error``)."""

from __future__ import annotations

from reasonrl.rewards.extract import extract_answer
from reasonrl.rewards.verifiers.base import Graded, Verifier


def grade(ctx, tasks, responses) -> Graded:
    extracted = [extract_answer(r) for r in responses]
    return Graded(list(ctx.verifier.verify_many((t.answer, x) for t, x in zip(tasks, extracted))), extracted)


def infra_error(ctx, n_error: int, n: int) -> str:
    return f"{n_error}/{n} math samples could not be graded (verdict 'error'); last error: {ctx.verifier.last_error}"


VERIFIER = Verifier("math", grade, infra_error=infra_error, doc="numeric/LaTeX answer, math-equivalence")
