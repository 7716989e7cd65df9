"""``qa`` and ``qa_f1``: SQuAD-normalised exact match against the gold answer and ``meta['aliases']``
(:mod:`reasonrl.rewards.kinds`); ``qa_f1`` rewards the token F1 instead, the verdict stays exact match."""

from __future__ import annotations

from reasonrl.rewards.extract import extract_answer
from reasonrl.rewards.kinds import exact_match, qa_golds, token_f1
from reasonrl.rewards.verifiers.base import Graded, Verdict, Verifier


def _grade(f1: bool):
    def grade(ctx, tasks, responses) -> Graded:
        extracted = [extract_answer(r) for r in responses]
        verdicts, correctness = [], []
        for t, r, x in zip(tasks, responses, extracted):
            got, golds = (r if x is None else x), qa_golds(t.answer, t.meta)
            em = exact_match(got, golds)
            verdicts.append(Verdict.CORRECT if em == 1.0 else Verdict.WRONG)
            correctness.append(token_f1(got, golds) if f1 else em)
        return Graded(verdicts, extracted, correctness)
    return grade


EXACT = Verifier("qa", _grade(False), doc="normalised exact match over answer + aliases")
F1 = Verifier("qa_f1", _grade(True), doc="token F1 over answer + aliases")
