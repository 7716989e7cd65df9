"""Generation engines: prompts in, ``Rollouts`` out (DESIGN.md ``rollout``).

``HFEngine`` is imported lazily so that using ``SamplingParams`` does not pay for importing
``transformers``.
"""

from reasonrl.rollout.engine import Engine
from reasonrl.rollout.logprobs import sequence_logprobs
from reasonrl.rollout.sampling import SamplingParams, sample_next

__all__ = ["Engine", "HFEngine", "SamplingParams", "sample_next", "sequence_logprobs"]


def __getattr__(name: str):
    if name == "HFEngine":
        from reasonrl.rollout.hf_engine import HFEngine

        return HFEngine
    raise AttributeError(f"module 'reasonrl.rollout' has no attribute {name!r}")
