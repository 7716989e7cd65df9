"""``reasonrl train`` with ``rollout.mode=vla``: the normal trainer builds the VLA policy through the mode's
model builder, trains, checkpoints, and a resumed run ends exactly where an uninterrupted one does."""

import json

import pytest
import torch
import yaml

from reasonrl.config import load_config
from reasonrl.embodied.envs import TASKS  # noqa: F401  (skips cleanly below when MuJoCo is missing)

pytest.importorskip("gymnasium_robotics")

TINY = ["trainer.prompts_per_step=2", "trainer.mini_batch_prompts=0", "rollout.n=2", "embodied.env.n_workers=0", "embodied.env.max_steps=4",
        "embodied.eval.states_per_task=4", "embodied.sft.steps=3", "embodied.policy.d_model=16",
        "embodied.policy.n_layer=1", "embodied.policy.n_head=2", "embodied.policy.n_bins=16", "trainer.save_every=1",
        "trainer.epochs=1", "embodied.eval.strip_episodes=2", "embodied.eval.strip_size=32"]


def _cfg(tmp_path, name: str, steps: int, resume: bool = False, extra: tuple = ()):
    raw = yaml.safe_load(open("configs/vla_fetch.yaml"))
    raw["algorithm"] = {"name": "grpo", "clip_low": 0.2, "clip_high": 0.28, "loss_agg": "token-mean"}  # no filter:
    path = tmp_path / "vla.yaml"  # a tiny start rarely succeeds, so DAPO's filter could keep nothing
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, TINY + [f"run.out_dir={tmp_path}", f"run.name={name}", f"trainer.steps={steps}",
                                     f"trainer.resume={str(resume).lower()}", *extra])


def _run(cfg, log=lambda *_: None):
    from reasonrl.report import build_report
    from reasonrl.trainer.loop import Trainer

    tr = Trainer(cfg, log=log)
    summary = tr.run()  # closes the stage (its env workers) itself
    report = build_report(cfg.run_dir, summary).read_text()
    assert 'src="episodes/before.png"' in report and 'src="episodes/after.png"' in report
    return tr, summary


def test_shipped_config_loads_with_the_vla_mode():
    cfg = load_config("configs/vla_fetch.yaml")
    assert cfg.rollout.mode == "vla" and cfg.embodied["env"]["tasks"] == ["reach"]
    with pytest.raises(Exception, match="unknown task"):
        load_config("configs/vla_fetch.yaml", ["embodied.env.tasks=[fly]"])


def test_vla_trains_through_the_trainer_and_resumes_bit_identically(tmp_path):
    ref, summary = _run(_cfg(tmp_path, "ref", 3))
    assert summary["steps"] == 3 and "final/success/reach" in summary
    assert (tmp_path / "ref" / "checkpoints" / "step_3" / "model" / "action_tokenizer.json").exists()
    for name in ("before", "after"):  # episode strips of the first and the final evaluation
        assert (tmp_path / "ref" / "episodes" / f"{name}.png").stat().st_size > 0
        assert (tmp_path / "ref" / "episodes" / f"{name}.gif").exists()

    _run(_cfg(tmp_path, "cut", 2))  # killed after step 2, then resumed to step 3
    lines = []
    resumed, _ = _run(_cfg(tmp_path, "cut", 3, resume=True), log=lines.append)
    assert not any("behaviour cloning on" in x for x in lines)  # the checkpoint replaces the warm start
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "actor/loss" in r or "reward/accuracy" in r] == [1, 2, 3]


def test_resumed_run_skips_the_warm_start_and_a_fresh_one_does_not(tmp_path, monkeypatch):
    from reasonrl.embodied import train as T
    from reasonrl.trainer.loop import Trainer

    calls = []
    real = T.sft
    monkeypatch.setattr(T, "sft", lambda *a, **k: calls.append(1) or real(*a, **k))
    _run(_cfg(tmp_path, "r", 1))
    assert len(calls) == 1
    Trainer(_cfg(tmp_path, "r", 2, resume=True), log=lambda *_: None).stage.close()
    assert len(calls) == 1  # a committed checkpoint exists: no second behaviour cloning
    Trainer(_cfg(tmp_path, "other", 2, resume=True), log=lambda *_: None).stage.close()
    assert len(calls) == 2  # resume asked but nothing committed yet ): the warm start runs


def test_env_workers_stop_when_the_run_ends(tmp_path):
    from reasonrl.trainer.loop import Trainer

    cfg = _cfg(tmp_path, "w", 1, extra=("trainer.save_every=0", "embodied.env.n_workers=1",
                                        "embodied.eval.strip_episodes=0"))
    tr = Trainer(cfg, log=lambda *_: None)
    procs = list(tr.stage.pool._procs)
    assert procs and all(p.is_alive() for p in procs)
    tr.run()
    assert not any(p.is_alive() for p in procs) and tr.stage.pool.live_workers == 0
    with pytest.raises(RuntimeError, match="closed"):
        tr.stage.evaluate(tr.model)
