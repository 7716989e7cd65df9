"""Async rollout honours the configured rollout: the producer thread samples with ``rollout.engine`` and
the tool-loop/masking wrappers, composed as in a single process, on its own copy of the policy (it used
to build a bare HFEngine and silently ignore them)."""

import json
import threading

import pytest

from reasonrl.config import load_config
from reasonrl.trainer.loop import Trainer
from trainer_fixtures import tiny_overrides

FAST = ["eval.sampled=false", "data.eval_size=2", "trainer.tensorboard=false", "rollout.max_new_tokens=8",
        "reward.functions=[trainer_fixtures:digit_reward]", "reward.correctness=0.0", "async_rollout.enabled=true",
        "trainer.steps=2", "trainer.prompts_per_step=2", "rollout.n=2"]


def _spy(monkeypatch, cls) -> list:
    """Record (thread name, engine) of every ``cls.generate`` call."""
    calls = []
    original = cls.generate

    def generate(self, *a, **kw):
        calls.append((threading.current_thread().name, self))
        return original(self, *a, **kw)

    monkeypatch.setattr(cls, "generate", generate)
    return calls


def _steps(cfg) -> list[dict]:
    rows = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "async/staleness" in r]


def test_async_producer_uses_the_configured_native_engine(tmp_path, tiny_model_dir, monkeypatch):
    from reasonrl.rollout.native_engine import NativeEngine

    calls = _spy(monkeypatch, NativeEngine)
    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path, "native") + FAST + ["rollout.engine=native"])
    tr = Trainer(cfg)
    tr.run()
    produced = [eng for thread, eng in calls if thread == "reasonrl-rollout"]
    assert len(produced) == 2  # one batch per step, both sampled by a native engine in the producer thread
    assert all(eng.model is not tr.model for eng in produced)  # on the producer's copy, synced by snapshots
    assert [r["async/staleness"] for r in _steps(cfg)] == [0, 1]


def test_async_producer_runs_the_tool_loop(tmp_path, tiny_model_dir, monkeypatch):
    from reasonrl.rollout.multiturn import MultiTurnEngine

    calls = _spy(monkeypatch, MultiTurnEngine)
    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path, "tools") + FAST + ["tools.names=[calculator]"])
    Trainer(cfg).run()
    assert [t for t, _ in calls].count("reasonrl-rollout") == 2
    for r in _steps(cfg):  # the wrapper's metrics reach the log from the producer's engine
        assert "rollout/tool_calls_mean" in r and "rollout/turn_length_mean" in r

