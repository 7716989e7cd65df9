import pytest

from reasonrl.rewards import countdown_score

NUMS = [3, 5, 7]


def test_valid_expressions():
    assert countdown_score("(3 + 5) * 7", NUMS, 56)
    assert countdown_score("7*5+3", [7, 5, 3], 38)
    assert countdown_score(r"$(3 + 5) \times 7$", NUMS, 56)
    assert countdown_score("(7 − 3) × 5", NUMS, 20)  # unicode minus and times
    assert countdown_score(r"\left(7 \div 7\right) + 5", [7, 7, 5], 6)


def test_each_number_exactly_once():
    assert not countdown_score("(3 + 3) * 7", NUMS, 42)  # 3 reused, 5 missing
    assert not countdown_score("3 + 5", NUMS, 8)  # 7 missing
    assert not countdown_score("3 + 5 + 7 + 1", NUMS, 16)  # extra literal
    assert countdown_score("3 + 3 + 5", [3, 5, 3], 11)  # duplicates in the given numbers


def test_wrong_target_and_division_by_zero():
    assert not countdown_score("3 + 5 + 7", NUMS, 16)
    assert not countdown_score("7 / (5 - 5) + 3", [7, 5, 5, 3], 3)


def test_non_integer_intermediates_are_allowed_and_exact():
    assert countdown_score("(7 / 2) * 4", [7, 2, 4], 14)
    assert not countdown_score("7 / 2", [7, 2], 3)  # exact: 3.5 is not 3


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')",
    "a + 5 + 7",
    "3 ** 5 + 7",
    "-3 + 5 + 7",  # unary minus: rejected by design
    "+3 + 5 + 7",
    "3.0 + 5 + 7",
    "True + 5 + 7",
    "abs(3) + 5 + 7",
    "3 + 5 + 7 if 1 else 0",
    "3 + 5 + 7 = 15",
    "3 // 5 + 7",
    "3 % 5 + 7",
    "(3, 5, 7)",
    "",
    "(" * 400 + "3" + ")" * 400,
])
def test_disallowed_syntax(expr):
    assert not countdown_score(expr, NUMS, 15)


def test_non_string_and_long_input():
    assert not countdown_score(None, NUMS, 15)
    assert not countdown_score("+".join(["1"] * 1000), [1] * 1000, 1000)
