"""``exact``: the extracted answer (the whole response when nothing is extracted) equals the gold
answer after stripping surrounding whitespace."""

from __future__ import annotations

from reasonrl.rewards.answer_modes import extract_by_mode
from reasonrl.rewards.verifiers.base import Graded, Verdict, Verifier


def grade(ctx, tasks, responses) -> Graded:
    mode = getattr(ctx, "extract", "boxed")  # reward.extract; contexts without it use the default
    extracted = [extract_by_mode(r, mode) for r in responses]
    return Graded([Verdict.CORRECT if (r if x is None else x).strip() == t.answer.strip() else Verdict.WRONG
                   for t, r, x in zip(tasks, responses, extracted)], extracted)


VERIFIER = Verifier("exact", grade, doc="string equality after strip")
