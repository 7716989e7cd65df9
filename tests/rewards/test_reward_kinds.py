"""QA exact match / token F1, tagged format, length penalty, batch user functions (hand-computed)."""

from __future__ import annotations

import pytest

from reasonrl.rewards import RewardFunctionError, Scorer
from reasonrl.rewards.kinds import exact_match, length_penalty, normalize_answer, tag_format_reward, token_f1
from reasonrl.tasks.base import Task


def test_normalize_and_exact_match():
    assert normalize_answer("  The Eiffel-Tower! ") == "eiffeltower"
    assert exact_match("the  eiffel tower.", ["Eiffel Tower"]) == 1.0
    assert exact_match("Paris", ["London", "paris"]) == 1.0
    assert exact_match("Pariss", ["Paris"]) == 0.0 and exact_match(None, ["x"]) == 0.0


def test_token_f1_hand_cases():
    # pred tokens [new, york, city], gold [new, york]: P = 2/3, R = 1, F1 = 0.8
    assert token_f1("New York City", ["new york"]) == pytest.approx(0.8)
    assert token_f1("a", ["the"]) == 1.0  # both normalise to no tokens
    assert token_f1("", ["paris"]) == 0.0
    assert token_f1("york york", ["york"]) == pytest.approx(2 * 0.5 * 1 / 1.5)  # multiset overlap 1
    assert token_f1("x", ["y", "x z"]) == pytest.approx(2 / 3)  # best over aliases


def test_tag_format():
    assert tag_format_reward("<think>because</think>\n<answer>4</answer>") == 1.0
    assert tag_format_reward("<think></think><answer>4</answer>") == 0.0  # empty think
    assert tag_format_reward("<answer>4</answer><think>x</think>") == 0.0  # order
    assert tag_format_reward("<think>a</think><answer>4</answer> trailing") == 0.0
    assert tag_format_reward("<think>a<think>b</think><answer>4</answer>") == 0.0


def test_length_penalty():
    assert length_penalty("x" * 10, 10) == 0.0
    assert length_penalty("x" * 15, 10) == -0.5
    assert length_penalty("x" * 50, 10) == -1.0
    with pytest.raises(ValueError):
        length_penalty("x", 0)


def test_scorer_qa_and_weighted_composition():
    tasks = [Task("q1", "Capital of France?", "Paris", verifier="qa", meta={"aliases": ["Paris, France"]}),
             Task("q2", "City?", "New York", verifier="qa_f1")]
    sc = Scorer(correctness_weight=1.0, tag_format_weight=0.5, length_penalty_weight=2.0, length_target_chars=40)
    r1 = "<think>it is</think><answer>paris</answer>"  # 42 chars: penalty -(2/40)
    res = sc.score(tasks, [r1, "New York City"])
    assert res.correct == [True, False]
    assert res.components["correctness"] == [1.0, pytest.approx(0.8)]
    assert res.components["tag_format"] == [1.0, 0.0]
    assert res.components["length_penalty"] == [pytest.approx(-2 / 40), 0.0]
    assert res.scores == [pytest.approx(1.0 + 0.5 - 2 * 2 / 40), pytest.approx(0.8)]


def test_batch_user_function_and_its_errors():
    tasks = [Task("a", "p", "7"), Task("b", "p", "9")]
    sc = Scorer(correctness_weight=0.0, user_fns=[("reward_fns_fixture:batch_len", 2.0)])
    res = sc.score(tasks, ["is 7", "8"])
    assert res.components["reward_fns_fixture:batch_len"] == [pytest.approx(1.4), pytest.approx(0.1)]
    assert res.scores == [pytest.approx(2.8), pytest.approx(0.2)]
    with pytest.raises(RewardFunctionError, match="batch_wrong_length.*returned 1 scores for 2"):
        Scorer(user_fns=["reward_fns_fixture:batch_wrong_length"]).score(tasks, ["x", "y"])
    with pytest.raises(RewardFunctionError, match="must accept \\(tasks, responses\\)"):
        Scorer(user_fns=["reward_fns_fixture:batch_bad_signature"])


def test_config_requires_a_length_target():
    from reasonrl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="length_target_chars"):
        load_config(None, ["reward.length_penalty=1.0"])
