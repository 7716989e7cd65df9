"""reward.extract: the answer each extraction mode finds in hand-written responses, and the scorer/config wiring."""

import typing

import pytest
from pydantic import ValidationError

from reasonrl.config import Config, RewardConfig
from reasonrl.rewards import RewardSpec, Scorer
from reasonrl.rewards.answer_modes import (EXTRACT_MODES, extract_answer_phrase, extract_by_mode,
                                           extract_last_number, extract_lenient)
from reasonrl.rewards.format import boxed_format_reward, format_reward
from reasonrl.tasks.base import Task


@pytest.mark.parametrize("text, boxed, tag, last, lenient", [
    ("So 3+4 = \\boxed{7}.", "7", None, "7", "7"),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}", None, "2", "\\frac{\\sqrt{2}}{2}"),  # nested braces
    ("I do not know.", None, None, None, None),  # no number
    ("", None, None, None, None),  # empty response
    ("First 12, then 30, so 42 in total", None, None, "42", "42"),  # several numbers: the last
    ("It drops to -5 degrees", None, None, "-5", "-5"),  # negative
    ("10-5 is what they wrote", None, None, "5", "5"),  # a minus after a digit is an operator
    ("Half of 5 is 2.5.", None, None, "2.5", "2.5"),  # decimal; the full stop is not part of it
    ("The total is 1,234 apples", None, None, "1234", "1234"),  # thousands comma
    ("Pick 3, 4", None, None, "4", "4"),  # a comma and space separate numbers
    ("The answer is 12. Check: 12-2=10", None, None, "10", "12"),  # the phrase beats the last number
    ("Answer: $-7$ (from 3-10)", None, None, "10", "-7"),
    ("<answer>8</answer> so maybe 9", "8", "8", "9", "8"),  # boxed mode keeps its <answer> fallback
    ("\\boxed{5} and later 6", "5", None, "6", "5"),  # a box beats every later number
    ("\\boxed{1} then \\boxed{2", None, None, "2", "2"),  # unbalanced last box: lenient falls back
])
def test_modes_on_hand_written_responses(text, boxed, tag, last, lenient):
    got = {m: extract_by_mode(text, m) for m in ("boxed", "answer_tag", "last_number", "lenient")}
    assert got == {"boxed": boxed, "answer_tag": tag, "last_number": last, "lenient": lenient}


def test_phrase_needs_a_number_soon_after():
    assert extract_answer_phrase("The answer is: $\\mathbf{12}$") == "12"
    assert extract_answer_phrase("my answer is long\n and 5 is on the next line") is None
    assert extract_answer_phrase("answer is 3 ... the final answer is 4") == "4"  # the last phrase wins
    assert extract_answer_phrase("the answer is: 9-4 = 11") == "11"  # an equation answers with its result
    assert extract_answer_phrase("The answer is 2.5. So 2+3=5") == "2.5"  # the sentence ends the window
    assert extract_lenient("answer is unclear, 9") == "9"  # the last number, in the end
    assert extract_last_number("v2 of x") == "2"


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown answer extraction mode 'loose'.*boxed, answer_tag, last_number, lenient"):
        extract_by_mode("7", "loose")
    with pytest.raises(ValueError, match="unknown answer extraction mode"):
        Scorer(extract="loose")
    with pytest.raises(ValidationError, match="extract"):
        Config.model_validate({"reward": {"extract": "loose"}})


def test_config_literal_matches_the_modes():
    assert typing.get_args(RewardConfig.model_fields["extract"].annotation) == EXTRACT_MODES
    assert RewardConfig().extract == "boxed" and RewardSpec().extract == "boxed"


def _t(answer, verifier="math"):
    return Task(uid="u", prompt="Compute 3+4.", answer=answer, verifier=verifier, meta={"family": "arith"})


def test_scorer_grades_with_the_mode(mv):
    """A SmolLM2-style response (no box) is wrong under the default and right under lenient/last_number."""
    resp = "To compute 3+4, we add 3 and 4, which gives 7."
    for mode, ok in (("boxed", False), ("answer_tag", False), ("last_number", True), ("lenient", True)):
        res = Scorer(verifier=mv, extract=mode).score([_t("7")], [resp])
        assert res.correct == [ok], mode
        assert res.extracted == [("7" if ok else None)], mode
    assert RewardSpec(extract="lenient").build().extract == "lenient"
    exact = Scorer(verifier=mv, extract="lenient").score([_t("Paris", "exact")], ["The answer is 3 Paris"])
    assert exact.extracted == ["3"] and exact.correct == [False]


def test_boxed_format_reward_as_a_user_function(mv):
    ok, late, two = "so \\boxed{7}", "\\boxed{7} because 3+4", "\\boxed{7} or \\boxed{8}"
    for r in (ok, late, two, "", "7"):
        assert boxed_format_reward("p", r, "7", {}) == format_reward(r)
    assert [boxed_format_reward("p", r, "7", {}) for r in (ok, late, two)] == [1.0, 0.0, 0.0]
    sc = Scorer(verifier=mv, extract="lenient", user_fns=[("reasonrl.rewards.format:boxed_format_reward", 0.25)])
    res = sc.score([_t("7")] * 3, [ok, late, "the sum is 7"])
    assert res.scores == [1.25, 1.0, 1.0]
    assert res.components["reasonrl.rewards.format:boxed_format_reward"] == [1.0, 0.0, 0.0]
