"""SSRL (algorithms.md §5): the knowledge-variant tiny model (the mode: :mod:`reasonrl.modes`; the benchmark:
:mod:`reasonrl.bench.ssrl`).

The pieces live where their data lives: the trajectory reward in ``rewards.ssrl``, the tool loop and
information masking in ``rollout.multiturn`` (composed by ``rollout.factory.make_rollout_engine``), the
``ssrl`` mode in ``reasonrl.modes``, the search backend in ``reasonrl.rollout.search``, the world and
its questions in ``tasks.knowledge``.
"""

from __future__ import annotations

from pathlib import Path

from reasonrl.models.tiny import variant_spec

# The knowledge variant of the built-in model (its build settings: ``tasks.knowledge.TINY_MODEL_SPEC``).
# The default model's spec is untouched.
KNOWLEDGE_SPEC = variant_spec("knowledge")


def knowledge_model(log=print) -> Path:
    """Directory of the knowledge-variant tiny model (built and cached on first use, ~10 min on one thread)."""
    from reasonrl.models.tiny import build_default_model

    return build_default_model(KNOWLEDGE_SPEC, log=log)


