"""SSRL (algorithms.md §5) wiring: the knowledge-variant tiny model and the trainer hook (the benchmark:
:mod:`reasonrl.bench.ssrl`).

The pieces live where their data lives: the trajectory reward in ``rewards.ssrl``, the tool loop and
information masking in ``rollout.multiturn``, the search backend in ``reasonrl.rollout.search``, the world
and its questions in ``tasks.knowledge``. This module only connects them.
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


def make_tools(cfg) -> list:
    """The tools named in ``cfg.tools`` (a ``ToolsConfig``)."""
    from reasonrl.rollout.multiturn import Calculator
    from reasonrl.rollout.search import HTTPSearchTool, SearchTool

    out = []
    for name in cfg.names:
        if name == "search":
            out.append(HTTPSearchTool(cfg.search_url, cfg.top_k) if cfg.search_url
                       else SearchTool.from_corpus(cfg.search_corpus, cfg.top_k))
        elif name == "calculator":
            out.append(Calculator())
        else:
            raise ValueError(f"tools.names: unknown tool {name!r}; valid: search, calculator")
    return out


def wrap_engine_and_scorer(cfg, engine, scorer):
    """The trainer's hook: tool loop if ``tools.names``, information masking if ``ssrl.mask_information``,
    SSRL reward if ``ssrl.reward``; unchanged engine and scorer otherwise."""
    from reasonrl.rewards.ssrl import SSRLScorer
    from reasonrl.rollout.multiturn import InformationMaskEngine, MultiTurnEngine

    if cfg.tools.names:
        engine = MultiTurnEngine(engine, make_tools(cfg.tools), max_turns=cfg.tools.max_turns)
    if cfg.ssrl.mask_information:
        engine = InformationMaskEngine(engine)
    if cfg.ssrl.reward:
        scorer = SSRLScorer(cfg.ssrl.em_weight, cfg.ssrl.format_weight)
    return engine, scorer
