"""Rollout modes: how a run turns prompts (or environments) into scored trajectories.

A mode is a factory ``factory(cfg, model, tokenizer, scorer) -> RolloutStage``
(``reasonrl.rollout.stage``), registered by name. The trainer asks for the configured mode's stage once,
at build time, and never branches on the mode afterwards. Text-based factories also take
``engine=`` (an already composed engine, e.g. the Ray rollout workers'); otherwise they compose one with
``rollout.factory.make_rollout_engine``, so ``rollout.engine``, the tool loop and SSRL masking apply
the same way in every mode and execution mode.

Built-in modes: ``text`` (the data.train stream, graded by the scorer), ``ttrl`` (label-free
majority-vote rewards, docs/ttrl.md), ``ssrl`` (SSRL's trajectory reward, docs/ssrl.md). Adding a mode
is one file with its factory plus a registry line: ``register_mode("name", factory)`` at import
time, or a ``"name": "pkg.module:factory"`` entry in ``_LAZY`` below so the module is imported only
when a run selects it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

_REGISTRY: dict[str, Callable[..., Any]] = {}
_LAZY: dict[str, str] = {
    "text": "reasonrl.modes:text_mode",
    "ttrl": "reasonrl.modes:ttrl_mode",
    "ssrl": "reasonrl.modes:ssrl_mode",
    "vla": "reasonrl.embodied.stage:make_vla_stage",
    "drive": "reasonrl.driving.mode:make_drive_stage",
}
# Modes whose policy is not a causal LM loaded from model.path build it themselves:
# ``builder(cfg, log, warm_start) -> (model, tokenizer)`` (the trainer's ``load_model`` asks here first).
_MODEL_BUILDERS: dict[str, Callable[..., Any]] = {}
_MODEL_LAZY: dict[str, str] = {"vla": "reasonrl.embodied.stage:build_vla_model",
                               "drive": "reasonrl.driving.mode:build_drive_model"}


def register_mode(name: str, factory: Callable[..., Any]) -> None:
    """Make ``factory(cfg, model, tokenizer, scorer) -> RolloutStage`` selectable as mode ``name``."""
    if not callable(factory):
        raise TypeError(f"mode {name!r}: factory must be callable, got {type(factory).__name__}")
    _REGISTRY[name] = factory


def register_model_builder(name: str, builder: Callable[..., Any]) -> None:
    """Mode ``name`` builds its own policy: ``builder(cfg, log, warm_start) -> (model, tokenizer)`` replaces loading
    ``model.path`` (checkpoints and resume still go through the trainer as for any HF model; ``warm_start=False``
    when a committed checkpoint will replace the weights, so an expensive initialisation can be skipped)."""
    _MODEL_BUILDERS[name] = builder


def model_builder(cfg) -> Callable[..., Any] | None:
    """The configured mode's policy builder, or None (the policy is ``model.path``)."""
    name = mode_name(cfg)
    if name not in _MODEL_BUILDERS and name in _MODEL_LAZY:
        mod, _, attr = _MODEL_LAZY[name].partition(":")
        _MODEL_BUILDERS[name] = getattr(importlib.import_module(mod), attr)
    return _MODEL_BUILDERS.get(name)


def available_modes() -> list[str]:
    return sorted(set(_REGISTRY) | set(_LAZY))


def get_mode(name: str) -> Callable[..., Any]:
    if name not in _REGISTRY and name in _LAZY:
        mod, _, attr = _LAZY[name].partition(":")
        _REGISTRY.setdefault(name, getattr(importlib.import_module(mod), attr))
    if name not in _REGISTRY:
        raise ValueError(f"rollout.mode={name!r} is unknown; registered modes: {', '.join(available_modes())} "
                         f"(a mode registers itself with reasonrl.modes.register_mode)")
    return _REGISTRY[name]


def mode_name(cfg) -> str:
    """``rollout.mode`` when set; else derived from the sections that switch a mode on (``ttrl.enabled``,
    ``ssrl.reward``), so existing configs keep working."""
    if cfg.rollout.mode:
        return cfg.rollout.mode
    if cfg.ttrl.enabled:
        return "ttrl"
    if cfg.ssrl.reward:
        return "ssrl"
    return "text"


def make_rollout_stage(cfg, model, tokenizer, scorer, *, engine=None):
    """The configured mode's rollout stage: ``factory(cfg, model, tokenizer, scorer)``; used by every
    execution mode (single process, the async producer on its copy of the policy, the Ray driver).

    ``engine``: an already composed engine for the stage to use instead of composing one on ``model``
    (the Ray driver passes its engine over the rollout workers, each of which composed its own with
    ``make_rollout_engine``); only modes whose factory takes ``engine=`` (the text-based ones) accept it.
    """
    import inspect

    name = mode_name(cfg)
    factory = get_mode(name)
    if engine is None:
        return factory(cfg, model, tokenizer, scorer)
    try:
        inspect.signature(factory).bind(cfg, model, tokenizer, scorer, engine=engine)
    except TypeError:
        raise ValueError(f"rollout.mode={name!r} builds its own rollout and cannot use a given engine (Ray "
                         f"rollout workers); run it with distributed.mode=local") from None
    return factory(cfg, model, tokenizer, scorer, engine=engine)


# ----------------------------------------------------------------------------------- built-in modes
def text_mode(cfg, model, tokenizer, scorer, *, engine=None):
    """Prompts from ``data.train``, ``rollout.n`` samples each, graded by the task's verifier."""
    from reasonrl.rollout.factory import make_rollout_engine
    from reasonrl.rollout.stage import TextRolloutStage

    engine = engine or make_rollout_engine(cfg, model, tokenizer)
    return TextRolloutStage.from_config(cfg, engine, scorer)


def ssrl_mode(cfg, model, tokenizer, scorer, *, engine=None):
    """The text mode graded by SSRL's em_weight*EM + format_weight*format (algorithms.md §5.2); that
    scorer also grades evaluation, as the task's verifier would."""
    return text_mode(cfg, model, tokenizer, _ssrl_scorer(cfg, scorer), engine=engine)


def _ssrl_scorer(cfg, scorer):
    """SSRL's trajectory reward when ``ssrl.reward`` is on (it composes with TTRL's vote too)."""
    if not cfg.ssrl.reward:
        return scorer
    from reasonrl.rewards.ssrl import SSRLScorer

    return SSRLScorer(cfg.ssrl.em_weight, cfg.ssrl.format_weight)


class _BlindTasks:
    """TTRL's task source: the held-out pool (or ``data.train``) with gold answers hidden from training."""

    def __init__(self, inner, ttrl):
        self.inner, self.ttrl = inner, ttrl

    def next(self, n: int) -> list:
        return self.ttrl.hide_labels(self.inner.next(n))

    cursor = property(lambda self: self.inner.cursor, lambda self, v: setattr(self.inner, "cursor", v))

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, st) -> None:
        self.inner.load_state_dict(st)


def ttrl_mode(cfg, model, tokenizer, scorer, *, engine=None):
    """Label-free TTRL (docs/ttrl.md): ``ttrl.n_votes`` samples per prompt, rewards from their majority
    answer, the first ``rollout.n`` kept; with ``ttrl.prompts=heldout`` it trains on the evaluation prompts."""
    from reasonrl.rewards.majority import MajorityVoteReward
    from reasonrl.tasks.base import cycle_tasks
    from reasonrl.rollout.factory import make_rollout_engine
    from reasonrl.rollout.stage import TaskStream, TextRolloutStage

    engine = engine or make_rollout_engine(cfg, model, tokenizer)
    scorer = _ssrl_scorer(cfg, scorer)
    ttrl = MajorityVoteReward.from_config(cfg, scorer)
    if cfg.ttrl.prompts == "heldout":
        from reasonrl.eval.runner import heldout_tasks

        pool = heldout_tasks(cfg)
        source = TaskStream(lambda n, start: cycle_tasks(pool, n, start, cfg.run.seed))
    else:
        source = TaskStream.from_config(cfg)
    return TextRolloutStage.from_config(cfg, engine, scorer, _BlindTasks(source, ttrl), samples=cfg.ttrl.n_votes,
                                        reward=ttrl)
