"""``build(cfg) -> Run``: every component of a run, assembled once from config and registries.

model + tokenizer (``models.resolve``/``models.loading``), recipe (``algorithms`` registry), learner
(modules, reference, optimizer), scorer (``rewards``), rollout stage (``reasonrl.modes`` via
``reasonrl.modes.make_rollout_stage``: the mode, the engine and its wrappers) and the held-out tasks
of evaluation. Nothing here branches on the algorithm or the mode; the trainer loop
(``trainer/loop.py``) only wires these together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reasonrl.algorithms.recipes import Recipe, make_recipe
from reasonrl.config import Config
from reasonrl.trainer.learner import Learner


@dataclass
class Run:
    cfg: Config
    model: torch.nn.Module
    tokenizer: Any
    model_dir: Path | None
    recipe: Recipe
    learner: Learner
    scorer: Any  # the run's scorer as configured; the stage may grade with a mode's own (stage.scorer)
    stage: Any  # a RolloutStage (reasonrl.rollout.stage)
    test_tasks: list


def make_scorer(cfg: Config):
    """The ``reward`` section as a ``Scorer`` (verifiers, format terms, user functions, code sandbox)."""
    from reasonrl.rewards import Scorer
    from reasonrl.rewards.sandbox import SandboxConfig

    r = cfg.reward
    fns = []
    for spec in r.functions:
        path, _, w = spec.partition("=")
        fns.append((path, float(w) if w else 1.0))
    return Scorer(correctness_weight=r.correctness, format_weight=r.format,
                  user_fns=fns, math_timeout_s=r.math_timeout_s, max_error_fraction=r.max_error_fraction,
                  tag_format_weight=r.tag_format, length_penalty_weight=r.length_penalty,
                  length_target_chars=r.length_target_chars, code_partial_credit=r.code_partial_credit, extract=r.extract,
                  sandbox=SandboxConfig(isolation=r.code_sandbox, timeout_s=r.code_timeout_s,
                                        cpu_s=r.code_timeout_s, memory_mb=r.code_memory_mb, workers=r.code_workers))


def load_model(cfg: Config, log=print) -> tuple[torch.nn.Module, Any, Path]:
    from reasonrl.models.loading import load_policy
    from reasonrl.models.resolve import resolve_model
    from reasonrl.modes import model_builder

    builder = model_builder(cfg)
    if builder is not None:  # a mode whose policy is not a causal LM (vla) builds it
        model, tok = builder(cfg, log, warm_start=not _will_resume(cfg))
        return model, tok, None
    model_dir = resolve_model(cfg.model.path, log)
    model, tok = load_policy(model_dir, dtype=cfg.model.dtype)
    return model, tok, model_dir


def _will_resume(cfg: Config) -> bool:
    """Whether ``lifecycle.try_resume`` will load a committed checkpoint right after the model is built (then a
    mode's builder can skip its warm start); corrupt-only checkpoints raise there, with their own message."""
    from reasonrl.trainer.checkpoint import ResumeError, find_resume_point

    if not cfg.trainer.resume:
        return False
    try:
        return find_resume_point(Path(cfg.run_dir) / "checkpoints", required=False) is not None
    except ResumeError:
        return False


def build_learner(cfg: Config, *, log=print, model: torch.nn.Module | None = None,
                  tokenizer: Any = None) -> tuple[Learner, Path | None]:
    """Seeds the process, then model, recipe modules, reference, optimizer in a fixed order, so the random
    initialisation depends on the config only (a Ray learner rank builds exactly this)."""
    from reasonrl.threads import apply_thread_policy

    apply_thread_policy(cfg.run.threads or None)
    from reasonrl.trainer.rng import seed_all

    seed_all(cfg.run.seed)  # python, numpy and torch: the checkpointed RNG state is the run's, not the process's
    model_dir = None
    if model is None:
        model, tokenizer, model_dir = load_model(cfg, log)
    if cfg.model.lora is not None:  # adapters on a frozen base (models/lora.py, docs/lora.md)
        from reasonrl.models.lora import apply_lora, check_supported

        check_supported(cfg)
        model = apply_lora(model, cfg.model.lora)
    return Learner(cfg, model, tokenizer, make_recipe(cfg.algorithm)), model_dir


def build(cfg: Config, *, log=print, model: torch.nn.Module | None = None, tokenizer: Any = None) -> Run:
    """The learner (``build_learner``), then scorer, rollout stage and the held-out tasks."""
    from reasonrl.eval.runner import heldout_tasks
    from reasonrl.modes import make_rollout_stage

    learner, model_dir = build_learner(cfg, log=log, model=model, tokenizer=tokenizer)
    model, tokenizer, recipe = learner.model, learner.tok, learner.recipe
    scorer = make_scorer(cfg)
    stage = make_rollout_stage(cfg, model, tokenizer, scorer)
    test_tasks = stage.heldout_tasks() if hasattr(stage, "heldout_tasks") else heldout_tasks(cfg)
    eval_scorer = getattr(stage, "scorer", scorer)
    if any(t.verifier == "code" for t in test_tasks):
        eval_scorer.executor  # start the sandbox now: no bubblewrap -> fail before any work, with the fix
    return Run(cfg=cfg, model=model, tokenizer=tokenizer, model_dir=model_dir, recipe=recipe, learner=learner,
               scorer=scorer, stage=stage, test_tasks=test_tasks)
