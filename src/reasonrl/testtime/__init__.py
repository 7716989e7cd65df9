"""Inference-time methods on a frozen model: LatentSeek, majority vote, best-of-n (docs/testtime.md)."""

from reasonrl.testtime.baselines import SampledBaseline, sample_baselines
from reasonrl.testtime.latentseek import (
    LatentSeekConfig,
    OracleReward,
    ProblemResult,
    SelfReward,
    capture_latents,
    latent_loss,
    latent_step,
    latentseek,
    num_latents,
    oracle_reward,
    should_stop,
)
from reasonrl.testtime.verifier import DEFAULT_WEIGHTS, parse_verdict, self_reward

__all__ = [
    "LatentSeekConfig", "OracleReward", "ProblemResult", "SelfReward", "capture_latents", "latent_loss",
    "latent_step", "latentseek", "num_latents", "oracle_reward", "should_stop", "SampledBaseline",
    "sample_baselines", "DEFAULT_WEIGHTS", "parse_verdict", "self_reward",
]
