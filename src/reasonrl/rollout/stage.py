"""The rollout stage: prompts in, scored groups of trajectories out (the trainer's one view of rollout).

Every mode (plain text, TTRL, SSRL, embodied rollouts) hands the trainer an object with
``collect(n_groups, rng) -> Collected``; the trainer never asks which mode it is. Contract:

- ``Collected.batch`` holds ``n_groups`` groups (fewer only when groups were dropped as ungradable;
  report those in ``metrics["reward/invalid_groups"]``), rows of one group contiguous, ``group_ids``
  numbered from 0 in order, ``task_index[i]`` indexing ``Collected.tasks``, and ``rewards``,
  ``loss_mask`` and ``rollout_logp`` set;
- ``rng`` draws the sampling seed (``None``: the global torch generator), so a run is reproducible;
- optional methods: ``load_weights(model_or_state_dict)`` (an engine holding its own weights),
  ``state_dict()``/``load_state_dict(state)`` (a data cursor, saved with every checkpoint), and the
  attributes ``engine``/``scorer`` that text evaluation uses.

:class:`TextRolloutStage` is the text one: a task source, an engine (with whatever tool loop or
masking wrappers ``rollout.factory`` composed), and a reward step. Mode factories
(``reasonrl.modes``) build it with different task sources and reward steps.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from reasonrl.batch import Rollouts
from reasonrl.rollout.sampling import SamplingParams

__all__ = ["Collected", "RolloutStage", "TaskStream", "TextRolloutStage", "ScorerReward"]


@dataclass
class Collected:
    """One collection: the scored batch, the tasks its ``task_index`` refers to, and metrics to log."""

    batch: Rollouts
    tasks: list
    metrics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class RolloutStage(Protocol):
    def collect(self, n_groups: int, rng: torch.Generator | None) -> Collected: ...


class TaskStream:
    """The training prompt stream of ``data.train`` (or any ``next_fn(n, start)``), with its cursor."""

    def __init__(self, next_fn):
        self._next, self.cursor = next_fn, 0

    @classmethod
    def from_config(cls, cfg) -> "TaskStream":
        from reasonrl.tasks import load_tasks

        d = cfg.data
        if d.shuffle and d.train.partition(":")[0] not in ("builtin", "reasoning_gym"):
            from reasonrl.tasks.base import cycle_tasks

            pool = load_tasks(d.train, None, split="train")
            return cls(lambda n, start: cycle_tasks(pool, n, start, cfg.run.seed + 1))
        return cls(lambda n, start: load_tasks(d.train, n, split="train", seed=cfg.run.seed + 1,
                                               difficulty=d.difficulty, start=start))

    def next(self, n: int) -> list:
        tasks = self._next(n, self.cursor)
        self.cursor += n
        return tasks

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.cursor = int(st["cursor"])


class ScorerReward:
    """The default reward step: the scorer grades each response against its task."""

    def __init__(self, stage: "TextRolloutStage"):
        self.stage = stage

    def score(self, tasks: list, ro: Rollouts):
        return ro, self.stage.scorer.score(tasks, ro.response_text)


class TextRolloutStage:
    """Render prompts -> generate ``samples`` per prompt -> reward -> drop ungradable groups.

    ``reward`` (default :class:`ScorerReward`) has ``score(tasks_per_row, rollouts) -> (rollouts,
    RewardResult)`` and may keep fewer rows than it got (TTRL votes on more samples than it trains on:
    ``group_size`` rows per group come out). ``engine`` and ``scorer`` are plain attributes, so a test
    or benchmark may swap them.
    """

    def __init__(self, engine, scorer, tasks: TaskStream, *, sampling: SamplingParams, template: str,
                 group_size: int, reward=None):
        self.engine, self.scorer, self.tasks = engine, scorer, tasks
        self.sampling, self.template, self.group_size = sampling, template, group_size
        self.reward = reward if reward is not None else ScorerReward(self)

    @classmethod
    def from_config(cls, cfg, engine, scorer, tasks: TaskStream | None = None, *, samples: int | None = None,
                    reward=None) -> "TextRolloutStage":
        r = cfg.rollout
        sampling = SamplingParams(n=samples or r.n, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                  max_new_tokens=r.max_new_tokens, stop=list(r.stop))
        return cls(engine, scorer, tasks or TaskStream.from_config(cfg), sampling=sampling,
                   template=cfg.model.template, group_size=r.n, reward=reward)

    def collect(self, n_groups: int, rng: torch.Generator | None) -> Collected:
        from reasonrl.tasks.templates import render_prompt

        tasks = self.tasks.next(n_groups)
        prompts = [render_prompt(t, self.template, self.engine.tokenizer) for t in tasks]
        seed = int(torch.randint(0, 2**62, (1,), generator=rng).item())
        t0 = time.perf_counter()
        ro = self.engine.generate(prompts, dataclasses.replace(self.sampling, seed=seed),
                                  task_index=list(range(len(tasks))))
        gen_s = time.perf_counter() - t0
        m: dict[str, float] = {"time/gen_s": gen_s, **getattr(self.engine, "last_metrics", {})}
        gen_tokens = int(ro.response_valid.sum())
        t0 = time.perf_counter()
        ro, res = self.reward.score([tasks[i] for i in ro.task_index], ro)
        m["time/reward_s"] = time.perf_counter() - t0
        m.update(getattr(self.scorer, "last_metrics", {}))
        ro.rewards = torch.tensor(res.scores, dtype=torch.float32)
        ro.info["correct"] = list(res.correct)
        ro.info["extracted"] = list(res.extracted)
        r = ro.rewards.view(-1, self.group_size)
        m.update({"reward/mean": _mean(res.scores), "reward/accuracy": _mean([float(x) for x in res.correct]),
                  "response/length_mean": _mean(ro.response_lengths.float().tolist()),
                  "response/truncated_frac": _mean(ro.truncated.float().tolist()),
                  "batch/zero_var_frac": _mean((r.max(1).values == r.min(1).values).float().tolist())})
        bad: set[int] = set()
        if not all(res.valid):
            # a grading failure (verifier crash/timeout) is not a wrong answer: drop its whole group
            bad = {int(g) for g, ok in zip(ro.group_ids, res.valid) if not ok}
            ro = ro.select([i for i, g in enumerate(ro.group_ids.tolist()) if g not in bad])
        m["reward/invalid_groups"] = len(bad)
        m["perf/gen_tokens_per_s"] = gen_tokens / max(gen_s, 1e-9)
        m.update(self.scorer.metrics() if hasattr(self.scorer, "metrics") else {})  # grader counters (optional)
        m.update(self.reward.pop_metrics() if hasattr(self.reward, "pop_metrics") else {})
        return Collected(ro, tasks, m)

    def load_weights(self, weights) -> None:
        self.engine.load_weights(weights)

    def state_dict(self) -> dict[str, Any]:
        return self.tasks.state_dict()

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.tasks.load_state_dict(st)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")
