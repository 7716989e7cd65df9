"""The train/inference mismatch metric, on hand-computed numbers."""

import math

import torch

from reasonrl.rollout.mismatch import MismatchMeter, logp_mismatch


def test_hand_computed_mismatch():
    ro = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, 0.0, 0.0]])
    le = torch.tensor([[-1.5, -2.0, -2.0], [-0.25, -9.0, -9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    m = logp_mismatch(ro, le, mask)
    # masked-in diffs: 0.5, 0, -1, -0.25 -> mean |d| = 1.75/4, max 1, mean d = -0.75/4
    assert m == {"rollout/logp_mismatch_mean": 1.75 / 4, "rollout/logp_mismatch_max": 1.0,
                 "rollout/logp_mismatch_k1": -0.75 / 4}
    meter = MismatchMeter()
    meter.add(ro[:1], le[:1], mask[:1])
    meter.add(ro[1:], le[1:], mask[1:])
    meter.add(ro, le, torch.zeros_like(mask))  # an empty micro-batch changes nothing
    assert meter.metrics() == m


def test_empty_inputs():
    z = torch.zeros(2, 0)
    assert all(math.isnan(v) for v in logp_mismatch(z, z, z).values())
    assert MismatchMeter().metrics() == {}


def test_learner_grad_is_not_touched():
    le = torch.tensor([[-1.0]], requires_grad=True)
    meter = MismatchMeter()
    meter.add(torch.tensor([[-1.25]]), le, torch.ones(1, 1))
    assert meter.metrics()["rollout/logp_mismatch_mean"] == 0.25 and le.grad is None
