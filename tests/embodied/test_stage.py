import pytest
import torch

from reasonrl.embodied.config import load_vla_config
from reasonrl.embodied.envs import EnvPool
from reasonrl.embodied.stage import VLARolloutStage

from vla_helpers import tiny_policy


def _stage(pool, low, high, rounds=1):
    cfg = load_vla_config(None, ["env.tasks=[reach,push]", "env.max_steps=8", "env.chunk_len=2", "rollout.n=4",
                                 f"rollout.accuracy_low={low}", f"rollout.accuracy_high={high}",
                                 f"rollout.max_rounds={rounds}"])
    policy, tok = tiny_policy(chunk_len=2)
    return VLARolloutStage(policy, pool, tok, cfg)


def test_collect_returns_contiguous_groups_of_trajectories():
    with EnvPool(0, 0, 8) as pool:
        col = _stage(pool, 0.0, 1.0).collect(3, torch.Generator().manual_seed(0))
    b = col.batch
    assert len(b) == 12 and b.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert [t.meta["task"] for t in col.tasks] == [b.info["task"][i] for i in (0, 4, 8)]
    assert [t.uid for t in col.tasks] == [f"{t}:{s}" for t, s in zip(b.info["task"][::4], b.info["seed"][::4])]
    assert len({(t, s) for t, s in zip(b.info["task"][:4], b.info["seed"][:4])}) == 1  # one initial state per group
    assert set(b.rewards.tolist()) <= {0.0, 1.0} and b.rewards.tolist() == [float(c) for c in b.info["correct"]]
    assert torch.equal(b.loss_mask.sum(1) % 4, torch.zeros(12))  # whole env steps of 4 tokens each
    assert b.extras["vla_state"].shape == (12, 4, 31)
    assert col.metrics["env/steps"] == int(b.loss_mask.sum()) // 4


@pytest.mark.parametrize("low,high", [(0.1, 0.9), (0.3, 0.6)])
def test_dynamic_sampling_keeps_only_groups_within_bounds(low, high):
    with EnvPool(0, 0, 8) as pool:
        col = _stage(pool, low, high, rounds=2).collect(3, torch.Generator().manual_seed(1))
    assert col.metrics["batch/gen_rounds"] <= 2
    if col.batch is not None and len(col.batch):
        rate = col.batch.rewards.view(-1, 4).mean(1)
        assert bool(((rate >= low) & (rate <= high)).all())
        assert len(col.batch) == 4 * col.metrics["batch/kept_groups"] <= 12


def test_mode_factory_builds_a_working_stage():
    from reasonrl.embodied.stage import make_vla_stage

    policy, _ = tiny_policy(chunk_len=2)
    cfg = {"env": {"tasks": ["reach"], "max_steps": 4, "chunk_len": 2, "n_workers": 0},
           "rollout": {"n": 2, "accuracy_low": 0.0, "accuracy_high": 1.0, "max_rounds": 1}}
    stage = make_vla_stage(cfg, policy, None, None)  # action tokenizer rebuilt from the policy's config
    try:
        col = stage.collect(1, torch.Generator().manual_seed(0))
    finally:
        stage.pool.close()
    assert len(col.batch) == 2 and stage.tok.n_bins == policy.config.n_bins
