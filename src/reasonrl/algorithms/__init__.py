"""Pure tensor maths of RL post-training: advantages, losses, KL, aggregation, filters, FlowRL, HPT.

Formulas and defaults follow ``specs/algorithms.md``; see ``docs/algorithms/`` for one page per
family. Recipes (which pieces a named algorithm combines) live on top of these functions.
"""

from .advantages import dapo_overlong_penalty, entropy_shaped, gae, grpo, reinforce_pp, reinforce_pp_baseline, rloo
from .core import (
    AGG_MODES,
    SUM_NORM_DIVISORS,
    agg_loss,
    entropy_from_logits,
    group_index,
    group_mean_std,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
)
from .filters import group_std, keep_mixed_groups, zero_variance_groups
from .flowrl import FLOWRL_WEIGHT_MODES, LogZHead, flowrl_loss, pool_prompt
from .hpt import HPT_SOFT_TABLES, hpt_soft_coefficients, hpt_switch
from .losses import (
    KL_KINDS,
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

__all__ = [
    "AGG_MODES", "SUM_NORM_DIVISORS", "agg_loss", "entropy_from_logits", "group_index", "group_mean_std", "logprobs_from_logits",
    "masked_mean", "masked_sum", "masked_var", "masked_whiten",
    "gae", "grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "entropy_shaped", "dapo_overlong_penalty",
    "ppo_clip_loss", "gspo_loss", "sft_nll", "kl_penalty", "KL_KINDS", "value_loss", "entropy_bonus",
    "FixedKL", "AdaptiveKL", "kl_in_reward",
    "LogZHead", "pool_prompt", "flowrl_loss", "FLOWRL_WEIGHT_MODES",
    "hpt_switch", "hpt_soft_coefficients", "HPT_SOFT_TABLES",
    "group_std", "zero_variance_groups", "keep_mixed_groups",
]
