import math

import pytest
import torch
from _algo_data import make_random_batch

from reasonrl.algorithms import (
    group_std,
    hpt_soft_coefficients,
    hpt_switch,
    keep_mixed_groups,
    zero_variance_groups,
)

# ------------------------------------------------------------------ HPT


@pytest.mark.parametrize("gamma,expect", [
    (0, [True] + [False] * 8),           # Qwen: SFT only when every rollout failed
    (2, [True] * 3 + [False] * 6),       # LLaMA-3.1-8B: SFT when ≤ 2 of 8 solved
])
def test_hpt_switch(gamma, expect):
    assert hpt_switch(torch.arange(9), gamma).tolist() == expect


def test_hpt_switch_rejects_fractional_gate():
    with pytest.raises(ValueError):
        hpt_switch(torch.arange(9), 0.25)


def test_hpt_soft_type1():
    on, off, sft = hpt_soft_coefficients(torch.tensor([1, 2, 3, 4, 5, 8]), n=8)
    assert on.tolist() == [0.0, 0.125, 0.25, 0.5, 1.0, 1.0]
    assert off.tolist() == [1.0] * 6
    assert sft.tolist() == [1.0, 0.5, 0.25, 0.125, 0.0, 0.0]
    on, off, sft = hpt_soft_coefficients(torch.tensor([2, 5]), n=8, table="type3")
    assert (on.tolist(), off.tolist(), sft.tolist()) == ([0.125, 1.0], [0.5, 0.25], [0.5, 0.0])


def test_hpt_soft_rejects_bad_inputs():
    with pytest.raises(ValueError):
        hpt_soft_coefficients(torch.tensor([1]), n=16)
    with pytest.raises(ValueError):
        hpt_soft_coefficients(torch.tensor([9]), n=8)
    with pytest.raises(ValueError):
        hpt_soft_coefficients(torch.tensor([1]), n=8, table="type9")


# ------------------------------------------------------------------ filters

S = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 5.0, 0.3, 0.3])
G = torch.tensor([0, 0, 0, 1, 1, 1, 2, 3, 3])


def test_zero_variance_groups_by_hand():
    # group 0 all 1, group 1 mixed, group 2 singleton (kept), group 3 all 0.3 (exact test)
    assert zero_variance_groups(S, G).tolist() == [True] * 3 + [False] * 4 + [True] * 2
    assert keep_mixed_groups(S, G).tolist() == [3, 4, 5, 6]
    assert keep_mixed_groups(S, G).dtype == torch.long


def test_group_std_by_hand():
    std = group_std(S, G)
    assert std.tolist() == pytest.approx([0, 0, 0] + [math.sqrt(2 / 9)] * 3 + [0, 0, 0])
    assert group_std(S, G, unbiased=True)[3].item() == pytest.approx(math.sqrt(1 / 3))


def test_filters_on_random_batch():
    b = make_random_batch()
    assert keep_mixed_groups(b.scores, b.group_ids).tolist() == [8, 9, 10, 11]
