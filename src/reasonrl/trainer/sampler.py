"""The loop's collect step: fill one step's batch from the rollout stage, through the recipe's row filter.

A recipe that filters rows (DAPO's dynamic sampling drops equal-reward groups) says how many
generation rounds it may take to refill them (``Recipe.max_gen_batches``); every other recipe takes
one round, so this is exactly one ``stage.collect``. Ungradable groups (dropped by the stage, never
scored 0) count as filled, and past ``reward.max_error_fraction`` of all groups so far the run stops.
"""

from __future__ import annotations

import torch

from reasonrl.algorithms.recipes import Recipe
from reasonrl.batch import concat
from reasonrl.rollout.stage import Collected
from reasonrl.trainer.learner import TrainingError

_SUMMED = ("time/gen_s", "time/reward_s", "reward/invalid_groups")


class BatchSampler:
    def __init__(self, stage, recipe: Recipe, cfg, pad_id: int):
        self.stage, self.recipe, self.cfg, self.pad_id = stage, recipe, cfg, pad_id
        self.invalid_groups_total = self.groups_total = 0

    def collect(self, rng: torch.Generator | None = None) -> Collected:
        n, size = self.cfg.trainer.prompts_per_step, self.cfg.rollout.n
        mg = self.recipe.max_gen_batches
        max_rounds = mg if mg is not None and mg > 0 else 10**9  # <= 0: unlimited (DAPO)
        kept, tasks, ms = [], [], []
        have = rounds = 0
        while have < n:
            if rounds >= max_rounds:
                raise TrainingError(
                    f"sample filter kept only {have}/{n} prompts after {rounds} generation rounds "
                    f"(algorithm.max_gen_batches={max_rounds}); raise algorithm.max_gen_batches (<= 0: "
                    f"unlimited), relax the filter, or pick easier/harder prompts so groups have mixed rewards")
            rounds += 1
            got = self.stage.collect(n, rng)
            ro = got.batch
            ro.group_ids = ro.group_ids + len(tasks)  # this round's groups follow the earlier rounds'
            ro.task_index = [i + len(tasks) for i in ro.task_index]
            tasks.extend(got.tasks)
            ms.append(got.metrics)
            rows = self.recipe.filter_rows(ro)
            if rows is not None:
                ro = ro.select(rows)
            kept.append(ro)
            have += len(ro) // size + int(got.metrics.get("reward/invalid_groups", 0))
        m = _merge(ms)
        m["batch/gen_rounds"] = rounds
        check_invalid(self, int(m.get("reward/invalid_groups", 0)), rounds * n)
        batch = concat(kept, self.pad_id)
        if len(batch) > n * size:
            batch = batch.select(list(range(n * size)))
        return Collected(batch.trim(), tasks, m)


def check_invalid(counter, invalid: int, groups: int) -> None:
    """Stop when ungradable groups exceed ``reward.max_error_fraction`` of all groups so far: past that
    the run is training on what the graders happen to survive. ``counter``: ``cfg`` and the running
    ``invalid_groups_total``/``groups_total`` (a ``BatchSampler``)."""
    counter.invalid_groups_total += invalid
    counter.groups_total += groups
    limit = counter.cfg.reward.max_error_fraction
    if counter.invalid_groups_total > limit * counter.groups_total:
        raise TrainingError(
            f"{counter.invalid_groups_total}/{counter.groups_total} prompt groups so far could not be graded "
            f"(verifier or sandbox infrastructure errors, dropped rather than scored 0), more than "
            f"reward.max_error_fraction={limit}; fix the grader (for code: is bubblewrap working? see the "
            f"reward/code_infra_error metric) or raise reward.max_error_fraction")


def _merge(ms: list[dict[str, float]]) -> dict[str, float]:
    """One step's metrics from its rounds: times and counts summed, rates over the summed time,
    the rest (means over equal-sized rounds) averaged."""
    if len(ms) == 1:
        return dict(ms[0])
    keys = list(dict.fromkeys(k for m in ms for k in m))
    out = {}
    for k in keys:
        vals = [m[k] for m in ms if k in m]
        out[k] = sum(vals) if k in _SUMMED else sum(vals) / len(vals)
    if all("time/gen_s" in m and "perf/gen_tokens_per_s" in m for m in ms):
        tokens = sum(m["perf/gen_tokens_per_s"] * m["time/gen_s"] for m in ms)
        out["perf/gen_tokens_per_s"] = tokens / max(out["time/gen_s"], 1e-9)
    return out
