"""``reasonrl train configs/drivemoe.yaml``: mode ``drive`` through the normal trainer (policy built by the mode's
model builder, GRPO steps over noisy-flow episodes, closed-loop evaluation, HF checkpoints)."""

import json

import pytest

pytest.importorskip("highway_env")

from reasonrl.config import load_config  # noqa: E402

TINY = ["trainer.prompts_per_step=2", "trainer.mini_batch_prompts=0", "rollout.n=2", "trainer.epochs=1",
        "trainer.save_every=1", "driving.env.duration=1", "driving.env.families=[highway]",
        "driving.eval.seeds_per_family=2", "driving.imitation.demos_per_family=1", "driving.imitation.stage1_steps=2",
        "driving.imitation.stage2_steps=1", "driving.imitation.dagger_rounds=0", "driving.imitation.batch=8",
        "driving.policy.d_model=16", "driving.policy.expert_hidden=8", "driving.policy.flow_steps=2"]


def test_shipped_config_loads_for_the_trainer_and_the_bench():
    from reasonrl.driving.config import load_drive_config

    cfg = load_config("configs/drivemoe.yaml")
    assert cfg.rollout.mode == "drive" and cfg.driving["policy"]["variant"] == "full_moe"
    with pytest.raises(ValueError, match="is a trainer config"):
        load_drive_config("configs/drivemoe.yaml")
    run = load_drive_config("configs/drivemoe.yaml", ["imitation.stage1_steps=7"], trainer_config_loader=load_config)
    assert run.rollout.n == cfg.rollout.n and run.rollout.groups_per_step == cfg.trainer.prompts_per_step
    assert run.train.lr == cfg.optim.lr and run.imitation.stage1_steps == 7
    with pytest.raises(Exception, match="unknown driving family"):
        load_config("configs/drivemoe.yaml", ["driving.env.families=[parking]"])


def test_drive_trains_through_the_trainer(tmp_path):
    from reasonrl.driving.policy import DrivePolicy
    from reasonrl.trainer.loop import Trainer

    cfg = load_config("configs/drivemoe.yaml", TINY + [f"run.out_dir={tmp_path}", "run.name=d", "trainer.steps=2"])
    tr = Trainer(cfg, log=lambda *_: None)
    try:
        summary = tr.run()
    finally:
        tr.stage.close()
    assert summary["steps"] == 2 and "final/success/highway" in summary
    model_dir = tmp_path / "d" / "checkpoints" / "step_2" / "model"
    assert (model_dir / "drive_tokenizer.json").exists()
    assert isinstance(DrivePolicy.from_pretrained(model_dir), DrivePolicy)
    rows = [json.loads(x) for x in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "actor/loss" in r or "episode/crash_rate" in r]
    assert [r["step"] for r in trained] == [1, 2]


def test_a_resuming_drive_run_skips_the_imitation_warm_start():
    """The checkpoint overwrites every weight, so imitation before a resume would be wasted minutes; the
    weights must then differ from a warm-started build (imitation moved them)."""
    import torch

    from reasonrl.driving.mode import build_drive_model

    cfg = load_config("configs/drivemoe.yaml", TINY)
    logs: list[str] = []
    cold, _ = build_drive_model(cfg, logs.append, warm_start=False)
    warm, _ = build_drive_model(cfg, lambda *_: None, warm_start=True)
    assert any("imitation warm start skipped" in m for m in logs)
    assert cold.state_dict().keys() == warm.state_dict().keys()
    assert any(not torch.equal(cold.state_dict()[k], warm.state_dict()[k]) for k in cold.state_dict())
