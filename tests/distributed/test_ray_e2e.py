"""Whole runs on local Ray (slow: actor start-up dominates): sync and async training, and the watchdog."""

import json
import os
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from reasonrl.config import load_config  # noqa: E402
from reasonrl.trainer.loop import Trainer  # noqa: E402
from reasonrl.trainer.watchdog import WatchdogTimeout  # noqa: E402
from trainer_fixtures import tiny_overrides  # noqa: E402

RAY = ["distributed.mode=ray", "distributed.learner_ranks=2", "distributed.rollout_workers=2", "eval.sampled=false",
       "data.eval_size=2", "trainer.tensorboard=false", "reward.functions=[trainer_fixtures:digit_reward]",
       "reward.correctness=0.0"]


@pytest.fixture(autouse=True)
def _actor_pythonpath(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parents[1] / "trainer"),
                                                      os.environ.get("PYTHONPATH", "")]))


@pytest.mark.slow
@pytest.mark.parametrize("async_on", [False, True])
def test_ray_training_run(tmp_path, tiny_model_dir, async_on):
    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path) + RAY + [
        f"async_rollout.enabled={str(async_on).lower()}", "trainer.steps=3"])
    tr = Trainer(cfg)
    summary = tr.run()
    assert summary["steps"] == 3 and not ray.is_initialized()
    rows = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "actor/loss" in r]
    assert len(steps) == 3 and all(r["sync/weights_mb"] > 0 for r in steps)
    if async_on:
        assert [r["async/staleness"] for r in steps] == [0, 1, 1]
    else:
        assert all(r["sync/broadcast_s"] >= 0 for r in steps)


@pytest.mark.slow
def test_watchdog_dumps_every_actor_on_learner_hang(tmp_path, tiny_model_dir):
    from reasonrl import _testing

    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path) + RAY + [
        "distributed.watchdog_s=30", "trainer.steps=3"])
    with _testing.hooks(hang="learner:1"):  # passed to the learner actors when they start
        tr = Trainer(cfg)
        t0 = time.monotonic()
        with pytest.raises(WatchdogTimeout, match="step 2 ran longer"):
            tr.run()
    assert time.monotonic() - t0 < 240 and not ray.is_initialized()
    dump = (cfg.run_dir / "hang_stacks.txt").read_text()
    for who in ("learner rank 0", "learner rank 1", "rollout worker 0", "rollout worker 1"):
        assert who in dump
    assert "injected_hang" in dump


@pytest.mark.slow
@pytest.mark.parametrize("extra,chain", [
    (["rollout.engine=native"], ["NativeEngine"]),
    (["tools.names=[calculator]", "ssrl.mask_information=true"], ["InformationMaskEngine", "MultiTurnEngine", "HFEngine"]),
])
def test_ray_workers_compose_the_configured_engine_and_wrappers(tmp_path, tiny_model_dir, extra, chain):
    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path) + RAY + extra + ["trainer.steps=1"])
    tr = Trainer(cfg)
    try:
        assert ray.get([w.engine_chain.remote() for w in tr.scale.roles.workers]) == [chain, chain]
    except BaseException:
        tr.scale.close()
        raise
    tr.run()
    if "tools.names=[calculator]" in extra:  # the workers' wrapper metrics reach the driver's log
        rows = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
        steps = [r for r in rows if "actor/loss" in r]
        assert "rollout/tool_calls_mean" in steps[0] and "rollout/info_masked_frac" in steps[0]
