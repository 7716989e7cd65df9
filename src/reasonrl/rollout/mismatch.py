"""Train/inference mismatch: how far the engine's recorded log-probs are from the learner's.

Both should be ``log_softmax(logits / T)`` of the same weights; any gap (kernel differences,
bf16, a different engine, a bug in positions or masks) biases the importance ratio of every
off-policy-corrected loss. The trainer logs it every step from the first mini-batch's forward,
which runs before that step's first optimizer update, so no extra forward is paid.
"""

from __future__ import annotations

import torch


def logp_mismatch(rollout_logp: torch.Tensor, learner_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Mean and max of ``|rollout_logp - learner_logp|`` and the mean signed gap (a k1 KL estimate of
    sampler vs learner) over tokens where ``mask`` is 1; NaN when no token is masked in."""
    m = mask.bool()
    d = (rollout_logp.to(learner_logp.device).float() - learner_logp.detach().float())[m.to(learner_logp.device)]
    if d.numel() == 0:
        nan = float("nan")
        return {"rollout/logp_mismatch_mean": nan, "rollout/logp_mismatch_max": nan, "rollout/logp_mismatch_k1": nan}
    a = d.abs()
    return {"rollout/logp_mismatch_mean": float(a.mean()), "rollout/logp_mismatch_max": float(a.max()),
            "rollout/logp_mismatch_k1": float(d.mean())}


class MismatchMeter:
    """Accumulates ``logp_mismatch`` over micro-batches (token-weighted mean, running max)."""

    def __init__(self) -> None:
        self.abs_sum = self.signed_sum = 0.0
        self.tokens = 0
        self.max = 0.0

    def add(self, rollout_logp: torch.Tensor, learner_logp: torch.Tensor, mask: torch.Tensor) -> None:
        m = mask.bool()
        n = int(m.sum())
        if n == 0:
            return
        d = (rollout_logp.to(learner_logp.device).float() - learner_logp.detach().float())[m.to(learner_logp.device)]
        self.abs_sum += float(d.abs().sum())
        self.signed_sum += float(d.sum())
        self.max = max(self.max, float(d.abs().max()))
        self.tokens += n

    def metrics(self) -> dict[str, float]:
        if not self.tokens:
            return {}
        return {"rollout/logp_mismatch_mean": self.abs_sum / self.tokens, "rollout/logp_mismatch_max": self.max,
                "rollout/logp_mismatch_k1": self.signed_sum / self.tokens}
