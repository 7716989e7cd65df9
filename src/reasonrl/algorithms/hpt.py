"""HPT per-prompt SFT/RL switch and the released code's soft coefficient tables (arXiv 2509.04419; spec §2).

HPT (Alg. 1) measures each prompt's on-policy success count and routes the prompt to SFT on its
demonstration when the policy cannot solve it, otherwise to RL on its n rollouts. These functions
make only that decision; the batch edit (drop rollouts, add the demo row) is the recipe's job.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["hpt_switch", "hpt_soft_coefficients", "HPT_SOFT_TABLES"]


def hpt_switch(num_correct: Tensor, gamma: int) -> Tensor:
    """True (= SFT branch) where ``num_correct ≤ gamma``; False = keep the RL rollouts.

    ``gamma`` is the code's integer ``switch_gate`` on the *count* of correct rollouts: 0 for Qwen
    (SFT only when every rollout failed), 2 for LLaMA-3.1-8B (the paper's γ = 2/8 as a fraction).
    """
    if int(gamma) != gamma or gamma < 0:
        raise ValueError(f"gamma must be a non-negative integer count, got {gamma}")
    return num_correct <= int(gamma)


# (on_coef, off_coef, sft_coef) by on-policy success count, n = 8, from the released trainer's
# "soft" strategy (not used for the paper's main results). In that code the count also includes
# the always-correct demonstration row, so key 0 "should not occur" and maps to (1, 1, 1).
HPT_SOFT_TABLES: dict[str, tuple[tuple[float, float, float], ...]] = {
    "type1": ((1, 1, 1), (0, 1, 1), (0.125, 1, 0.5), (0.25, 1, 0.25), (0.5, 1, 0.125),
              (1, 1, 0), (1, 1, 0), (1, 1, 0), (1, 1, 0)),
    "type2": ((1, 1, 1), (0, 0, 1), (0.125, 0, 0.5), (0.25, 0, 0.25), (0.5, 0, 0.125),
              (1, 0, 0), (1, 0, 0), (1, 0, 0), (1, 0, 0)),
    "type3": ((1, 1, 1), (0, 0, 1), (0.125, 0.5, 0.5), (0.25, 1, 0.25), (0.5, 0.5, 0.125),
              (1, 0.25, 0), (1, 0.125, 0), (1, 0, 0), (1, 0, 0)),
}


def hpt_soft_coefficients(num_correct: Tensor, n: int, table: str = "type1") -> tuple[Tensor, Tensor, Tensor]:
    """Per-prompt ``(on_coef, off_coef, sft_coef)`` from the code's soft tables (spec §2.3).

    The tables are defined only for n = 8 counts 0..8; other n raise rather than guess a rescaling.
    """
    if table not in HPT_SOFT_TABLES:
        raise ValueError(f"unknown HPT soft table {table!r}; expected one of {sorted(HPT_SOFT_TABLES)}")
    if n != 8:
        raise ValueError(f"HPT soft tables are defined for n = 8 rollouts only, got n={n}")
    k = num_correct.long()
    if k.numel() and (int(k.min()) < 0 or int(k.max()) > n):
        raise ValueError(f"num_correct must lie in [0, {n}], got range [{int(k.min())}, {int(k.max())}]")
    lut = torch.tensor(HPT_SOFT_TABLES[table], dtype=torch.get_default_dtype(), device=k.device)
    coefs = lut[k]
    return coefs[..., 0], coefs[..., 1], coefs[..., 2]
