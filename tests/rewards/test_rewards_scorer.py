import math
import sys
import types

import pytest
from pydantic import ValidationError

from reasonrl.rewards import (MathVerifier, RewardFunctionError, RewardInfrastructureError, RewardSpec,
                              Scorer)
from reasonrl.rewards import math_verify_worker as mvw
from reasonrl.rewards.verifiers import reasoning_gym as rg_verifier
from reasonrl.tasks.base import Task

FIX = "reward_fns_fixture"


def _t(uid, answer, verifier="math", **meta):
    return Task(uid=uid, prompt=f"prompt of {uid}", answer=answer, verifier=verifier, meta=meta)


@pytest.fixture
def fake_rg(monkeypatch):
    calls = []

    def score_reasoning_gym(task, answer):
        calls.append((task.uid, answer))
        return 1.0 if answer == task.answer else 0.25

    monkeypatch.setitem(sys.modules, "reasoning_gym", types.ModuleType("reasoning_gym"))
    monkeypatch.setattr(rg_verifier, "score_reasoning_gym", score_reasoning_gym)
    return calls


def test_mixed_batch(mv, fake_rg):
    tasks = [
        _t("m-fast", "136"), _t("m-mv", "2"), _t("m-none", "5"), _t("m-wrong", "5"),
        _t("cd-ok", "56", "countdown", numbers=[3, 5, 7], target=56),
        _t("cd-bad", "56", "countdown", numbers=[3, 5, 7], target=56),
        _t("ex", "Paris", "exact"), _t("ex-full", "Paris", "exact"),
        _t("rg-ok", "abc", "reasoning_gym"), _t("rg-part", "abc", "reasoning_gym"),
    ]
    responses = [
        r"so \boxed{136.0}", r"hence \boxed{\sqrt{4}}", "I do not know", r"\boxed{6}",
        r"\boxed{(3 + 5) * 7}", r"\boxed{(3 + 3) * 7}",
        r"<answer> Paris </answer>", "  Paris\n",
        "<answer>abc</answer>", "no tags, just abd",
    ]
    res = Scorer(format_weight=0.5, verifier=mv).score(tasks, responses)
    assert res.correct == [True, True, False, False, True, False, True, True, True, False]
    assert res.extracted == ["136.0", r"\sqrt{4}", None, "6", "(3 + 5) * 7", "(3 + 3) * 7", "Paris", None,
                             "abc", None]
    assert res.components["correctness"] == [1, 1, 0, 0, 1, 0, 1, 1, 1.0, 0.25]
    assert res.components["format"] == [1, 1, 0, 1, 1, 1, 0, 0, 0, 0]
    assert res.scores == pytest.approx([1.5, 1.5, 0, 0.5, 1.5, 0.5, 1, 1, 1, 0.25])
    assert res.counts == {"correct": 6, "wrong": 4, "timeout": 0, "error": 0, "no_answer": 2}
    assert res.verdicts[:4] == ["correct", "correct", "wrong", "wrong"]
    assert all(res.valid)
    assert fake_rg == [("rg-ok", "abc"), ("rg-part", "no tags, just abd")]


def test_two_boxes_are_graded_by_the_last(mv):
    tasks = [_t("a", "4"), _t("b", "4"), _t("c", "840840")]
    res = Scorer(verifier=mv).score(tasks, [r"\boxed{4} or maybe \boxed{3}", r"\boxed{3} no, \boxed{4}",
                                            r"\boxed{840}\boxed{840}"])
    assert res.correct == [False, True, False]


def test_unknown_verifier_names_uid_and_choices():
    with pytest.raises(ValueError, match=r"'t-7'.*'lean'.*math, countdown, exact, reasoning_gym"):
        Scorer().score([_t("t-7", "1", "lean")], ["x"])


def test_batch_shape_and_countdown_meta_checked():
    with pytest.raises(ValueError, match="2 tasks but 1 responses"):
        Scorer().score([_t("a", "1"), _t("b", "1")], ["x"])
    with pytest.raises(ValueError, match="cd-1"):
        Scorer().score([_t("cd-1", "1", "countdown")], ["x"])


def test_reasoning_gym_missing_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)
    with pytest.raises(ImportError, match=r"reasoning-gym package \(pip install 'reasonrl\[gym\]'\)"):
        Scorer().score([_t("rg", "a", "reasoning_gym")], ["a"])


def test_user_functions_weighted():
    s = Scorer(correctness_weight=0.0, user_fns=[(f"{FIX}:brevity", 2.0), (f"{FIX}:uses_meta", -1.0),
                                                  f"{FIX}:returns_bool"])
    res = s.score([_t("a", "x", "exact", bonus=3), _t("b", "y", "exact")], ["short x", "long " * 20])
    assert res.components[f"{FIX}:brevity"] == [1.0, 0.0]
    assert res.components[f"{FIX}:uses_meta"] == [3.0, 0.0]
    assert res.components[f"{FIX}:returns_bool"] == [1.0, 0.0]
    assert res.scores == [2.0 - 3.0 + 1.0, 0.0]


@pytest.mark.parametrize("path,match", [
    (f"{FIX}:two_args", "four positional arguments"),
    (f"{FIX}:keyword_only", "four positional arguments"),
    (f"{FIX}:NOT_CALLABLE", "not callable"),
    (f"{FIX}:missing", "has no attribute"),
    ("no_such_module_xyz:fn", "cannot import module"),
    (f"{FIX}.brevity", "must look like 'pkg.mod:fn'"),
])
def test_bad_user_functions_rejected_at_construction(path, match):
    with pytest.raises(RewardFunctionError, match=match) as ei:
        Scorer(user_fns=[(path, 1.0)])
    msg = str(ei.value)
    assert path in msg and "fn(prompt: str, response: str, answer: str, meta: dict) -> float" in msg


@pytest.mark.parametrize("fn,match", [("raises", "raised RuntimeError: boom"),
                                      ("returns_nan", "returned nan"), ("returns_str", "returned '1.0'")])
def test_user_function_failures_name_the_sample(fn, match):
    s = Scorer(user_fns=[(f"{FIX}:{fn}", 1.0)])
    with pytest.raises(RewardFunctionError, match=match) as ei:
        s.score([_t("ok", "1", "exact"), _t("uid-42", "1", "exact")], ["1", "x" * 1000])
    msg = str(ei.value)
    assert f"{FIX}:{fn}" in msg and "'ok'" in msg  # the first sample already fails
    assert "prompt of ok" in msg and len(msg) < 1200
    if fn == "raises":
        assert isinstance(ei.value.__cause__, RuntimeError)


def test_long_response_is_truncated_in_errors():
    s = Scorer(user_fns=[(f"{FIX}:raises", 1.0)])
    with pytest.raises(RewardFunctionError) as ei:
        s.score([_t("uid-42", "1", "exact")], ["y" * 5000])
    assert "uid-42" in str(ei.value) and "(+4800 chars)" in str(ei.value)


def test_weights_validated():
    with pytest.raises(ValueError, match="format_weight"):
        Scorer(format_weight=math.nan)
    with pytest.raises(ValueError, match="listed twice"):
        Scorer(user_fns=[f"{FIX}:brevity", f"{FIX}:brevity"])


def test_reward_spec_builds_a_scorer():
    s = RewardSpec(format_weight=0.25, user_fns=[[f"{FIX}:brevity", 0.5]], math_timeout_s=3).build()
    assert s.format_weight == 0.25 and s.user_fns[0].weight == 0.5 and s.math_timeout_s == 3.0
    with pytest.raises(ValidationError):
        RewardSpec(format_wieght=1.0)
    with pytest.raises(ValidationError):
        RewardSpec(math_timeout_s=0)


def test_infrastructure_failure_is_never_a_silent_zero(monkeypatch):
    monkeypatch.setattr(mvw, "_BOOT", "import sys; sys.exit(3)")
    tasks, responses = [_t("a", "2"), _t("b", "3")], [r"\boxed{\sqrt{4}}", r"\boxed{3}"]
    with pytest.raises(RewardInfrastructureError, match="1/1 math samples.*exit code 3"):
        Scorer(verifier=MathVerifier()).score(tasks[:1], responses[:1])
    res = Scorer(verifier=MathVerifier(), max_error_fraction=1.0).score(tasks, responses)
    assert res.verdicts == ["error", "correct"] and res.valid == [False, True]
    assert res.counts["error"] == 1 and res.scores == [0.0, 1.0]
