import math
import statistics

import pytest
import torch
from _algo_data import make_random_batch

from reasonrl.algorithms import (
    dapo_overlong_penalty,
    entropy_shaped,
    gae,
    grpo,
    reinforce_pp,
    reinforce_pp_baseline,
    rloo,
)

D = torch.float64


def _close(a, b, atol=1e-10):
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=a.dtype), rtol=0, atol=atol)


def _whiten_list(vals):
    """veRL whitening written out: means with the +1e-8 denominator, Bessel factor n/(n-1)."""
    n = len(vals)
    mu = sum(vals) / (n + 1e-8)
    var = sum((v - mu) ** 2 for v in vals) / (n + 1e-8) * n / (n - 1)
    return [(v - mu) / math.sqrt(var + 1e-8) for v in vals]


# ------------------------------------------------------------------ GAE


def test_gae_by_hand_with_interior_mask():
    r = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1]], dtype=D)
    v = torch.tensor([[0.5, 0.2, 0.4, math.inf], [0.1, 7.0, 0.3, 0.6]], dtype=D)  # inf on padding is ignored
    m = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 1]], dtype=D)
    adv, ret = gae(r, v, m, gamma=0.9, lam=0.8, whiten=False)
    raw = [[0.10624, 0.592, 0.6, 0.0], [0.55016, 0.0, 0.528, 0.4]]
    _close(adv, raw)
    _close(ret, [[0.60624, 0.792, 1.0, 0.0], [0.65016, 0.0, 0.828, 1.0]])
    adv_w, ret_w = gae(r, v, m, gamma=0.9, lam=0.8)
    _close(ret_w, ret)
    valid = [0.10624, 0.592, 0.6, 0.55016, 0.528, 0.4]
    w = _whiten_list(valid)
    _close(adv_w, [[w[0], w[1], w[2], 0.0], [w[3], 0.0, w[4], w[5]]])


def _loop_gae(r, v, m, gamma, lam):
    B, T = r.shape
    out = [[0.0] * T for _ in range(B)]
    for i in range(B):
        valid = [t for t in range(T) if m[i, t]]
        nv, na = 0.0, 0.0
        for t in reversed(valid):
            delta = r[i, t].item() + gamma * nv - v[i, t].item()
            na = delta + gamma * lam * na
            nv = v[i, t].item()
            out[i][t] = na
    return out


def test_gae_matches_loop_on_random_batch():
    b = make_random_batch()
    adv, ret = gae(b.token_rewards, b.values, b.mask, gamma=0.95, lam=0.9)
    raw = _loop_gae(b.token_rewards, b.values, b.mask, 0.95, 0.9)
    flat = [raw[i][t] for i in range(12) for t in range(16) if b.mask[i, t]]
    w = iter(_whiten_list(flat))
    expect = [[next(w) if b.mask[i, t] else 0.0 for t in range(16)] for i in range(12)]
    _close(adv, expect, atol=1e-9)
    _close(ret, (torch.tensor(raw, dtype=D) + b.values) * b.mask, atol=1e-9)


def test_gae_all_masked_gives_zeros():
    z = torch.zeros(2, 3, dtype=D)
    adv, ret = gae(torch.ones(2, 3, dtype=D), torch.ones(2, 3, dtype=D), z)
    assert torch.equal(adv, z) and torch.equal(ret, z)


# ------------------------------------------------------------------ GRPO / Dr.GRPO / RLOO


S = torch.tensor([1.0, 0.0, 1.0, 3.0], dtype=D)
G = torch.tensor([7, 7, 7, 9])
M4 = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=D)  # row 2 empty


def test_grpo_by_hand():
    adv, ret = grpo(S, G, M4)
    sd = math.sqrt(1 / 3) + 1e-6
    expect = [[1 / 3 / sd] * 2 + [0], [-2 / 3 / sd, 0, 0], [0, 0, 0], [3.0] * 3]  # singleton → raw score
    _close(adv, expect)
    assert torch.equal(adv, ret)
    adv_dr, _ = grpo(S, G, M4, norm_by_std=False)
    _close(adv_dr, [[1 / 3, 1 / 3, 0], [-2 / 3, 0, 0], [0, 0, 0], [3.0] * 3])


def test_grpo_accepts_token_rewards():
    tr = torch.zeros(4, 3, dtype=D)
    tr[0, 1], tr[1, 0], tr[3, 2] = 1.0, 0.0, 3.0
    tr[2, 0] = 1.0
    torch.testing.assert_close(grpo(tr, G, M4)[0], grpo(S, G, M4)[0])


@pytest.mark.parametrize("fn", [grpo, rloo])
def test_all_equal_group_is_exactly_zero(fn):
    s = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7], dtype=torch.float32)
    g = torch.tensor([0, 0, 0, 1, 1])
    adv, _ = fn(s, g, torch.ones(5, 2))
    assert torch.equal(adv, torch.zeros(5, 2))
    assert adv.dtype == torch.float32


def test_rloo_by_hand():
    adv, ret = rloo(S, G, M4)
    _close(adv, [[0.5, 0.5, 0], [-1.0, 0, 0], [0, 0, 0], [3.0] * 3])
    assert torch.equal(adv, ret)


def _groups(b):
    out = {}
    for i, g in enumerate(b.group_ids.tolist()):
        out.setdefault(g, []).append(i)
    return out


@pytest.mark.parametrize("norm", [True, False])
def test_grpo_matches_loop_on_random_batch(norm):
    b = make_random_batch()
    adv, _ = grpo(b.token_rewards, b.group_ids, b.mask, norm_by_std=norm)
    expect = [0.0] * 12
    for idx in _groups(b).values():
        s = [b.scores[i].item() for i in idx]
        mu, sd = statistics.mean(s), statistics.stdev(s)
        for i in idx:
            expect[i] = (b.scores[i].item() - mu) / (sd + 1e-6) if norm else b.scores[i].item() - mu
    _close(adv, torch.tensor(expect, dtype=D).unsqueeze(1) * b.mask)
    # all-0 and all-1 groups give zero, mixed group does not
    assert adv[:8].abs().sum() == 0 and adv[8:].abs().sum() > 0


def test_rloo_matches_loop_on_random_batch():
    b = make_random_batch()
    adv, _ = rloo(b.scores, b.group_ids, b.mask)
    expect = [0.0] * 12
    for idx in _groups(b).values():
        for i in idx:
            others = [b.scores[j].item() for j in idx if j != i]
            expect[i] = b.scores[i].item() - sum(others) / len(others)
    _close(adv, torch.tensor(expect, dtype=D).unsqueeze(1) * b.mask)


def test_singleton_groups():
    s = torch.tensor([2.5, -1.0], dtype=D)
    g = torch.tensor([0, 1])
    m = torch.ones(2, 2, dtype=D)
    for fn in (grpo, rloo):
        _close(fn(s, g, m)[0], [[2.5, 2.5], [-1.0, -1.0]])
    _close(grpo(s, g, m, norm_by_std=False)[0], [[2.5, 2.5], [-1.0, -1.0]])


# ------------------------------------------------------------------ REINFORCE++


def test_reinforce_pp_by_hand():
    r = torch.tensor([[0, 0, 1, 0], [0, 2, 0, 0], [0, 0, 1, 0]], dtype=D)
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 0]], dtype=D)  # row 2: interior mask
    adv, ret = reinforce_pp(r, m, gamma=0.5)
    _close(ret, [[0.25, 0.5, 1, 0], [1, 2, 0, 0], [0.5, 0, 1, 0]])
    w = _whiten_list([0.25, 0.5, 1, 1, 2, 0.5, 1])
    _close(adv, [[w[0], w[1], w[2], 0], [w[3], w[4], 0, 0], [w[5], 0, w[6], 0]])


def test_reinforce_pp_interior_mask_carries_like_verl_091_or_resets_like_verl_08():
    """veRL 0.9.1 carries the running return through a masked span unchanged (a reward sitting on a
    masked token is ignored); veRL 0.4.1-0.8.0 reset it to 0 after each masked token."""
    r = torch.tensor([[0, 5, 0, 1]], dtype=D)  # the 5 sits on a masked (tool) token
    m = torch.tensor([[1, 1, 0, 1]], dtype=D)
    m[0, 1] = 0
    _, carry = reinforce_pp(r, m, gamma=0.5)
    _close(carry, [[0.5, 0, 0, 1]])  # t=0: 0 + 0.5 * 1 (the span t=1..2 neither discounts nor adds)
    _, reset = reinforce_pp(r, m, gamma=0.5, reset_at_mask=True)
    _close(reset, [[0, 0, 0, 1]])


def test_reinforce_pp_matches_loop_on_random_batch():
    b = make_random_batch()
    r = b.token_rewards.clone()
    r[3, 0] += 0.5  # a mid-sequence reward so discounting matters
    adv, ret = reinforce_pp(r, b.mask, gamma=0.9)
    exp_ret = torch.zeros(12, 16, dtype=D)
    for i in range(12):
        run = 0.0
        for t in reversed(range(int(b.lengths[i]))):
            run = r[i, t].item() + 0.9 * run
            exp_ret[i, t] = run
    _close(ret, exp_ret)
    flat = [exp_ret[i, t].item() for i in range(12) for t in range(16) if b.mask[i, t]]
    w = iter(_whiten_list(flat))
    _close(adv, [[next(w) if b.mask[i, t] else 0.0 for t in range(16)] for i in range(12)], atol=1e-9)


def test_reinforce_pp_baseline_by_hand_and_random():
    adv, ret = reinforce_pp_baseline(S, G, M4)
    # per-token values before whitening: row0 1/3 ×2, row1 −2/3, row3 3 ×3 (singleton keeps raw score)
    w = _whiten_list([1 / 3, 1 / 3, -2 / 3, 3, 3, 3])
    _close(adv, [[w[0], w[1], 0], [w[2], 0, 0], [0, 0, 0], w[3:]])
    assert torch.equal(adv, ret)

    b = make_random_batch()
    adv, _ = reinforce_pp_baseline(b.scores, b.group_ids, b.mask)
    centred = [0.0] * 12
    for idx in _groups(b).values():
        mu = statistics.mean(b.scores[i].item() for i in idx)
        for i in idx:
            centred[i] = b.scores[i].item() - mu
    flat = [centred[i] for i in range(12) for t in range(16) if b.mask[i, t]]
    w = iter(_whiten_list(flat))
    _close(adv, [[next(w) if b.mask[i, t] else 0.0 for t in range(16)] for i in range(12)], atol=1e-9)


def test_reinforce_pp_degenerate_batch_is_zero():
    m = torch.tensor([[1, 0], [0, 0]], dtype=D)
    adv, ret = reinforce_pp(torch.tensor([[1.0, 0], [0, 0]], dtype=D), m)
    assert torch.equal(adv, torch.zeros(2, 2, dtype=D))
    _close(ret, [[1.0, 0], [0, 0]])


# ------------------------------------------------------------------ entropy shaping, overlong


def test_entropy_shaped_by_hand():
    a = torch.tensor([[1.0, -1.0, 0.0, 2.0, 3.0]], dtype=D)
    h = torch.tensor([[10.0, 0.2, 5.0, 0.5, 1.0]], dtype=D, requires_grad=True)
    m = torch.tensor([[1, 1, 1, 1, 0]], dtype=D)
    out = entropy_shaped(a, h, m, alpha=0.4, kappa=2.0)
    _close(out, [[1.5, -0.92, 0.0, 2.2, 0.0]])
    assert not out.requires_grad


def test_entropy_shaped_properties_random():
    torch.manual_seed(0)
    a = torch.randn(6, 10, dtype=D)
    a[0] = 0
    h = torch.rand(6, 10, dtype=D) * 5
    m = (torch.rand(6, 10) > 0.2).to(D)
    for alpha, kappa in [(0.4, 2.0), (0.1, 2.0), (10.0, 1.5)]:
        out = entropy_shaped(a, h, m, alpha, kappa)
        assert torch.equal(out[0], torch.zeros(10, dtype=D))
        on = m.bool()
        assert torch.all(torch.sign(out[on]) == torch.sign(a[on]))
        diff = out[on] - a[on]
        assert torch.all(diff >= 0) and torch.all(diff <= a[on].abs() / kappa + 1e-15)
        assert torch.all(diff <= alpha * h[on] + 1e-15)
        assert torch.all(out[~on] == 0)
    with pytest.raises(ValueError):
        entropy_shaped(a, h, m, 0.4, kappa=1.0)


def test_dapo_overlong_penalty_by_hand():
    lengths = torch.tensor([10, 16, 17, 18, 20])
    _close(dapo_overlong_penalty(lengths, 20, 4).double(), [0, 0, -0.25, -0.5, -1.0])
    _close(dapo_overlong_penalty(lengths, 20, 4, factor=0.5).double(), [0, 0, -0.125, -0.25, -0.5])
    with pytest.raises(ValueError):
        dapo_overlong_penalty(lengths, 20, 0)
