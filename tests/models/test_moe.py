"""Top-k MoE routing, router losses, capacity/drop and the stage-1/stage-2 gradient paths."""

import math

import pytest
import torch

from reasonrl.models.moe import (MoELayer, Router, apply_capacity, capacity_for, class_weights, expert_usage,
                                 focal_loss, load_balance_loss, route)


def test_topk_weights_sum_to_one_and_pick_the_largest():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 2.9, -5.0]])
    r = route(logits, k=2, temperature=0.5)
    assert torch.allclose(r.weights.sum(-1), torch.ones(2))
    assert (r.weights != 0).sum(-1).tolist() == [2, 2]
    assert r.idx.tolist() == [[0, 1], [1, 2]]
    # hand computation, row 0: softmax(z / 0.5) over the top-2 renormalised = sigmoid((2 - 1) / 0.5)
    assert r.weights[0, 0].item() == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)
    rk = route(torch.randn(16, 7), k=3, mode="gumbel", generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rk.weights.sum(-1), torch.ones(16), atol=1e-6)


def test_bad_k_and_mode_are_refused():
    with pytest.raises(ValueError, match="top-k"):
        route(torch.zeros(2, 3), k=4)
    with pytest.raises(ValueError, match="unknown"):
        route(torch.zeros(2, 3), mode="soft")
    with pytest.raises(ValueError, match="labels"):
        route(torch.zeros(2, 3), mode="teacher")


def _layer():
    torch.manual_seed(0)
    return MoELayer(d=8, hidden=16, n_experts=4, k=1, n_shared=1)


def test_teacher_path_gives_router_no_gradient_gumbel_path_does():
    layer = _layer()
    x = torch.randn(6, 5, 8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    # stage 1: the task loss through teacher-forced routing leaves the router untouched
    y, r = layer.forward_routed(x, mode="teacher", labels=labels)
    y.pow(2).mean().backward()
    assert layer.router.proj.weight.grad is None or layer.router.proj.weight.grad.abs().sum() == 0
    assert all(e.up.weight.grad is not None for e in layer.experts)  # every labelled expert trained
    # ... while its supervised loss reaches it
    focal_loss(r.logits, labels).backward()
    assert layer.router.proj.weight.grad.abs().sum() > 0
    # stage 2: hard Gumbel straight-through: one expert's value, gradient into the router
    layer.zero_grad()
    y, r = layer.forward_routed(x, mode="gumbel", generator=torch.Generator().manual_seed(1))
    assert torch.allclose(r.weights.detach(), torch.nn.functional.one_hot(r.idx[:, 0], 4).float())
    y.pow(2).mean().backward()
    assert layer.router.proj.weight.grad.abs().sum() > 0


def test_gumbel_forward_equals_the_chosen_expert():
    layer = _layer()
    x = torch.randn(3, 2, 8)
    y, r = layer.forward_routed(x, mode="gumbel", generator=torch.Generator().manual_seed(2))
    for i in range(3):
        e = int(r.idx[i, 0])
        want = layer.experts[e](x[i]) + layer.shared[0](x[i])
        assert torch.allclose(y[i], want, atol=1e-6)


def test_trajectory_router_averages_token_logits_with_mask():
    router = Router(4, 3, learn_temperature=False)
    h = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    z = router(h, mask)
    assert torch.allclose(z[0], router.proj(h[0, :2]).mean(0), atol=1e-6)
    assert router(h, trajectory=False).shape == (2, 5, 3)


def test_capacity_drops_overflow_in_arrival_order():
    logits = torch.tensor([[5.0, 0, 0], [5.0, 0, 0], [5.0, 0, 0], [0, 5.0, 0]])
    r = apply_capacity(route(logits, k=1), capacity=2)
    assert r.dropped[:, 0].tolist() == [False, False, True, False]
    assert r.weights[2].sum() == 0 and r.weights[0].sum() == pytest.approx(1.0)
    assert expert_usage(r)["dropped_frac"] == pytest.approx(0.25)
    assert expert_usage(r)["usage"] == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert capacity_for(8, 2, 4, 1.0) == 4 and capacity_for(8, 2, 4, 0.0) == 16


def test_dropped_rows_get_only_the_shared_expert():
    torch.manual_seed(0)
    layer = MoELayer(d=4, hidden=8, n_experts=2, k=1, n_shared=1, capacity_factor=0.5, trajectory=False)
    with torch.no_grad():
        layer.router.proj.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]))
    x = torch.ones(4, 4)  # all four rows prefer expert 0; capacity = ceil(0.5 * 4 / 2) = 1
    y, r = layer.forward_routed(x)
    assert r.dropped[:, 0].tolist() == [False, True, True, True]
    assert torch.allclose(y[1:], layer.shared[0](x[1:]), atol=1e-6)
    assert not torch.allclose(y[0], layer.shared[0](x[0]))


def test_focal_loss_hand_computed():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]))
    target = torch.tensor([0, 1])
    l0 = -(0.3 ** 2) * math.log(0.7)
    l1 = -(0.75 ** 2) * math.log(0.25)
    assert focal_loss(logits, target).item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    alpha = class_weights([10, 30, 60])  # 1/c normalised: (6, 2, 1) / 9
    assert alpha.tolist() == pytest.approx([6 / 9, 2 / 9, 1 / 9])
    assert focal_loss(logits, target, alpha=alpha).item() == pytest.approx((6 / 9 * l0 + 2 / 9 * l1) / 2, rel=1e-5)
    # tempered: count^-0.5 -> (1, 1/2, 1/4) / 1.75; power 0: uniform
    assert class_weights([1, 4, 16], power=0.5).tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert class_weights([1, 4, 16], power=0).tolist() == pytest.approx([1 / 3] * 3)
    # gamma = 0 is cross-entropy
    assert focal_loss(logits, target, gamma=0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, target).item(), rel=1e-6)


def test_load_balance_is_one_when_balanced_and_larger_when_collapsed():
    balanced = route(torch.eye(4) * 3, k=1)
    collapsed = route(torch.tensor([[3.0, 0, 0, 0]] * 4), k=1)
    assert load_balance_loss(balanced).item() == pytest.approx(1.0, rel=1e-6)
    assert load_balance_loss(collapsed).item() > 2.0


def test_sparse_dispatch_runs_only_routed_experts():
    layer = _layer()
    calls = [0] * 4
    for i, e in enumerate(layer.experts):
        e.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + a[0].shape[0]))
    layer.forward_routed(torch.randn(3, 2, 8), mode="teacher", labels=torch.tensor([2, 2, 0]))
    assert calls == [1, 0, 2, 0]
