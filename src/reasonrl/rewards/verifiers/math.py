"""``math``: the answer of a response (``reward.extract``; default the last ``\\boxed{}`` / ``<answer>``)
against the gold answer, through the shared Math-Verify worker (numbers compared in the parent; a crashed or hung worker is ``error``)."""

from __future__ import annotations

from reasonrl.rewards.answer_modes import extract_by_mode
from reasonrl.rewards.verifiers.base import Graded, Verifier


def grade(ctx, tasks, responses) -> Graded:
    mode = getattr(ctx, "extract", "boxed")  # reward.extract; contexts without it use the default
    extracted = [extract_by_mode(r, mode) for r in responses]
    return Graded(list(ctx.verifier.verify_many((t.answer, x) for t, x in zip(tasks, extracted))), extracted)


def infra_error(ctx, n_error: int, n: int) -> str:
    return f"{n_error}/{n} math samples could not be graded (verdict 'error'); last error: {ctx.verifier.last_error}"


VERIFIER = Verifier("math", grade, infra_error=infra_error, doc="numeric/LaTeX answer, math-equivalence")
