"""TTRL majority-vote rewards (spec algorithms.md §4): vote, rewards, metrics, subsampling, label hiding."""

from fractions import Fraction

import pytest
import torch

from reasonrl.batch import Rollouts
from reasonrl.rewards import Scorer
from reasonrl.rewards.majority import (
    MajorityVoteReward,
    keep_first,
    majority_label,
    mean_metrics,
    normalize_vote,
    prompt_metrics,
    vote_group,
    vote_rewards,
)
from reasonrl.tasks import Task


def num_eq(a: str, b: str) -> bool:
    """Stand-in for the math verifier in the pure tests: numeric equality (so '5' ~ '5.0')."""
    try:
        return Fraction(a) == Fraction(b)
    except (ValueError, ZeroDivisionError):
        return False


def boxed(a):
    return "no answer here" if a is None else f"so \\boxed{{{a}}}"


# ------------------------------------------------------------------ normalisation and the vote
@pytest.mark.parametrize("raw, key", [
    ("5", "5"), (" 5 ", "5"), ("$5$", "5"), ("5.", "5"), (":5", "5"), ("1/", "1"), ("x\n+ 1", "x + 1"),
    ("a   b", "a b"), ("", None), ("  ", None), (".", None), (None, None), ("5.0", "5.0"),
])
def test_normalize_vote(raw, key):
    assert normalize_vote(raw) == key


def test_majority_tie_goes_to_first_occurrence():
    assert majority_label(["6", "5", "5", "6"]) == ("6", 2)
    assert majority_label(["5", "6", "6", "5"]) == ("5", 2)
    assert majority_label(["a", "b", "c"]) == ("a", 1)


def test_majority_clear_winner_and_exact_strings():
    assert majority_label(["5", "7", "7", "5.0", "7"]) == ("7", 3)
    # the vote is on exact strings: "5" and "5.0" are two votes of 1 each, not one of 2
    assert majority_label(["5", "5.0", "6", "6"]) == ("6", 2)


def test_empty_answers_never_vote():
    assert majority_label([None, None, "3", None]) == ("3", 1)
    assert majority_label([None, None]) == (None, 0)
    assert majority_label([]) == (None, 0)
    v = vote_group([None, "", "  ", "4", None], num_eq)  # "" and blanks normalise to None
    assert (v.label, v.count) == ("4", 1)
    assert v.rewards == [0.0, 0.0, 0.0, 1.0, 0.0]


def test_no_valid_answer_gives_zero_to_all():
    v = vote_group([None, "", None], num_eq)
    assert v.label is None and v.count == 0 and v.rewards == [0.0, 0.0, 0.0]
    assert vote_rewards(["1", "2"], None, num_eq) == [0.0, 0.0]


def test_all_identical_answers():
    v = vote_group(["12"] * 5, num_eq)
    assert (v.label, v.count, v.rewards) == ("12", 5, [1.0] * 5)
    m = prompt_metrics(v, [True] * 5, True, 2)
    assert m["majority_ratio"] == 1.0 and m["majority_voting_reward"] == 1.0 and m["label_accuracy"] == 1.0


def test_singleton_group():
    v = vote_group(["3"], num_eq)
    assert (v.label, v.count, v.rewards) == ("3", 1, [1.0])
    m = prompt_metrics(v, [False], False, 1)
    assert m == {"majority_ratio": 1.0, "majority_voting_reward": 1.0, "no_label": 0.0,
                 "post_majority_voting_reward": 1.0, "reward_accuracy": 0.0, "ground_truth_ratio": 0.0,
                 "pass@1": 0.0, "post_reward_accuracy": 0.0, "post_ground_truth_ratio": 0.0, "post_pass@1": 0.0,
                 "label_accuracy": 0.0}


def test_reward_uses_equivalence_while_vote_uses_strings():
    v = vote_group(["5", "5.0", "6", "5"], num_eq)
    assert (v.label, v.count) == ("5", 2)
    assert v.rewards == [1.0, 1.0, 0.0, 1.0]  # "5.0" did not vote with "5" but is rewarded as equal


# ------------------------------------------------------------------ metrics, hand-computed
def test_metrics_hand_computed():
    # answers 6, 5, 5, -, 5.0, 6 ; gold 5. Tie 6 vs 5 (2 each) -> first occurrence "6".
    v = vote_group(["6", "5", "5", None, "5.0", "6"], num_eq)
    assert (v.label, v.count) == ("6", 2)
    assert v.rewards == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    true = [False, True, True, False, True, False]
    m = prompt_metrics(v, true, label_correct=False, n_train=3)
    assert m["label_accuracy"] == 0.0
    assert m["majority_ratio"] == pytest.approx(2 / 6)
    assert m["majority_voting_reward"] == pytest.approx(2 / 6)
    assert m["ground_truth_ratio"] == pytest.approx(3 / 6)
    assert m["reward_accuracy"] == pytest.approx(1 / 6)  # only the no-answer vote: pseudo 0 == true 0
    assert m["pass@6"] == 1.0
    # first 3 votes: pseudo 1,0,0 ; true 0,1,1
    assert m["post_reward_accuracy"] == 0.0
    assert m["post_ground_truth_ratio"] == pytest.approx(2 / 3)
    assert m["post_pass@3"] == 1.0
    assert m["post_majority_voting_reward"] == pytest.approx(1 / 3)


def test_lucky_hit_wrong_label_still_correct_zero_rewards():
    # label 7 is wrong (gold 9), but the two responses answering 8 get reward 0, which is also their true reward
    v = vote_group(["7", "7", "8", "8", "7"], num_eq)
    m = prompt_metrics(v, [False] * 5, False, 5)
    assert m["label_accuracy"] == 0.0 and m["reward_accuracy"] == pytest.approx(2 / 5)


def test_majority_ratio_counts_dropped_votes_in_denominator():
    v = vote_group(["2", None, None, None], num_eq)
    assert prompt_metrics(v, None, None, 2)["majority_ratio"] == 0.25


def test_metrics_without_gold_and_mean():
    a = prompt_metrics(vote_group(["1", "1"], num_eq), None, None, 1)
    assert "label_accuracy" not in a and "reward_accuracy" not in a
    b = prompt_metrics(vote_group(["1", "2"], num_eq), [True, False], True, 1)
    mm = mean_metrics([a, b])
    assert mm["majority_ratio"] == pytest.approx((1.0 + 0.5) / 2)
    assert mm["label_accuracy"] == 1.0  # averaged only over prompts that have gold


def test_metrics_validate_inputs():
    v = vote_group(["1", "2"], num_eq)
    with pytest.raises(ValueError, match="n_train"):
        prompt_metrics(v, None, None, 3)
    with pytest.raises(ValueError, match="gold verdicts"):
        prompt_metrics(v, [True], True, 1)


# ------------------------------------------------------------------ subsampling and prompt cycling
def test_keep_first_per_group():
    assert keep_first([0, 0, 0, 1, 1, 1], 2) == [0, 1, 3, 4]
    assert keep_first([0, 1, 0, 1, 0, 1], 1) == [0, 1]  # groups need not be contiguous
    assert keep_first([5, 5, 5], 3) == [0, 1, 2]


def _rollouts(texts: list[str], n: int) -> Rollouts:
    b = len(texts)
    z = torch.zeros(b, 2)
    return Rollouts(prompt_ids=z.long(), prompt_mask=torch.ones(b, 2), response_ids=z.long(), loss_mask=torch.ones(b, 2),
                    rollout_logp=z, group_ids=torch.arange(b) // n, task_index=[i // n for i in range(b)],
                    response_text=texts, truncated=torch.zeros(b, dtype=torch.bool))


@pytest.fixture()
def stage(mv):
    return MajorityVoteReward(Scorer(verifier=mv), n_votes=4, n_train=2)


def _tasks(answers):
    return [Task(uid=f"q{i}", prompt=f"p{i}", answer=a, solution=f"\\boxed{{{a}}}") for i, a in enumerate(answers)]


def test_stage_rewards_subsamples_and_logs(stage):
    blind = stage.hide_labels(_tasks(["5", "9"]))
    assert [(t.answer, t.solution) for t in blind] == [("", None), ("", None)]
    answers = ["5", "5.0", "6", "5",      # prompt 0: label "5", gold 5
               None, "7", "8", "8"]       # prompt 1: label "8", gold 9
    ro = _rollouts([boxed(a) for a in answers], 4)
    kept, res = stage.score([blind[i // 4] for i in range(8)], ro)
    assert kept.group_ids.tolist() == [0, 0, 1, 1] and kept.response_text == ro.select([0, 1, 4, 5]).response_text
    assert res.scores == [1.0, 1.0, 0.0, 0.0]
    assert res.correct == [True, True, False, False]
    m = stage.pop_metrics()
    assert m["ttrl/label_accuracy"] == 0.5
    assert m["ttrl/majority_ratio"] == pytest.approx((2 / 4 + 2 / 4) / 2)
    assert m["ttrl/ground_truth_ratio"] == pytest.approx((3 / 4 + 0) / 2)
    assert m["ttrl/reward_accuracy"] == pytest.approx((4 / 4 + 2 / 4) / 2)  # "6": pseudo 0 = true 0
    assert m["ttrl/pass@4"] == 0.5 and m["ttrl/post_pass@2"] == 0.5
    assert m["ttrl/post_reward_accuracy"] == pytest.approx((1.0 + 1.0) / 2)
    assert stage.pop_metrics() == {}  # the accumulator was reset


def test_stage_rewards_ignore_gold(stage, mv):
    """The training signal is a function of the responses only: any gold gives the same scores."""
    answers = ["5", "5.0", "6", "5", None, "7", "8", "8"]
    ro = _rollouts([boxed(a) for a in answers], 4)
    out = []
    for gold in (["5", "9"], ["1", "2"], ["", ""]):
        s = MajorityVoteReward(Scorer(verifier=mv), n_votes=4, n_train=2)
        blind = s.hide_labels(_tasks(gold))
        out.append(s.score([blind[i // 4] for i in range(8)], ro)[1].scores)
    assert out[0] == out[1] == out[2]


def test_stage_rejects_wrong_group_size_and_unvotable_tasks(stage):
    blind = stage.hide_labels(_tasks(["1"]))
    with pytest.raises(ValueError, match="n_votes=4"):
        stage.score([blind[0]] * 3, _rollouts([boxed("1")] * 3, 3))
    with pytest.raises(ValueError, match="countdown"):
        stage.hide_labels([Task(uid="c", prompt="p", answer="", verifier="countdown")])
    with pytest.raises(ValueError, match="n_train"):
        MajorityVoteReward(None, n_votes=2, n_train=3)


def test_format_weight_is_added(mv):
    s = MajorityVoteReward(Scorer(verifier=mv), n_votes=2, n_train=2, correctness_weight=1.0, format_weight=0.5)
    blind = s.hide_labels(_tasks(["3"]))
    _, res = s.score([blind[0]] * 2, _rollouts(["\\boxed{3}", "\\boxed{3} and more"], 2))
    assert res.scores == [1.5, 1.0]
