"""Step-verified arithmetic reward: hand-computed cases."""

from reasonrl.rewards.process import arith_step_reward, check_steps

ARITH = {"family": "arith"}


def test_check_steps_hand_cases():
    assert check_steps("18+25=43. 43-7=36. 36*2=72. \\boxed{72}") == [True, True, True]
    assert check_steps("18+25=33. 33-7=26. 26*2=52. \\boxed{52}") == [False, True, True]  # a forgotten carry
    assert check_steps("no steps here \\boxed{3}") == []


def test_step_reward_is_the_fraction_of_right_steps():
    assert arith_step_reward("", "18+25=33. 33-7=26. 26*2=52. \\boxed{52}", "72", ARITH) == 2 / 3
    assert arith_step_reward("", "18+25=43. 43-7=36. \\boxed{36}", "36", ARITH) == 1.0
    assert arith_step_reward("", "\\boxed{36}", "36", ARITH) == 0.0
    assert arith_step_reward("", "1+1=2.", "2", {"family": "linear"}) == 0.0
