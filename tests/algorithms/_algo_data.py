"""Shared data for algorithm tests: the spec §7 random batch recipe (imported, not a conftest)."""

from dataclasses import dataclass

import torch


@dataclass
class RandomBatch:
    logp: torch.Tensor
    old_logp: torch.Tensor
    ref_logp: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    token_rewards: torch.Tensor
    scores: torch.Tensor
    group_ids: torch.Tensor
    values: torch.Tensor
    logits: torch.Tensor


def make_random_batch(seed: int = 0, B: int = 12, T: int = 16, V: int = 32) -> RandomBatch:
    """B = 3 uids × 4, lengths in [0, T] with one empty (uid 0, all-0 group) and one full response;
    uid 0 all-0 rewards, uid 1 all-1, uid 2 mixed; old = logp + N(0, .1), ref = logp + N(0, .3)."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = 0
    lengths[5] = T
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).to(dt)
    logits = torch.randn(B, T, V, generator=g, dtype=dt)
    labels = torch.randint(0, V, (B, T), generator=g)
    logp = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    old = logp + 0.1 * torch.randn(B, T, generator=g, dtype=dt)
    ref = logp + 0.3 * torch.randn(B, T, generator=g, dtype=dt)
    group_ids = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    scores = torch.tensor([0.0] * 4 + [1.0] * 4 + [1.0, 0.0, 1.0, 0.0], dtype=dt)
    token_rewards = torch.zeros(B, T, dtype=dt)
    for i in range(B):
        if lengths[i] > 0:
            token_rewards[i, lengths[i] - 1] = scores[i]
    values = torch.randn(B, T, generator=g, dtype=dt) * mask
    return RandomBatch(logp, old, ref, mask, lengths, token_rewards, token_rewards.sum(-1), group_ids, values, logits)
