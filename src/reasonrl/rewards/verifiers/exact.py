"""``exact``: the extracted answer (the whole response when nothing is extracted) equals the gold
answer after stripping surrounding whitespace."""

from __future__ import annotations

from reasonrl.rewards.extract import extract_answer
from reasonrl.rewards.verifiers.base import Graded, Verdict, Verifier


def grade(ctx, tasks, responses) -> Graded:
    extracted = [extract_answer(r) for r in responses]
    return Graded([Verdict.CORRECT if (r if x is None else x).strip() == t.answer.strip() else Verdict.WRONG
                   for t, r, x in zip(tasks, responses, extracted)], extracted)


VERIFIER = Verifier("exact", grade, doc="string equality after strip")
