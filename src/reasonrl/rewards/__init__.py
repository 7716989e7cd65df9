"""Rewards: answer extraction, math verification in a killable worker, sandboxed code execution,
the batch verifiers by name (:mod:`reasonrl.rewards.verifiers`), and the :class:`Scorer` stage that
combines them with format rewards and user reward functions (docs/rewards.md)."""

from reasonrl.rewards.countdown import countdown_score
from reasonrl.rewards.extract import extract_answer, extract_answer_tag, extract_boxed, extract_code
from reasonrl.rewards.format import format_reward
from reasonrl.rewards.math_verify_worker import MathVerifier, Verdict, get_default_verifier
from reasonrl.rewards.scorer import (
    USER_FN_SIGNATURE,
    VERIFIERS,
    RewardFunctionError,
    batch_reward,
    RewardInfrastructureError,
    RewardResult,
    RewardSpec,
    Scorer,
    load_reward_function,
)
from reasonrl.rewards.verifiers import Graded, Verifier, register_verifier

__all__ = [
    "extract_boxed", "extract_answer", "extract_answer_tag",
    "MathVerifier", "Verdict", "get_default_verifier",
    "countdown_score", "format_reward",
    "Scorer", "RewardSpec", "RewardResult", "RewardFunctionError", "RewardInfrastructureError",
    "load_reward_function", "USER_FN_SIGNATURE", "VERIFIERS", "batch_reward", "extract_code",
    "Verifier", "Graded", "register_verifier",
]
