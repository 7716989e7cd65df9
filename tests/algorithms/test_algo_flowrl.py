import math

import pytest
import torch
from _algo_data import make_random_batch
from torch import nn

from reasonrl.algorithms import LogZHead, flowrl_loss, grpo, pool_prompt

D = torch.float64


def _t(x, grad=False):
    return torch.tensor(x, dtype=D, requires_grad=grad)


def _one(old):
    logz = _t([0.5], grad=True)
    logp = _t([[-1.0, -2.0, -50.0]], grad=True)
    ref = _t([[-1.5, -1.5, 0.0]])
    m = _t([[1, 1, 0]])
    return logz, logp, _t([old + [0.0]]), ref, m


def test_flowrl_by_hand_inside_clip():
    logz, logp, old, ref, m = _one([-1.1, -2.0])
    # ā_θ = -1.5, ā_ref = -1.5, β r̂ = 1.5  →  δ = 0.5 - 1.5 - 1.5 + 1.5 = -1 ; w = e^0.1
    loss, met = flowrl_loss(logz, logp, old, ref, m, _t([0.1]))
    assert loss.item() == pytest.approx(math.exp(0.1))
    assert met["w_mean"].item() == pytest.approx(math.exp(0.1))
    assert met["w_clipfrac"].item() == 0.0
    assert met["log_z"].item() == pytest.approx(0.5)
    assert met["logpf"].item() == pytest.approx(-1.5)


@pytest.mark.parametrize("mode,w", [("paper_clip", 1.2), ("none", math.exp(0.5)), ("cap", 1.5)])
def test_flowrl_weight_modes(mode, w):
    logz, logp, old, ref, m = _one([-1.5, -2.0])  # sequence log-ratio Σ(logp-old) = 0.5
    loss, met = flowrl_loss(logz, logp, old, ref, m, _t([0.1]), weight_mode=mode, cap=1.5)
    assert loss.item() == pytest.approx(w)
    assert met["w_mean"].item() == pytest.approx(w)


def test_flowrl_extreme_ratio_is_finite_and_capped():
    logz, logp, _, ref, m = _one([0.0, 0.0])
    old = logp.detach() - 50.0  # log-ratio +50 per token → +100 per sequence
    for mode, w in [("paper_clip", 1.2), ("cap", 10.0), ("none", math.exp(20))]:
        loss, met = flowrl_loss(logz, logp, old, ref, m, _t([0.1]), weight_mode=mode)
        assert torch.isfinite(loss)
        assert met["w_mean"].item() == pytest.approx(w)
    loss, _ = flowrl_loss(logz, logp.bfloat16(), (logp.detach() + 50).bfloat16(), ref.bfloat16(), m, _t([0.1]),
                          weight_mode="none")
    assert torch.isfinite(loss)
    with pytest.raises(ValueError):
        flowrl_loss(logz, logp, old, ref, m, _t([0.1]), weight_mode="clip")


@pytest.mark.parametrize("mode", ["paper_clip", "none", "cap"])
def test_flowrl_gradients_match_closed_form(mode):
    b = make_random_batch()
    rhat, _ = grpo(b.scores, b.group_ids, b.mask)
    rhat = rhat.sum(1) / b.mask.sum(1).clamp_min(1)
    logz = torch.randn(12, dtype=D, requires_grad=True)
    logp = b.logp.clone().requires_grad_()
    old = b.logp + 0.02 * torch.randn(12, 16, dtype=D)
    loss, _ = flowrl_loss(logz, logp, old, b.ref_logp, b.mask, rhat, beta=15.0, weight_mode=mode)
    g_z, g_p = torch.autograd.grad(loss, (logz, logp))

    L = b.mask.sum(1)
    keep = L > 0
    N = keep.sum()
    a_t = (b.logp * b.mask).sum(1) / L.clamp_min(1)
    a_r = (b.ref_logp * b.mask).sum(1) / L.clamp_min(1)
    delta = logz.detach() + a_t - 15.0 * rhat - a_r
    lw = ((b.logp - old) * b.mask).sum(1)
    w = {"paper_clip": lw.exp().clamp(0.8, 1.2), "none": lw.exp(), "cap": lw.exp().clamp(max=10.0)}[mode]
    torch.testing.assert_close(loss.detach(), (w * delta**2)[keep].sum() / N)
    exp_z = torch.where(keep, 2 * w * delta / N, 0.0)
    exp_p = (2 * w * delta / N / L.clamp_min(1)).unsqueeze(1) * b.mask
    torch.testing.assert_close(g_z, exp_z)
    torch.testing.assert_close(g_p, exp_p)
    assert g_z[0] == 0  # empty response excluded from the mean


def test_flowrl_all_equal_group_gives_nonzero_loss():
    b = make_random_batch()
    rhat, _ = grpo(b.scores, b.group_ids, b.mask)
    rhat = rhat.sum(1)
    rows = slice(4, 8)  # uid 1: all rewards 1 → r̂ = 0
    assert torch.equal(rhat[rows], torch.zeros(4, dtype=D))
    logz = torch.zeros(4, dtype=D, requires_grad=True)
    loss, _ = flowrl_loss(logz, b.logp[rows], b.logp[rows], b.ref_logp[rows], b.mask[rows], rhat[rows])
    m = b.mask[rows]
    gap = ((b.logp[rows] - b.ref_logp[rows]) * m).sum(1) / m.sum(1)
    assert loss.item() == pytest.approx((gap**2).mean().item())
    assert loss.item() > 0
    loss.backward()
    assert logz.grad.abs().sum() > 0


def test_flowrl_empty_responses():
    logz = _t([0.2, -0.3], grad=True)
    logp = _t([[-1.0, -1.0], [-7.0, -7.0]])
    ref = _t([[-2.0, -2.0], [0.0, 0.0]])
    m = _t([[1, 1], [0, 0]])
    rhat = _t([0.0, 0.1])
    # drop_empty: only row 0, δ = 0.2 - 1 + 2 = 1.2
    loss, met = flowrl_loss(logz, logp, logp, ref, m, rhat)
    assert loss.item() == pytest.approx(1.44)
    assert met["empty_frac"].item() == 0.5
    # kept: row 1 has δ = log Z − β r̂ = -0.3 - 1.5 = -1.8, w = 1
    loss_all, _ = flowrl_loss(logz, logp, logp, ref, m, rhat, drop_empty=False)
    assert loss_all.item() == pytest.approx((1.44 + 3.24) / 2)
    # all empty → 0 with a defined gradient
    loss0, _ = flowrl_loss(logz, logp, logp, ref, torch.zeros_like(m), rhat)
    loss0.backward()
    assert loss0.item() == 0.0 and torch.equal(logz.grad, torch.zeros(2, dtype=D))


def test_flowrl_token_rhat_and_num_seqs():
    b = make_random_batch()
    adv, _ = grpo(b.scores, b.group_ids, b.mask)
    logz = torch.zeros(12, dtype=D)
    l_tok, _ = flowrl_loss(logz, b.logp, b.old_logp, b.ref_logp, b.mask, adv)
    l_seq, _ = flowrl_loss(logz, b.logp, b.old_logp, b.ref_logp, b.mask, adv.sum(1) / b.mask.sum(1).clamp_min(1))
    torch.testing.assert_close(l_tok, l_seq)
    parts = sum(flowrl_loss(logz[s], b.logp[s], b.old_logp[s], b.ref_logp[s], b.mask[s], adv[s], num_seqs=11)[0]
                for s in (slice(0, 5), slice(5, 12)))
    torch.testing.assert_close(parts, l_tok)


def test_logz_head_structure_and_backbone_gradient():
    head = LogZHead(8)
    kinds = [type(x) for x in head.net]
    block = [nn.Linear, nn.GELU, nn.LayerNorm, nn.Dropout]
    assert kinds == block * 2 + [nn.Linear]
    assert head.net[3].p == 0.1
    assert [type(x) for x in LogZHead(8, num_layers=1).net] == [nn.Linear]
    hidden = torch.randn(3, 5, 8, requires_grad=True)
    pm = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    out = head(LogZHead.pool_prompt(hidden, pm))
    assert out.shape == (3,)
    out.sum().backward()
    assert hidden.grad[0, 0].abs().sum() == 0 and hidden.grad[0, 1].abs().sum() > 0


def test_pool_prompt_by_hand():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    pm = torch.tensor([[0, 1, 1]])
    torch.testing.assert_close(pool_prompt(h, pm), torch.tensor([[4.0, 5.0]]))
    torch.testing.assert_close(pool_prompt(h, pm, exclude_last=True), torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(pool_prompt(h, torch.zeros(1, 3)), torch.zeros(1, 2))
