"""Policy, value, SFT, entropy and KL terms (spec §6.6–§6.11) and KL coefficient controllers.

"veRL" below means the veRL 0.9.1 wheel (``verl/trainer/ppo/core_algos.py``, ``ray_trainer.py``,
``_generated_ppo_trainer.yaml``) unless another version is named.

Each loss takes per-token tensors (B, T) and a mask, builds a per-token loss matrix and reduces it
with :func:`agg_loss`; extra keyword arguments (``num_tokens``, ``num_seqs``, ``loss_scale_factor``,
``batch_divisor``, ``dp_size``) pass straight through so gradient accumulation is exact.
Metrics are detached 0-dim tensors (no host sync; the trainer decides when to ``.item()``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .core import agg_loss, masked_mean

__all__ = [
    "ppo_clip_loss",
    "gspo_loss",
    "sft_nll",
    "kl_penalty",
    "KL_KINDS",
    "value_loss",
    "entropy_bonus",
    "FixedKL",
    "AdaptiveKL",
    "kl_in_reward",
]

_LOG_RATIO_CLAMP = 20.0


def _metric_mean(x: Tensor, mask: Tensor) -> Tensor:
    return masked_mean(x.detach().to(torch.float32), mask)


def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float | None = None,
    agg: str = "token-mean",
    is_weights: Tensor | None = None,
    **agg_kwargs,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017, arXiv 1707.06347) with clip-higher and dual-clip.

    ``ρ = exp(clamp(logp − old, ±20))``; ``ℓ = max(−Aρ, −A·clip(ρ, 1−ε_low, 1+ε_high))``; with
    ``clip_c`` (dual-clip, Ye et al. 2020, arXiv 1912.09729; c > 1, DAPO recipe 10)
    tokens with A < 0 are further bounded by ``−A·c`` so a huge ratio cannot blow the loss up.
    With ``clip_c=3`` this is veRL's ``compute_policy_loss_vanilla``, where dual-clip is always on
    (``clip_ratio_c`` default 3); here it is off unless asked for.
    DAPO's clip-higher is ``clip_high=0.28`` (spec §6.7). ``is_weights`` (detached rollout
    importance weights for off-policy/async data) multiply ℓ before aggregation.
    Metrics (spec §6.6): clipfrac = frac(ℓ2 > ℓ1), clipfrac_lower = frac(dual-clip active),
    approx_kl = mean(old − logp).
    """
    if clip_c is not None and clip_c <= 1.0:
        raise ValueError(f"dual-clip constant clip_c must be > 1, got {clip_c}")
    neg_approx_kl = torch.clamp(logp - old_logp, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    ratio = torch.exp(neg_approx_kl)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    lc = torch.maximum(l1, l2)
    loss_mat = lc
    lower = torch.zeros_like(lc, dtype=torch.bool)
    if clip_c is not None:
        l3 = -adv * clip_c
        lower = (lc > l3) & (adv < 0)
        loss_mat = torch.where(adv < 0, torch.minimum(lc, l3), lc)
    if is_weights is not None:
        loss_mat = loss_mat * is_weights.detach()
    loss = agg_loss(loss_mat, mask, agg, **agg_kwargs)
    metrics = {
        "clipfrac": _metric_mean((l2 > l1).float(), mask),
        "clipfrac_lower": _metric_mean(lower.float(), mask),
        "approx_kl": _metric_mean(old_logp - logp, mask),
    }
    return loss, metrics


def gspo_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    agg: str = "seq-mean-token-mean",
    **agg_kwargs,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO (Zheng et al. 2025, arXiv 2507.18071): clip on the length-normalised sequence ratio.

    ``s_i = exp(mean_t(logp − old))`` (log clamped ±20). Token form ``s_{i,t} = sg(s_i)·π_t/sg(π_t)``
    has the value of s_i and gradient s_i·∇logp_t, so with ``seq-mean-token-mean`` and a per-sequence
    A it reproduces sequence-level GSPO exactly while still allowing token-level A (GSPO-token).
    ``ℓ = max(−A s, −A clip(s, 1−ε_low, 1+ε_high))``. Defaults ε = 3e-4 / 4e-4 are the paper's
    (sequence ratios sit much closer to 1 than token ratios).
    """
    m = mask.to(logp.dtype)
    lengths = m.sum(dim=-1).clamp_min(1)
    log_seq = ((logp - old_logp) * m).sum(dim=-1) / lengths
    log_tok = log_seq.detach().unsqueeze(-1) + logp - logp.detach()
    ratio = torch.exp(torch.clamp(log_tok, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = agg_loss(torch.maximum(l1, l2), mask, agg, **agg_kwargs)
    metrics = {
        "clipfrac": _metric_mean((l2 > l1).float(), mask),
        "approx_kl": _metric_mean(old_logp - logp, mask),
        "seq_ratio_mean": _metric_mean(torch.exp(log_seq.clamp(-20, 20)).unsqueeze(-1).expand_as(logp), mask),
    }
    return loss, metrics


def sft_nll(logp: Tensor, mask: Tensor, agg: str = "token-mean", **agg_kwargs) -> Tensor:
    """Negative log-likelihood of demonstration tokens (HPT's SFT branch uses token-mean, spec §2.3)."""
    return agg_loss(-logp, mask, agg, **agg_kwargs)


KL_KINDS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3", "kl+", "k1+", "abs+", "mse+", "k2+", "low_var_kl+", "k3+")


def _kl_base(d: Tensor, kind: str) -> Tensor:
    if kind in ("kl", "k1"):
        return d
    if kind == "abs":
        return d.abs()
    if kind in ("mse", "k2"):
        return 0.5 * d.square()
    if kind in ("low_var_kl", "k3"):
        # Schulman's k3 = e^{-d} + d - 1 >= 0, clamped as veRL 0.9.1 to stay finite for extreme tokens.
        r = torch.clamp(-d, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
        return torch.clamp(torch.exp(r) - r - 1, -10.0, 10.0)
    if kind == "full":
        raise NotImplementedError("the full-vocabulary KL needs logits, not log-probs of sampled tokens")
    raise ValueError(f"unknown KL estimator {kind!r}; expected one of {KL_KINDS}")


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str = "low_var_kl") -> Tensor:
    """Per-token KL(π‖π_ref) estimators of the sampled tokens, d = logp − ref_logp (spec §6.8).

    k1 = d, abs = |d|, k2 = ½d², k3 = e^{−d} + d − 1 (d clamped ±20, result clamped to [−10, 10]),
    as veRL 0.9.1's ``kl_penalty``. Suffix ``+`` (veRL ≥ 0.6.0): value of the base estimator, gradient of k2 — k2's gradient is the
    unbiased gradient of the sequence KL, while k1/k3 give biased or zero-mean gradients.
    """
    d = logp - ref_logp
    if kind.endswith("+"):
        base = _kl_base(d, kind[:-1])
        k2 = _kl_base(d, "k2")
        return k2 - k2.detach() + base.detach()
    return _kl_base(d, kind)


def value_loss(
    vpred: Tensor,
    returns: Tensor,
    old_values: Tensor,
    mask: Tensor,
    clip: float | None = 0.5,
    agg: str = "token-mean",
    **agg_kwargs,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss ``½·agg(max((v−R)², (clip(v, v_old±c) − R)²))`` (spec §6.11; veRL 0.9.1's
    ``compute_value_loss``, ``cliprange_value`` 0.5).

    ``clip=None`` gives the plain squared error. Metric ``vf_clipfrac`` = frac where the clipped
    branch is the larger one.
    """
    err = (vpred - returns).square()
    if clip is None:
        loss_mat = err
        clipped_frac = torch.zeros_like(err)
    else:
        v_clip = old_values + torch.clamp(vpred - old_values, -clip, clip)
        err_c = (v_clip - returns).square()
        loss_mat = torch.maximum(err, err_c)
        clipped_frac = (err_c > err).float()
    loss = 0.5 * agg_loss(loss_mat, mask, agg, **agg_kwargs)
    return loss, {"vf_clipfrac": _metric_mean(clipped_frac, mask)}


def entropy_bonus(entropy: Tensor, mask: Tensor, agg: str = "token-mean", **agg_kwargs) -> Tensor:
    """Aggregated token entropy (spec §6.10); the recipe *subtracts* ``coef ×`` this from the loss."""
    return agg_loss(entropy, mask, agg, **agg_kwargs)


class FixedKL:
    """Constant KL-in-reward coefficient (veRL 0.9.1 ``FixedKLController``)."""

    def __init__(self, coef: float = 0.001):
        self.value = float(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKL:
    """Adaptive KL coefficient (Ziegler et al. 2019, arXiv 1909.08593; spec §6.9).

    ``β ← β·(1 + clip(KL/target − 1, ±0.2)·n_steps/horizon)``, n_steps = samples in the batch.
    Same update and defaults as veRL 0.9.1's ``AdaptiveKLController`` / ``algorithm.kl_ctrl``: init
    0.001, target 0.1, horizon 10000. State round-trips for resume.
    """

    def __init__(self, init: float = 0.001, target: float = 0.1, horizon: int = 10000):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"need target > 0 and horizon > 0, got target={target}, horizon={horizon}")
        self.value = float(init)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        err = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + err * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
        self.target = float(state.get("target", self.target))
        self.horizon = int(state.get("horizon", self.horizon))


@torch.no_grad()
def kl_in_reward(
    token_rewards: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    coef: float,
    kind: str = "kl",
) -> tuple[Tensor, Tensor]:
    """KL penalty folded into token rewards (spec §6.9; veRL 0.9.1 ``apply_kl_penalty``): ``r'_t = r_t − β·kl_t·m_t``.

    Returns ``(rewards', current_kl)`` with current_kl = mean over sequences of the per-sequence
    masked mean KL (empty sequences count as 0, as veRL 0.9.1) — feed it to ``AdaptiveKL.update``.
    """
    kl = kl_penalty(old_logp, ref_logp, kind) * mask.to(old_logp.dtype)
    current_kl = masked_mean(kl, mask, dim=-1).mean() if kl.shape[0] else kl.new_zeros(())
    return token_rewards - coef * kl, current_kl

