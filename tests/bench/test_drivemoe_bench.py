"""`reasonrl bench drivemoe` end to end at toy size: every arm evaluated, results written and rendered."""

import json

import pytest

pytest.importorskip("highway_env")


@pytest.mark.slow
def test_drivemoe_bench_writes_every_arm(tmp_path):
    from reasonrl.bench import run_bench

    rc = run_bench("drivemoe", [f"bench.out={tmp_path}", "bench.variants=dense,full_moe", "bench.expert=false",
                                "env.families=[highway,merge]", "env.duration=2", "imitation.demos_per_family=1",
                                "imitation.stage1_steps=4", "imitation.stage2_steps=2", "imitation.batch=8",
                                "eval.seeds_per_family=2", "train.steps=1", "rollout.n=2", "rollout.groups_per_step=1",
                                "train.epochs=1", "train.mini_batches=1", "imitation.dagger_rounds=1",
                                "imitation.dagger_seeds_per_family=1", "imitation.dagger_steps=1"])
    assert rc == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert set(doc["seeds"][0]["arms"]) == {"dense", "dense+rl", "full_moe", "full_moe+rl"}
    ev = doc["seeds"][0]["arms"]["full_moe"]["eval"]
    assert set(ev["per_family"]) == {"highway", "merge"} and len(ev["success_vec"]) == 4
    assert "expert_usage" in ev["per_family"]["merge"] and "view_usage" in ev["per_family"]["merge"]
    assert doc["seeds"][0]["arms"]["full_moe"]["encoder"]["argmax"]["images_per_call"] == 2
    s0 = doc["seeds"][0]
    assert s0["arms"]["dense"]["imitation_samples"] > s0["demo_samples"]  # the DAgger round added relabelled states
    assert len(s0["arms"]["full_moe"]["skill_router"]["confusion"]) == 5
    md = (tmp_path / "results.md").read_text()
    assert "full_moe+rl" in md and "skill_router: recall" in md and "balanced" in md and doc["command"].startswith("reasonrl bench drivemoe")
