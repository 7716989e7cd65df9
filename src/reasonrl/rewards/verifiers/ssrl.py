"""``ssrl``: SSRL's exact match (algorithms.md §5.2): the last ``<answer>...</answer>`` span against the
gold answer and ``meta['aliases']``, SQuAD-normalised (:mod:`reasonrl.rewards.ssrl`). With this
verifier the ordinary scorer grades search-style answers; ``ssrl.reward`` swaps in the whole SSRL
reward (EM + format score) instead."""

from __future__ import annotations

from reasonrl.rewards.ssrl import exact_match, golds, last_answer
from reasonrl.rewards.verifiers.base import Graded, Verdict, Verifier


def grade(ctx, tasks, responses) -> Graded:
    verdicts = [Verdict.CORRECT if exact_match(r, golds(t)) == 1.0 else Verdict.WRONG
                for t, r in zip(tasks, responses)]
    return Graded(verdicts, [last_answer(r) for r in responses])


VERIFIER = Verifier("ssrl", grade, check=golds, doc="exact match of the last <answer> span")
