"""``reasonrl bench vla`` end to end at toy size: every arm, including the ten-demo start + GRPO arm, is scored
on the same held-out states and written to results.json / results.md."""

import json

import pytest

from reasonrl.embodied.envs import TASKS  # noqa: F401  (skips cleanly below when MuJoCo is missing)

pytest.importorskip("gymnasium_robotics")

TINY = ["env.n_workers=0", "env.max_steps=4", "eval.states_per_task=4", "sft.steps=2", "sft.augment=0",
        "policy.d_model=16", "policy.n_layer=1", "policy.n_head=2", "policy.n_bins=16", "train.steps=1",
        "train.epochs=1", "train.mini_batches=1", "rollout.n=2", "rollout.groups_per_step=2", "rollout.max_rounds=1",
        "rollout.accuracy_low=0", "rollout.accuracy_high=1", "eval.strip_episodes=0"]


def test_bench_has_the_ten_demo_grpo_arm(tmp_path):
    from reasonrl.embodied.bench import run

    assert run(TINY + ["bench.reference=true", "bench.ten_demo_steps=1", f"bench.out={tmp_path}"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    seed = res["seeds"][0]
    assert set(seed["arms"]) == {"start", "grpo", "control", "bc10", "bc10_grpo"}
    assert seed["arms"]["bc10_grpo"]["n"] == 4 and seed["bc10_grpo"]["env_steps"] > 0
    assert seed["bc10_grpo"]["updates"] == 1
    assert "bc10_grpo" in (tmp_path / "results.md").read_text()
    with pytest.raises(SystemExit, match="unknown bench option"):
        run(["bench.ten_demo=1"])
