import pytest

from reasonrl.rewards import format_reward


@pytest.mark.parametrize("response", [
    r"So the answer is \boxed{42}",
    "reasoning...\n$\\boxed{\\frac{1}{2}}$.\n",
    r"\[ \boxed{x+1} \]",
    r"\boxed{7}<|im_end|>",
    r"\boxed{7}</s>",
    r"<answer>\boxed{7}</answer><|endoftext|>",
])
def test_one_final_box_scores_one(response):
    assert format_reward(response) == 1.0


@pytest.mark.parametrize("response", [
    "no box",
    r"\boxed{3} or \boxed{4}",  # hedging
    r"\boxed{4} and then more words",
    r"\boxed{}",
    r"\boxed{   }",
    r"\boxed{\frac{1}{2}",  # unbalanced
    r"\boxed 5",  # token form is extractable but not the requested format
    "",
])
def test_everything_else_scores_zero(response):
    assert format_reward(response) == 0.0
