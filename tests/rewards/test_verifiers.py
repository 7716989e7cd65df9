"""The verifier registry: built-ins by name, new verifiers by registration or import path, and the
Scorer's generic handling of what a verifier returns (verdict counts, infrastructure errors)."""

import pytest

from reasonrl.rewards import (Graded, RewardFunctionError, RewardInfrastructureError, Scorer, Verdict, Verifier,
                              register_verifier)
from reasonrl.rewards.verifiers import REGISTRY, get_verifier
from reasonrl.tasks.base import Task

FIX = "reward_fns_fixture"


def _t(uid, answer, verifier, **meta):
    return Task(uid=uid, prompt=f"prompt of {uid}", answer=answer, verifier=verifier, meta=meta)


def test_builtins_are_registered_in_order():
    assert list(REGISTRY)[:8] == ["math", "countdown", "exact", "reasoning_gym", "code", "qa", "qa_f1", "ssrl"]
    assert all(v.name == k for k, v in REGISTRY.items())
    assert get_verifier("lean") is None


def test_ssrl_verifier_grades_the_last_answer_span():
    tasks = [_t("a", "Paris", "ssrl", aliases=["paris france"]), _t("b", "Paris", "ssrl"), _t("c", "Paris", "ssrl")]
    res = Scorer().score(tasks, ["<answer>Lyon</answer> <answer>the Paris, France</answer>",
                                 "<answer>Paris</answer><answer>Lyon</answer>", "Paris"])
    assert res.correct == [True, False, False]
    assert res.extracted == ["the Paris, France", "Lyon", None]
    assert res.counts == {"correct": 1, "wrong": 2, "timeout": 0, "error": 0, "no_answer": 1}
    with pytest.raises(ValueError, match="'bad'.*aliases"):
        Scorer().score([_t("bad", "x", "ssrl", aliases=[3])], ["<answer>x</answer>"])


@pytest.fixture
def flaky():
    """A registered verifier that cannot grade responses containing 'crash' (an infrastructure error)."""
    def grade(ctx, tasks, responses):
        verdicts = [Verdict.ERROR if "crash" in r else Verdict.CORRECT if r == t.answer else Verdict.WRONG
                    for t, r in zip(tasks, responses)]
        return Graded(verdicts, [r or None for r in responses], counts={"flaky_calls": 1})

    def check(task):
        if "need" not in task.meta:
            raise ValueError(f"flaky task {task.uid!r} needs meta['need']")

    v = register_verifier(Verifier("flaky_test", grade, check=check))
    yield v
    del REGISTRY["flaky_test"]


def test_a_registered_verifier_is_graded_counted_and_checked(flaky):
    tasks = [_t("a", "1", "flaky_test", need=1), _t("b", "1", "flaky_test", need=1), _t("c", "2", "exact")]
    res = Scorer(format_weight=0.0, max_error_fraction=0.5).score(tasks, ["1", "crash", "2"])
    assert res.verdicts == ["correct", "error", "correct"] and res.valid == [True, False, True]
    assert res.components["correctness"] == [1.0, 0.0, 1.0]
    assert res.counts == {"correct": 2, "wrong": 0, "timeout": 0, "error": 1, "no_answer": 0, "flaky_calls": 1}
    with pytest.raises(RewardInfrastructureError, match="2/2 samples of verifier 'flaky_test'"):
        Scorer().score(tasks[:2], ["crash", "crash"])
    with pytest.raises(ValueError, match="'z' needs meta"):
        Scorer().score([_t("z", "1", "flaky_test")], ["1"])


def test_user_function_as_a_task_verifier_by_import_path():
    tasks = [_t("a", "x", f"{FIX}:returns_bool"), _t("b", "x", f"{FIX}:returns_bool"), _t("c", "x", f"{FIX}:batch_len")]
    res = Scorer().score(tasks, ["has x", "nothing", "x"])
    assert res.correct == [True, False, True]
    assert res.components["correctness"] == [1.0, 0.0, pytest.approx(1.1)]
    assert get_verifier(f"{FIX}:returns_bool") is get_verifier(f"{FIX}:returns_bool")  # loaded once
    with pytest.raises(RewardFunctionError, match="four positional arguments"):
        Scorer().score([_t("d", "x", f"{FIX}:two_args")], ["x"])
