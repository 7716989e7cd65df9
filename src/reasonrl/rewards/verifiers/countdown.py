"""``countdown``: the extracted expression uses each of ``meta['numbers']`` once and equals
``meta['target']`` (:func:`reasonrl.rewards.countdown.countdown_score`)."""

from __future__ import annotations

from reasonrl.rewards.countdown import countdown_score
from reasonrl.rewards.extract import extract_answer
from reasonrl.rewards.verifiers.base import Graded, Verdict, Verifier


def check(task) -> None:
    if not ("numbers" in task.meta and "target" in task.meta):
        raise ValueError(f"countdown task {task.uid!r} needs meta['numbers'] and meta['target']")


def grade(ctx, tasks, responses) -> Graded:
    extracted = [extract_answer(r) for r in responses]
    return Graded([Verdict.CORRECT if countdown_score(x, t.meta["numbers"], t.meta["target"]) else Verdict.WRONG
                   for t, x in zip(tasks, extracted)], extracted)


VERIFIER = Verifier("countdown", grade, check=check, doc="arithmetic expression reaching a target")
