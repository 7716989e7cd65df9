import math

import pytest
import torch
from _algo_data import make_random_batch

from reasonrl.algorithms import (
    AdaptiveKL,
    FixedKL,
    entropy_bonus,
    gspo_loss,
    kl_in_reward,
    kl_penalty,
    ppo_clip_loss,
    sft_nll,
    value_loss,
)

D = torch.float64


def _t(x, grad=False):
    return torch.tensor(x, dtype=D, requires_grad=grad)


# ------------------------------------------------------------------ PPO


def test_ppo_clip_by_hand():
    old = _t([[0.0, 0.0, 0.0, 0.0, 0.0]])
    logp = _t([[math.log(2), math.log(0.5), 0.0, math.log(1.1), 7.0]], grad=True)
    adv = _t([[1.0, 1.0, -1.0, -1.0, 5.0]])
    m = _t([[1, 1, 1, 1, 0]])  # last token is padding with a wild ratio
    loss, met = ppo_clip_loss(logp, old, adv, m)
    # per token: max(-Aρ, -A clip(ρ)) = -1.2 (clipped), -0.5, 1, 1.1
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1 + 1.1) / 4)
    assert met["clipfrac"].item() == pytest.approx(0.25)
    assert met["clipfrac_lower"].item() == 0.0
    assert met["approx_kl"].item() == pytest.approx(-math.log(1.1) / 4)
    loss.backward()
    # d/dlogp of -Aρ is -Aρ on unclipped tokens, 0 on the clipped one and on padding
    torch.testing.assert_close(logp.grad, _t([[0.0, -0.5, 1.0, 1.1, 0.0]]) / 4)


def test_ppo_clip_higher():
    old = _t([[0.0]])
    logp = _t([[math.log(1.25)]])
    adv, m = _t([[1.0]]), _t([[1.0]])
    assert ppo_clip_loss(logp, old, adv, m)[0].item() == pytest.approx(-1.2)
    assert ppo_clip_loss(logp, old, adv, m, clip_high=0.28)[0].item() == pytest.approx(-1.25)


def test_ppo_dual_clip_extreme_ratio():
    old = _t([[0.0, 0.0, 0.0]])
    logp = _t([[50.0, 50.0, 50.0]], grad=True)
    adv = _t([[-1.0, -2.0, 1.0]])
    m = _t([[1, 1, 1]])
    loss, met = ppo_clip_loss(logp, old, adv, m, clip_c=3.0, agg="seq-mean-token-sum")
    # A<0: bounded by -A·c = 3 and 6; A>0 with huge ratio: clipped at -(1+ε)
    assert loss.item() == pytest.approx(3 + 6 - 1.2)
    assert met["clipfrac_lower"].item() == pytest.approx(2 / 3)
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros_like(logp))
    # without dual-clip the A<0 loss is the clamped ratio e^20, finite
    loss2, _ = ppo_clip_loss(logp, old, adv, m, agg="seq-mean-token-sum")
    assert loss2.item() == pytest.approx(3 * math.exp(20) - 1.2)
    with pytest.raises(ValueError):
        ppo_clip_loss(logp, old, adv, m, clip_c=1.0)


def test_ppo_extreme_negative_ratio_is_finite():
    old = _t([[0.0, 0.0]])
    logp = _t([[-50.0, -50.0]], grad=True)
    adv = _t([[1.0, -1.0]])
    loss, _ = ppo_clip_loss(logp, old, adv, _t([[1, 1]]), clip_c=3.0)
    # A>0: max(-e^-20, -0.8) = -e^-20 ; A<0: max(e^-20, 0.8) = 0.8 (clipped)
    assert loss.item() == pytest.approx((-math.exp(-20) + 0.8) / 2)
    loss.backward()
    assert torch.isfinite(logp.grad).all()


def test_ppo_is_weights_and_random_batch_agrees_with_loop():
    b = make_random_batch()
    adv = torch.randn(12, 16, dtype=D)
    w = torch.rand(12, 16, dtype=D)
    loss, met = ppo_clip_loss(b.logp, b.old_logp, adv, b.mask, clip_low=0.2, clip_high=0.28, clip_c=3.0,
                              is_weights=w)
    tot, n, nclip = 0.0, 0, 0
    for i in range(12):
        for t in range(16):
            if not b.mask[i, t]:
                continue
            rho = math.exp(b.logp[i, t].item() - b.old_logp[i, t].item())
            a = adv[i, t].item()
            l1, l2 = -a * rho, -a * min(max(rho, 0.8), 1.28)
            lc = max(l1, l2)
            if a < 0:
                lc = min(lc, -3 * a)
            tot += lc * w[i, t].item()
            n += 1
            nclip += l2 > l1
    assert loss.item() == pytest.approx(tot / n, rel=1e-12)
    assert met["clipfrac"].item() == pytest.approx(nclip / n, rel=1e-6)


# ------------------------------------------------------------------ GSPO


def test_gspo_by_hand():
    old = _t([[0.0, 0.0, 0.0]])
    logp = _t([[0.1, 0.3, 9.0]], grad=True)
    m = _t([[1, 1, 0]])
    adv = _t([[1.0, 1.0, 1.0]])
    loss, met = gspo_loss(logp, old, adv, m)  # s = e^0.2 far outside [1-3e-4, 1+4e-4]
    assert loss.item() == pytest.approx(-(1 + 4e-4))
    assert met["clipfrac"].item() == 1.0
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros_like(logp))
    logp.grad = None
    loss, _ = gspo_loss(logp, old, adv, m, clip_low=0.5, clip_high=0.5)
    assert loss.item() == pytest.approx(-math.exp(0.2))
    loss.backward()
    torch.testing.assert_close(logp.grad, _t([[-math.exp(0.2) / 2, -math.exp(0.2) / 2, 0.0]]))


def test_gspo_token_trick_equals_sequence_objective():
    b = make_random_batch()
    a_seq = torch.randn(12, dtype=D)
    adv = a_seq.unsqueeze(1).expand(12, 16)
    lp1 = b.logp.clone().requires_grad_()
    loss, _ = gspo_loss(lp1, b.old_logp, adv, b.mask, clip_low=10.0, clip_high=10.0)
    (g1,) = torch.autograd.grad(loss, lp1)
    lp2 = b.logp.clone().requires_grad_()
    L = b.mask.sum(1)
    s = torch.exp(((lp2 - b.old_logp) * b.mask).sum(1) / L.clamp_min(1))
    keep = L > 0
    ref = -(a_seq * s)[keep].mean()
    (g2,) = torch.autograd.grad(ref, lp2)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(g1, g2)


# ------------------------------------------------------------------ SFT, value, entropy


def test_sft_nll_by_hand():
    logp = _t([[-1.0, -2.0, -3.0, -100.0], [-4.0, 0, 0, 0]])
    m = _t([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert sft_nll(logp, m).item() == pytest.approx(10 / 4)
    assert sft_nll(logp, m, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)


def test_value_loss_by_hand():
    vpred = _t([[1.0, 1.9, 0.2, 5.0]], grad=True)
    ret = _t([[0.0, 1.8, 2.0, 0.0]])
    old = _t([[0.8, 1.0, 1.0, 0.0]])
    m = _t([[1, 1, 1, 0]])
    loss, met = value_loss(vpred, ret, old, m, clip=0.5)
    # tokens: max(1, 1) = 1 ; max(0.01, 0.09) = 0.09 (clipped branch) ; max(3.24, 2.25) = 3.24
    assert loss.item() == pytest.approx(0.5 * (1 + 0.09 + 3.24) / 3)
    assert met["vf_clipfrac"].item() == pytest.approx(1 / 3)
    loss.backward()
    # clipped branch at token 1 is flat in vpred (outside the clip range)
    torch.testing.assert_close(vpred.grad, _t([[1.0, 0.0, -1.8, 0.0]]) / 3)
    loss_nc, _ = value_loss(vpred, ret, old, m, clip=None)
    assert loss_nc.item() == pytest.approx(0.5 * (1 + 0.01 + 3.24) / 3)


def test_entropy_bonus():
    h = _t([[1.0, 2.0, 9.0], [3.0, 0.0, 0.0]])
    m = _t([[1, 1, 0], [1, 0, 0]])
    assert entropy_bonus(h, m).item() == pytest.approx(2.0)
    assert entropy_bonus(h, m, "seq-mean-token-mean").item() == pytest.approx((1.5 + 3) / 2)


# ------------------------------------------------------------------ KL


def test_kl_estimators_by_hand():
    ref = _t([0.0, 0.0, 0.0, 0.0])
    logp = _t([0.5, -0.5, 30.0, -30.0])
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), logp)
    torch.testing.assert_close(kl_penalty(logp, ref, "kl"), logp)
    torch.testing.assert_close(kl_penalty(logp, ref, "abs"), logp.abs())
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), _t([0.125, 0.125, 450.0, 450.0]))
    torch.testing.assert_close(kl_penalty(logp, ref, "mse"), _t([0.125, 0.125, 450.0, 450.0]))
    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(0.5) - 0.5 - 1, 10.0, 10.0]  # both extremes hit the ±10 clamp
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), _t(k3))
    torch.testing.assert_close(kl_penalty(logp, ref, "low_var_kl"), _t(k3))
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "k4")
    with pytest.raises(NotImplementedError):
        kl_penalty(logp, ref, "full")


def test_k3_clamp_keeps_values_finite_and_bounded():
    d = torch.linspace(-60, 60, 241, dtype=D)
    k3 = kl_penalty(d, torch.zeros_like(d), "k3")
    assert torch.isfinite(k3).all() and k3.max() == 10.0 and k3.min() >= 0


@pytest.mark.parametrize("kind", ["k1+", "k3+", "low_var_kl+", "abs+"])
def test_straight_through_kl_has_base_value_and_k2_gradient(kind):
    ref = _t([0.3, -0.2, 0.0, 1.0])
    logp = _t([0.5, -0.5, 2.0, -3.0], grad=True)
    out = kl_penalty(logp, ref, kind)
    torch.testing.assert_close(out, kl_penalty(logp, ref, kind[:-1]).detach())
    (g,) = torch.autograd.grad(out.sum(), logp)
    torch.testing.assert_close(g, (logp - ref).detach())  # ∂(½d²)/∂logp = d


def test_kl_in_reward_by_hand():
    r = _t([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    old = _t([[0.1, 0.2, -0.1, 5.0], [1.0, 1.0, 1.0, 1.0]])
    ref = torch.zeros(2, 4, dtype=D)
    m = _t([[1, 1, 1, 0], [0, 0, 0, 0]])
    r2, kl = kl_in_reward(r, old, ref, m, coef=0.5, kind="kl")
    torch.testing.assert_close(r2, _t([[-0.05, -0.1, 1.05, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    assert kl.item() == pytest.approx((0.2 / 3 + 0.0) / 2, rel=1e-6)


def test_kl_controllers():
    f = FixedKL(0.01)
    f.update(5.0, 100)
    assert f.value == 0.01
    a = AdaptiveKL(init=0.001, target=0.1, horizon=10000)
    a.update(0.15, 256)  # error 0.5 clipped to 0.2
    assert a.value == pytest.approx(0.001 * (1 + 0.2 * 256 / 10000))
    v = a.value
    a.update(0.09, 100)  # error -0.1
    assert a.value == pytest.approx(v * (1 - 0.1 * 100 / 10000))
    b = AdaptiveKL()
    b.load_state_dict(a.state_dict())
    assert b.value == a.value and b.target == a.target and b.horizon == a.horizon
    g = FixedKL()
    g.load_state_dict(f.state_dict())
    assert g.value == 0.01
