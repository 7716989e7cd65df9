"""Flow-matching action head maths (pi0 / Drive-pi0 style), for any velocity network.

Training (spec §3.1, DriveMoE ``loss.py``): x0 ~ N(0, I) noise, x1 the normalised action chunk,
``psi_t = (1 - (1 - s) t) x0 + t x1``, target velocity ``d = x1 - (1 - s) x0`` with s = sigma_min,
``L = mean ||v(psi_t, t, cond) - d||^2``; t = (1 - s)(1 - z) with z ~ Beta(1.5, 1) (more weight on
noisy t). Inference: forward Euler from t = 0 in ``steps`` steps, then clip to [-1, 1].

For RL the same integrator becomes a stochastic policy: each Euler step adds Gaussian noise
``noise * sqrt(dt) * eps`` (Flow-GRPO's ODE-to-SDE idea, simplified: no score correction, so the
marginals differ from the ODE's but the policy is a proper Markov chain), and the log-probability
of a sampled chain is the sum of its steps' Gaussian log-densities, recomputable by the learner from
the stored chain. ``velocity(x, t, cond) -> v`` is any callable; x is (N, H, D), t is (N,).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SIGMA_MIN = 0.001
Velocity = Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]


def sample_time(n: int, alpha: float = 1.5, sigma_min: float = SIGMA_MIN,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """t = (1 - sigma_min)(1 - z), z ~ Beta(alpha, 1), sampled by inverse CDF (F(z) = z^alpha)."""
    u = torch.rand(n, generator=generator)
    return (1 - sigma_min) * (1 - u ** (1.0 / alpha))


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor,
                sigma_min: float = SIGMA_MIN) -> tuple[torch.Tensor, torch.Tensor]:
    """(psi_t, target velocity d) for noise x0, data x1 and times t (N,)."""
    tt = t.view(-1, *([1] * (x1.dim() - 1))).to(x1)
    return (1 - (1 - sigma_min) * tt) * x0 + tt * x1, x1 - (1 - sigma_min) * x0


def fm_loss(velocity: Velocity, x1: torch.Tensor, cond, *, sigma_min: float = SIGMA_MIN,
            generator: torch.Generator | None = None, t: torch.Tensor | None = None,
            x0: torch.Tensor | None = None, reduce: bool = True) -> torch.Tensor:
    """Flow-matching loss (mean squared velocity error); ``t``/``x0`` may be given (tests, control)."""
    n = len(x1)
    x0 = torch.randn(x1.shape, generator=generator).to(x1) if x0 is None else x0
    t = sample_time(n, sigma_min=sigma_min, generator=generator).to(x1.device) if t is None else t
    psi, d = interpolate(x0, x1, t, sigma_min)
    err = (velocity(psi, t, cond) - d).pow(2).reshape(n, -1).mean(-1)
    return err.mean() if reduce else err


def sample(velocity: Velocity, cond, shape: tuple[int, ...], *, steps: int = 10, noise: float = 0.0,
           generator: torch.Generator | None = None, x0: torch.Tensor | None = None,
           clip: float | None = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Euler integration from t = 0 to 1. Returns (actions, chain (N, steps + 1, ...), step log-probs
    (N, steps)). With ``noise = 0`` it is pi0's deterministic sampler and the log-probs are 0."""
    x = torch.randn(shape, generator=generator) if x0 is None else x0
    dt = 1.0 / steps
    chain, logps = [x], []
    for i in range(steps):
        t = torch.full((shape[0],), i * dt)
        mean = x + dt * velocity(x, t, cond)
        if noise > 0:
            x = mean + noise * math.sqrt(dt) * torch.randn(shape, generator=generator)
            logps.append(gaussian_logp(x, mean, noise * math.sqrt(dt)))
        else:
            x = mean
            logps.append(torch.zeros(shape[0]))
        chain.append(x)
    out = x.clamp(-clip, clip) if clip is not None else x
    return out, torch.stack(chain, 1), torch.stack(logps, 1)


def gaussian_logp(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """Sum over all but the first dimension of log N(x; mean, std^2)."""
    z = (x - mean) / std
    per = -0.5 * z * z - math.log(std) - 0.5 * math.log(2 * math.pi)
    return per.reshape(len(x), -1).sum(-1)


def chain_logprob(velocity: Velocity, chain: torch.Tensor, cond, noise: float) -> torch.Tensor:
    """Per-step log-probs (N, steps) of a stored chain under the current velocity network (the
    learner's recomputation of :func:`sample`'s log-probs; all steps in one batched call)."""
    n, s1 = chain.shape[:2]
    steps = s1 - 1
    dt = 1.0 / steps
    prev = chain[:, :-1].reshape(n * steps, *chain.shape[2:])
    t = (torch.arange(steps, dtype=torch.float32) * dt).repeat(n)
    cond_rep = _repeat_cond(cond, steps)
    mean = prev + dt * velocity(prev, t, cond_rep)
    nxt = chain[:, 1:].reshape(n * steps, *chain.shape[2:])
    return gaussian_logp(nxt, mean, noise * math.sqrt(dt)).view(n, steps)


def _repeat_cond(cond, steps: int):
    if isinstance(cond, torch.Tensor):
        return cond.repeat_interleave(steps, 0)
    if isinstance(cond, tuple):
        return tuple(_repeat_cond(c, steps) for c in cond)
    if isinstance(cond, dict):
        return {k: _repeat_cond(v, steps) for k, v in cond.items()}
    return cond
