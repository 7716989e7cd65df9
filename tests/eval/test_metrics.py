"""Eval metrics against hand values and brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import pytest

from reasonrl.eval.metrics import (
    binomial_stderr,
    distinct_correct,
    maj_at_k,
    mean_ci,
    mean_pass_at_k,
    pass_at_k,
    wilson_interval,
)


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (5, 2, 1, 0.4),  # c/n
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 0, 3, 0.0),
        (5, 5, 3, 1.0),
        (5, 1, 5, 1.0),  # k = n: any correct sample is always drawn
        (5, 0, 5, 0.0),
        (10, 3, 4, 1 - math.comb(7, 4) / math.comb(10, 4)),
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_brute_force_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_stable_for_large_n():
    # math.comb(1000, 500) is far beyond float range; the product form must still work.
    v = pass_at_k(1000, 10, 500)
    exact = 1 - math.comb(990, 500) / math.comb(1000, 500)  # exact rational via ints
    assert v == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("n,c,k", [(3, 1, 4), (0, 0, 1), (3, 4, 1), (3, -1, 1), (3, 1, 0)])
def test_pass_at_k_rejects_bad_input(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k():
    correct = [[True, False, True, False, False], [False] * 5, [True] * 3]
    assert mean_pass_at_k(correct, 1) == pytest.approx((0.4 + 0 + 1) / 3)
    assert mean_pass_at_k(correct, 2) == pytest.approx((0.7 + 0 + 1) / 3)
    with pytest.raises(ValueError):
        mean_pass_at_k(correct, 4)  # third problem has only 3 samples
    with pytest.raises(ValueError):
        mean_pass_at_k([], 1)


def test_maj_at_k_basic_and_only_first_k():
    answers = [["3", "4", "3", "4", "4"]]
    ok = [[True, False, True, False, False]]
    assert maj_at_k(answers, ok, 3) == 1.0  # "3" wins 2-1
    assert maj_at_k(answers, ok, 5) == 0.0  # "4" wins 3-2


def test_maj_at_k_tie_goes_to_first_occurrence():
    answers = [["7", "5", "5", "7"], ["5", "7", "7", "5"]]
    ok = [[False, True, True, False], [True, False, False, True]]
    # Problem 0: tie 2-2, "7" occurs first -> wrong. Problem 1: "5" first -> right.
    assert maj_at_k(answers, ok, 4) == 0.5


def test_maj_at_k_none_does_not_vote():
    answers = [[None, None, "2", None], [None, None, None]]
    ok = [[False, False, True, False], [False, False, False]]
    assert maj_at_k([answers[0]], [ok[0]], 4) == 1.0  # single real vote beats three Nones
    assert maj_at_k([answers[1]], [ok[1]], 3) == 0.0  # nothing extracted -> unsolved
    assert maj_at_k(answers, ok, 3) == 0.5


def test_maj_at_k_rejects_mismatch_and_short_rows():
    with pytest.raises(ValueError):
        maj_at_k([["1"]], [[True, False]], 1)
    with pytest.raises(ValueError):
        maj_at_k([["1"]], [[True]], 2)
    with pytest.raises(ValueError):
        maj_at_k([["1"]], [], 1)


def test_distinct_correct_normalises_whitespace():
    responses = [["x = 2", "x  =\n2 ", "x=2", "wrong"], ["a", "b"]]
    correct = [[True, True, True, False], [False, False]]
    # problem 0: {"x = 2", "x=2"} -> 2 ; problem 1: 0
    assert distinct_correct(responses, correct) == 1.0


def test_binomial_stderr():
    assert binomial_stderr(0.5, 100) == pytest.approx(0.05)
    assert binomial_stderr(0.0, 10) == 0.0
    with pytest.raises(ValueError):
        binomial_stderr(0.5, 0)


def test_wilson_interval_hand_value():
    # 8/10, z=1.96: centre = (0.8 + 1.9208/10) / 1.38416 = 0.71674,
    # half = 1.96/1.38416 * sqrt(0.016 + 0.009604) = 0.22658.
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.71674 - 0.22658, abs=1e-4)
    assert hi == pytest.approx(0.71674 + 0.22658, abs=1e-4)
    lo0, hi0 = wilson_interval(0, 20)
    assert lo0 == 0.0 and 0.0 < hi0 < 0.2  # non-degenerate at p = 0, unlike Wald
    lo1, hi1 = wilson_interval(20, 20)
    assert hi1 == 1.0 and 0.8 < lo1 < 1.0


def test_mean_ci():
    mean, half = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert half == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)
    mean1, half1 = mean_ci([0.7])
    assert mean1 == 0.7 and math.isnan(half1)
    with pytest.raises(ValueError):
        mean_ci([])


def test_sign_test_and_paired_comparison():
    from reasonrl.eval.metrics import paired_comparison, sign_test_p

    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(3, 0) == 0.25  # 2 * (1/8)
    assert sign_test_p(4, 1) == 0.375  # n=5: 2 * (C(5,0) + C(5,1)) / 32
    assert 0.0045 < sign_test_p(73, 42) < 0.0055  # continuity-corrected normal approximation: 0.0051
    assert sign_test_p(5, 5) == 1.0
    r = paired_comparison([True, False, False, True], [True, True, True, False], "x")
    assert (r["x_fixed"], r["x_broke"]) == (2, 1)
