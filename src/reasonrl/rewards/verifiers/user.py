"""A task's ``verifier`` may be an import path ``pkg.mod:obj`` instead of a registered name: ``obj`` is
a :class:`Verifier`, or a reward function with one of the signatures of
:data:`reasonrl.rewards.USER_FN_SIGNATURE`, whose score is the correctness (verdict correct at >= 1.0)."""

from __future__ import annotations

from dataclasses import replace

from reasonrl.rewards.extract import extract_answer
from reasonrl.rewards.user import UserFn, import_object, load_reward_function
from reasonrl.rewards.verifiers.base import Graded, Verdict, Verifier


def from_import_path(path: str) -> Verifier:
    obj = import_object(path)
    if isinstance(obj, Verifier):
        return replace(obj, name=path)
    fn = UserFn(path, 1.0, load_reward_function(path))

    def grade(ctx, tasks, responses) -> Graded:
        scores = fn(tasks, responses)
        return Graded([Verdict.CORRECT if s >= 1.0 else Verdict.WRONG for s in scores],
                      [extract_answer(r) for r in responses], scores)

    return Verifier(path, grade, doc=f"user function {path}")
