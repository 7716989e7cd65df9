"""The collect step over any RolloutStage: refill rounds for a filtering recipe, group renumbering,
metrics merged over rounds, and the round limit's error."""

from types import SimpleNamespace

import pytest
import torch

from reasonrl.algorithms.recipes import make_recipe
from reasonrl.batch import Rollouts
from reasonrl.rollout.stage import Collected
from reasonrl.trainer.learner import TrainingError
from reasonrl.trainer.sampler import BatchSampler


class ScriptedStage:
    """Yields groups of 2 rows whose rewards follow a script: 'm' mixed (kept by DAPO), 'u' uniform (dropped)."""

    def __init__(self, script: str):
        self.script, self.calls = list(script), 0

    def collect(self, n_groups, rng):
        kinds = [self.script.pop(0) for _ in range(n_groups)]
        b = 2 * n_groups
        rewards = torch.tensor([r for k in kinds for r in ((1.0, 0.0) if k == "m" else (1.0, 1.0))])
        ro = Rollouts(prompt_ids=torch.ones(b, 2, dtype=torch.long), prompt_mask=torch.ones(b, 2, dtype=torch.long),
                      response_ids=torch.ones(b, 3, dtype=torch.long), loss_mask=torch.ones(b, 3),
                      rollout_logp=torch.zeros(b, 3), group_ids=torch.arange(b) // 2,
                      task_index=(torch.arange(b) // 2).tolist(), response_text=[""] * b,
                      truncated=torch.zeros(b, dtype=torch.bool), rewards=rewards,
                      info={"correct": [bool(r) for r in rewards.tolist()]})
        self.calls += 1
        return Collected(ro, [f"task{self.calls}.{i}" for i in range(n_groups)],
                         {"time/gen_s": 1.0, "perf/gen_tokens_per_s": 10.0 * self.calls, "reward/mean": self.calls,
                          "reward/invalid_groups": 0})


def _cfg(prompts: int):
    return SimpleNamespace(trainer=SimpleNamespace(prompts_per_step=prompts), rollout=SimpleNamespace(n=2),
                           reward=SimpleNamespace(max_error_fraction=0.5))


def test_filtering_recipe_refills_over_rounds_with_renumbered_groups():
    stage = ScriptedStage("mum" + "umm")
    got = BatchSampler(stage, make_recipe({"name": "dapo"}), _cfg(3), pad_id=0).collect()
    assert stage.calls == 2 and got.metrics["batch/gen_rounds"] == 2
    assert len(got.batch) == 6  # 2 mixed groups from round 1, then the first one of round 2 (the batch is full)
    assert got.batch.group_ids.tolist() == [0, 0, 2, 2, 4, 4]  # round 2's groups follow round 1's 3 tasks
    assert [got.tasks[i] for i in got.batch.task_index[::2]] == ["task1.0", "task1.2", "task2.1"]
    m = got.metrics
    assert m["time/gen_s"] == 2.0 and m["reward/mean"] == 1.5  # times summed, means averaged over rounds
    assert m["perf/gen_tokens_per_s"] == pytest.approx(15.0)  # total tokens / total generation time


def test_one_round_for_a_recipe_without_a_filter_and_an_error_at_the_round_limit():
    stage = ScriptedStage("uu")
    got = BatchSampler(stage, make_recipe({"name": "grpo"}), _cfg(2), pad_id=0).collect()
    assert stage.calls == 1 and len(got.batch) == 4 and got.metrics["batch/gen_rounds"] == 1
    with pytest.raises(TrainingError, match="max_gen_batches=2"):
        BatchSampler(ScriptedStage("uu" * 4), make_recipe({"name": "dapo", "max_gen_batches": 2}), _cfg(2), 0).collect()
