"""Off-policy correction for asynchronous rollouts: truncated importance sampling (TIS).

With one-step-off-policy rollout the batch was sampled by an older policy (or by an inference
engine whose numerics differ from the learner's). Following decoupled PPO (Hilton et al. 2021,
arXiv 2110.00641; AReaL, arXiv 2505.24298) the PPO ratio is taken against the learner's own
log-probs before the update (``old_logp``), and each token's loss is multiplied by the truncated
behaviour weight ``w_t = min(pi_old(y_t) / pi_rollout(y_t), C)`` (TIS: Yao et al. 2025, "Your
efficient RL framework secretly brings you off-policy RL training"; their default ``C = 2``).

The weight is applied without touching any recipe: :func:`reweight_token_grads` leaves the value of
the per-token log-prob unchanged and multiplies its gradient by ``w_t``. For every loss that is a sum
of per-token terms ``l_t(logp_t)`` (PPO clip, SFT NLL, the KL-to-reference estimators, under any of
the aggregation modes) the gradient equals that of ``sum_t w_t * l_t`` exactly, which is what
``ppo_clip_loss(..., is_weights=w)`` computes; the test suite checks that equality. Terms that do
not go through ``logp`` (entropy bonus, value or log Z heads) are not reweighted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["truncated_is_log_weights", "reweight_token_grads"]


def truncated_is_log_weights(old_logp: Tensor, rollout_logp: Tensor, mask: Tensor,
                             cap: float) -> tuple[Tensor, dict[str, float]]:
    """``log w_t = min(old_logp - rollout_logp, log C)`` on masked tokens, 0 elsewhere.

    Logs rather than weights so that a row a recipe adds later with zero-filled extras (HPT's
    demonstrations) gets weight ``exp(0) = 1``, i.e. no correction. Metrics: mean weight, fraction
    of tokens truncated at C, and the k3 estimate of KL(rollout || old) (the policy lag).
    """
    if not cap > 0:
        raise ValueError(f"importance-weight cap must be > 0, got {cap}")
    if old_logp.shape != rollout_logp.shape or old_logp.shape != mask.shape:
        raise ValueError(f"shape mismatch: old_logp {tuple(old_logp.shape)}, rollout_logp "
                         f"{tuple(rollout_logp.shape)}, mask {tuple(mask.shape)}")
    m = mask.bool()
    log_ratio = torch.where(m, old_logp.float() - rollout_logp.float(), torch.zeros((), dtype=torch.float32))
    logw = torch.clamp(log_ratio, max=math.log(cap))
    n = int(m.sum())
    if n == 0:
        return logw, {"offpolicy/is_weight_mean": float("nan"), "offpolicy/is_capped_frac": float("nan"),
                      "offpolicy/kl_rollout_old": float("nan")}
    k3 = torch.exp(log_ratio) - 1 - log_ratio  # E_rollout[k3] = KL(rollout || old) (Schulman's k3)
    return logw, {
        "offpolicy/is_weight_mean": float(torch.exp(logw)[m].mean()),
        "offpolicy/is_capped_frac": float((log_ratio > math.log(cap))[m].float().mean()),
        "offpolicy/kl_rollout_old": float(k3[m].mean()),
    }


def reweight_token_grads(logp: Tensor, weights: Tensor) -> Tensor:
    """``logp`` with the same value but gradient ``weights * d logp`` per token (weights detached)."""
    detached = logp.detach()
    return detached + weights.detach().to(logp.dtype) * (logp - detached)
