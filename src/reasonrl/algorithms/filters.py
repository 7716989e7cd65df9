"""Sample filters: DAPO dynamic sampling keeps only groups whose rewards differ (spec §6.7).

A group whose samples all scored the same has zero GRPO advantage and contributes no policy
gradient, so DAPO drops it and samples more prompts instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .core import group_mean_std

__all__ = ["group_std", "zero_variance_groups", "keep_mixed_groups"]


def group_std(scores: Tensor, group_ids: Tensor, unbiased: bool = False) -> Tensor:
    """Per-row std of the row's group (B,); population std by default as the DAPO recipe (np.std)."""
    _, std, _, _ = group_mean_std(scores, group_ids, unbiased=unbiased)
    return std.to(scores.dtype if scores.is_floating_point() else torch.get_default_dtype())


def zero_variance_groups(scores: Tensor, group_ids: Tensor) -> Tensor:
    """Bool (B,): True for rows whose group (size ≥ 2) has identical scores — the rows to drop.

    Uses an exact all-equal test (max == min), not a float std threshold. Singleton groups are
    False (kept), as the DAPO recipe keeps groups of size 1.
    """
    _, _, counts, equal = group_mean_std(scores, group_ids)
    return equal & (counts > 1)


def keep_mixed_groups(scores: Tensor, group_ids: Tensor) -> Tensor:
    """Row indices (LongTensor, original order) of rows to keep after dynamic-sampling filtering."""
    return (~zero_variance_groups(scores, group_ids)).nonzero().flatten()
