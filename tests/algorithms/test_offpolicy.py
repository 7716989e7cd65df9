"""Truncated importance sampling for async rollouts: hand-computed weights and the gradient seam."""

import math

import pytest
import torch

from reasonrl.algorithms.losses import ppo_clip_loss, sft_nll
from reasonrl.algorithms.offpolicy import reweight_token_grads, truncated_is_log_weights


def test_truncated_weights_hand_computed():
    old = torch.log(torch.tensor([[0.5, 0.2, 0.9, 0.7]]))
    rollout = torch.log(torch.tensor([[0.25, 0.4, 0.3, 0.1]]))
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # last token is padding: weight 1 (log 0), not counted
    logw, m = truncated_is_log_weights(old, rollout, mask, cap=2.5)
    # ratios 2.0, 0.5, 3.0 -> truncated at 2.5
    assert torch.allclose(logw.exp(), torch.tensor([[2.0, 0.5, 2.5, 1.0]]), atol=1e-6)
    assert m["offpolicy/is_weight_mean"] == pytest.approx((2.0 + 0.5 + 2.5) / 3, abs=1e-6)
    assert m["offpolicy/is_capped_frac"] == pytest.approx(1 / 3)
    k3 = [r - 1 - math.log(r) for r in (2.0, 0.5, 3.0)]
    assert m["offpolicy/kl_rollout_old"] == pytest.approx(sum(k3) / 3, abs=1e-6)


def test_on_policy_weights_are_one_and_empty_mask_is_nan():
    lp = torch.randn(2, 3)
    logw, m = truncated_is_log_weights(lp, lp.clone(), torch.ones(2, 3), cap=2.0)
    assert torch.equal(logw, torch.zeros(2, 3)) and m["offpolicy/is_capped_frac"] == 0.0
    logw, m = truncated_is_log_weights(lp, lp + 1, torch.zeros(2, 3), cap=2.0)
    assert torch.equal(logw, torch.zeros(2, 3)) and math.isnan(m["offpolicy/is_weight_mean"])
    with pytest.raises(ValueError, match="cap"):
        truncated_is_log_weights(lp, lp, torch.ones(2, 3), cap=0.0)
    with pytest.raises(ValueError, match="shape"):
        truncated_is_log_weights(lp, lp[:, :2], torch.ones(2, 3), cap=2.0)


def test_reweighted_grads_equal_weighted_ppo_loss():
    """The algorithm-blind seam gives exactly the gradient of the loss with is_weights multiplied in."""
    torch.manual_seed(0)
    base = torch.randn(3, 5, dtype=torch.float64)
    old = base + 0.1 * torch.randn(3, 5, dtype=torch.float64)
    adv = torch.randn(3, 1, dtype=torch.float64).expand(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.float64)
    w = torch.tensor([0.5, 2.0, 1.0, 1.5, 0.25], dtype=torch.float64).expand(3, 5)
    for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        a = base.clone().requires_grad_()
        la, _ = ppo_clip_loss(a, old, adv, mask, 0.2, 0.28, agg=agg, is_weights=w, loss_scale_factor=5.0)
        la.backward()
        b = base.clone().requires_grad_()
        bb = reweight_token_grads(b, w)
        assert torch.equal(bb.detach(), base)  # value untouched
        lb, _ = ppo_clip_loss(bb, old, adv, mask, 0.2, 0.28, agg=agg, loss_scale_factor=5.0)
        lb.backward()
        assert torch.allclose(a.grad, b.grad, atol=1e-12), agg
    c = base.clone().requires_grad_()
    sft_nll(reweight_token_grads(c, w), mask).backward()
    # d/dlogp of token-mean NLL is -1/N per masked token, times the weight
    assert torch.allclose(c.grad, -w * mask / mask.sum())
