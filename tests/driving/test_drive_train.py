"""DriveMoE training pieces: config, demos -> imitation, flow-chain rollouts as GRPO rows, the drive mode."""

import pytest
import torch

pytest.importorskip("highway_env")

from reasonrl.driving import train as T  # noqa: E402
from reasonrl.driving.config import load_drive_config  # noqa: E402
from reasonrl.driving.envs import DrivePool  # noqa: E402


def _cfg(*extra):
    return load_drive_config(None, ["env.duration=2", "imitation.demos_per_family=1", "imitation.batch=16",
                                    "rollout.n=2", "rollout.groups_per_step=2", "train.steps=1", "train.epochs=1",
                                    "train.mini_batches=1", *extra])


def test_config_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown driving family"):
        load_drive_config(None, ["env.families=[parking]"])
    with pytest.raises(ValueError, match="section.field=value"):
        load_drive_config(None, ["train.steps"])
    assert load_drive_config(None, ["out=/tmp/x"]).out == "/tmp/x"


def test_drive_mode_is_registered():
    from reasonrl.modes import get_mode

    from reasonrl.driving.mode import make_drive_stage

    assert get_mode("drive") is make_drive_stage


def test_rollout_rows_recompute_their_logprobs_and_grpo_moves_the_policy():
    cfg = _cfg()
    torch.manual_seed(0)
    policy = T.build_policy(cfg)
    with DrivePool(0, cfg.env.duration) as pool:
        stage = T.DriveRolloutStage(policy, pool, cfg)
        col = stage.collect(2, torch.Generator().manual_seed(0))
    b = col.batch
    assert len(b) == 4 and b.group_ids.tolist() == [0, 0, 1, 1]
    assert b.loss_mask.shape[1] == pool.max_steps * policy.config.flow_steps
    m = b.loss_mask.bool()
    assert torch.all(b.rollout_logp[m] != 0) and torch.all(b.rollout_logp[~m] == 0)
    again = T.sequence_logprobs(policy, b, cfg.rollout.noise)
    assert torch.allclose(again[m], b.rollout_logp[m], atol=1e-3)
    # one GRPO step through the embodied learner: the advantage-weighted log-likelihood goes up
    from reasonrl.algorithms.recipes import make_recipe
    from reasonrl.embodied.train import grpo_update

    b.rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0]).view(-1, 1)
    before = float((again.detach() * adv * m).sum())
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)  # per-step Gaussians are narrow: small steps
    metrics = grpo_update(policy, opt, make_recipe(cfg.algorithm), b, cfg)  # the policy is the learner seam
    assert "actor/approx_kl" not in metrics or abs(metrics["actor/approx_kl"]) < 1e-3  # first epoch: on-policy
    after = float((T.sequence_logprobs(policy, b, cfg.rollout.noise) * adv * m).sum())
    assert after > before


def test_imitation_lowers_the_flow_loss_on_expert_data():
    cfg = _cfg("imitation.stage1_steps=60", "imitation.stage2_steps=0", "env.families=[highway,merge]", "env.duration=3")
    data = T.gather_demos(cfg.env.families, 1, cfg.env.duration, log=lambda m: None)
    assert len(data) == 12 and data.views.shape[1:] == (5, 48, 48)
    policy = T.build_policy(cfg, data)
    hist = T.imitation(policy, data, cfg, log=lambda m: None)
    first = sum(h["fm"] for h in hist[:10]) / 10
    last = sum(h["fm"] for h in hist[-10:]) / 10
    assert last < 0.6 * first, (first, last)
    assert policy.config.view_counts == torch.bincount(data.view_labels, minlength=4).tolist()


def test_mode_factory_builds_a_stage_from_a_plain_dict():
    cfg = _cfg()
    torch.manual_seed(0)
    policy = T.build_policy(cfg)
    from reasonrl.driving.mode import make_drive_stage

    stage = make_drive_stage({"driving": cfg.model_dump()}["driving"], policy)
    try:
        assert isinstance(stage.inner, T.DriveRolloutStage) and stage.cfg.env.duration == 2
    finally:
        stage.close()


def test_router_report_counts_per_class():
    pred = torch.tensor([0, 0, 0, 1, 0, 2])
    lab = torch.tensor([0, 0, 1, 1, 0, 0])
    r = T.router_report(pred, lab, 4)
    assert r["acc"] == pytest.approx(4 / 6) and r["majority_rate"] == pytest.approx(4 / 6)
    assert r["per_class_recall"] == [0.75, 0.5, None, None] and r["balanced_acc"] == pytest.approx(0.625)
    assert r["confusion"][0] == [3, 0, 1, 0] and r["confusion"][1] == [1, 1, 0, 0] and r["support"] == [4, 2, 0, 0]


def test_dagger_relabels_the_policys_own_states_and_grows_the_data():
    cfg = _cfg("env.families=[highway]", "imitation.stage1_steps=2", "imitation.stage2_steps=1",
               "imitation.dagger_rounds=1", "imitation.dagger_seeds_per_family=2", "imitation.dagger_steps=1")
    data = T.gather_demos(cfg.env.families, 1, cfg.env.duration, log=lambda m: None)
    torch.manual_seed(0)
    policy = T.build_policy(cfg, data)
    with DrivePool(0, cfg.env.duration) as pool:
        new = T.dagger_data(policy, pool, T.dagger_inits(cfg, 0), torch.Generator().manual_seed(1))
        ep = T.run_episodes(policy, pool, T.dagger_inits(cfg, 0), relabel=True, generator=torch.Generator().manual_seed(1))
        hist = T.imitation(policy, data, cfg, log=lambda m: None, pool=pool)
    assert len(new) == int((ep.n_calls - 1).sum()) > 0  # every visited state but each episode's first
    assert torch.allclose(new.waypoints, ep.expert_wp[:, 1:][(ep.expert_skill[:, 1:] >= 0)])
    assert new.waypoints.abs().sum() > 0 and (new.skill_labels >= 0).all()
    assert T.dagger_inits(cfg, 0) != T.dagger_inits(cfg, 1)
    grown = [h["samples"] for h in hist]  # stage 1 on the demos; the DAgger round's step and stage 2 on more
    assert grown[:2] == [len(data)] * 2 and grown[2] == grown[3] > len(data)
