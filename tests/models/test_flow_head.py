"""Flow-matching head maths: the loss on a known linear target, Euler sampling, chain log-probs, learning."""

import pytest
import torch
from torch import nn

from reasonrl.models import flow_head as fh


def test_time_sampler_is_beta_skewed_towards_noise():
    t = fh.sample_time(20000, generator=torch.Generator().manual_seed(0))
    assert 0 <= t.min() and t.max() <= 1 - fh.SIGMA_MIN
    # z ~ Beta(1.5, 1): E[z] = 0.6, so E[t] = 0.999 * 0.4
    assert t.mean().item() == pytest.approx(0.999 * 0.4, abs=0.01)


def test_loss_is_zero_for_the_exact_velocity_of_a_linear_target():
    x1 = torch.tensor([[[0.5, -0.5], [0.2, 0.1]]])
    x0 = torch.tensor([[[1.0, 2.0], [-1.0, 0.0]]])
    t = torch.tensor([0.3])
    psi, d = fh.interpolate(x0, x1, t)
    s = fh.SIGMA_MIN
    assert torch.allclose(psi, (1 - (1 - s) * 0.3) * x0 + 0.3 * x1)
    assert torch.allclose(d, x1 - (1 - s) * x0)
    exact = lambda x, tt, c: x1 - (1 - s) * x0  # noqa: E731
    assert fh.fm_loss(exact, x1, None, t=t, x0=x0).item() == pytest.approx(0.0, abs=1e-12)
    zero = lambda x, tt, c: torch.zeros_like(x)  # noqa: E731
    assert fh.fm_loss(zero, x1, None, t=t, x0=x0).item() == pytest.approx(d.pow(2).mean().item(), rel=1e-6)


def test_euler_with_the_ideal_velocity_lands_on_the_target():
    # for a single data point x1 the optimal field is v(x, t) = (x1 - (1 - s) x) / (1 - (1 - s) t)
    s = fh.SIGMA_MIN
    x1 = torch.tensor([[[0.3, -0.7]]])
    v = lambda x, t, c: (x1 - (1 - s) * x) / (1 - (1 - s) * t.view(-1, 1, 1))  # noqa: E731
    out, chain, logp = fh.sample(v, None, (1, 1, 2), steps=10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, x1, atol=2e-3)
    assert chain.shape == (1, 11, 1, 2) and torch.all(logp == 0)


def test_chain_logprob_matches_the_sampler():
    net = nn.Linear(4, 4)
    v = lambda x, t, c: net(x.reshape(len(x), -1) + c).view_as(x) + t.view(-1, 1, 1)  # noqa: E731
    cond = torch.randn(3, 4)
    _, chain, logp = fh.sample(v, cond, (3, 2, 2), steps=5, noise=0.3, generator=torch.Generator().manual_seed(0),
                               clip=None)
    again = fh.chain_logprob(v, chain, cond, 0.3)
    assert torch.allclose(logp, again, atol=1e-4)


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4 + 1 + 1, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 4))

    def forward(self, x, t, c):
        return self.net(torch.cat([x.reshape(len(x), -1), t.view(-1, 1), c], -1)).view_as(x)


def test_trained_head_reproduces_a_deterministic_mapping():
    """cond c in [-1, 1] -> the 2-waypoint chunk ((c/2, c), (c, -c/2)); Euler samples must land near it."""
    torch.manual_seed(0)
    head = _Head()
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    target = lambda c: torch.stack([c / 2, c, c, -c / 2], -1).view(-1, 2, 2)  # noqa: E731
    for _ in range(1500):
        c = torch.rand(128, 1, generator=g) * 2 - 1
        loss = fh.fm_loss(head, target(c[:, 0]), c, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    c = torch.linspace(-0.9, 0.9, 7).view(-1, 1)
    with torch.no_grad():
        out, _, _ = fh.sample(head, c, (7, 2, 2), generator=torch.Generator().manual_seed(1))
    err = (out - target(c[:, 0])).abs().mean().item()
    assert err < 0.08, err
    assert (torch.zeros(7, 2, 2) - target(c[:, 0])).abs().mean().item() > 0.3  # the trivial answer is far off
