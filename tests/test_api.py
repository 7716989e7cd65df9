"""The Python API: the docs page's example runs as written, configs validate like the CLI's, and a
reward function object with a wrong signature or return value fails with a clear error."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "trainer"))
from trainer_fixtures import make_tiny_model_dir, tiny_overrides  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("api_model"))


def _doc_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "python_api.md").read_text(), re.S)
    assert len(blocks) == 1, "docs/python_api.md should hold exactly one python example"
    return blocks[0]


def test_docs_example_runs_and_calls_the_reward_object(tiny_model, tmp_path):
    ns = {"model_path": str(tiny_model), "out_dir": tmp_path}
    exec(compile(_doc_example(), "docs/python_api.md", "exec"), ns)
    summary = ns["summary"]
    for key in ("pass@1_before", "pass@1_after"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["steps"] == 2
    # 2 steps x 4 prompts x 4 samples, every one scored by the object we passed (no import path)
    assert len(ns["calls"]) >= 2 * 4 * 4
    # the logged rewards are the configured correctness (weight 1, format 0 by default) plus 0.1 x digits
    samples = [json.loads(line) for line in (tmp_path / "api_example" / "samples.jsonl").read_text().splitlines()]
    assert samples and any(s["reward"] > 0 for s in samples)
    for s in samples:
        digits = sum(ch.isdigit() for ch in s["response"])
        assert s["reward"] == pytest.approx(float(s["correct"]) + 0.1 * digits, abs=1e-6), s
    assert 0.0 <= ns["scores"]["pass@1"] <= 1.0
    assert (tmp_path / "api_example" / "final" / "config.json").is_file()


def test_config_from_merges_sections_and_matches_cli_validation(tmp_path):
    import reasonrl
    from reasonrl.config import ConfigError, load_config

    cfg = reasonrl.config_from(trainer={"steps": 7}, overrides=["optim.lr=0.5"])
    assert cfg.trainer.steps == 7 and cfg.optim.lr == 0.5
    assert cfg.trainer.prompts_per_step == load_config().trainer.prompts_per_step  # untouched fields keep defaults
    y = tmp_path / "c.yaml"
    y.write_text("trainer:\n  steps: 3\n")
    assert reasonrl.config_from(y, trainer={"save_every": 0}).trainer.steps == 3
    with pytest.raises(ConfigError, match="prompts_per_step"):
        reasonrl.config_from(trainer={"prompts_per_step": 5, "mini_batch_prompts": 2})
    with pytest.raises(ConfigError, match="must be a dict"):
        reasonrl.config_from(trainer=3)


def test_bad_reward_objects_fail_clearly(tiny_model, tmp_path):
    import reasonrl
    from reasonrl.config import load_config
    from reasonrl.rewards.user import RewardFunctionError

    with pytest.raises(RewardFunctionError, match="must accept four positional"):
        reasonrl.reward_function(lambda response: 1.0)
    from reasonrl.rewards import batch_reward

    assert reasonrl.reward_function(batch_reward(lambda tasks, responses: [0.0] * len(tasks))).is_batch
    with pytest.raises(RewardFunctionError, match=r"must accept \(tasks, responses\)"):
        reasonrl.reward_function(batch_reward(lambda tasks: []))

    class Scored:
        def __call__(self, prompt, response, answer, meta):
            return 1.0

    assert reasonrl.reward_function(Scored()).path == "python:Scored"
    with pytest.raises(RewardFunctionError, match="not callable"):
        reasonrl.reward_function(3.0)
    cfg = load_config(None, tiny_overrides(tiny_model, tmp_path) + ["trainer.steps=1"])
    with pytest.raises(RewardFunctionError, match=r"returned 'high'.*not a finite number"):
        reasonrl.train(cfg, reward_fn=lambda p, r, a, m: "high", log=lambda s: None)


def test_import_reasonrl_stays_cheap():
    code = "import sys, reasonrl; assert 'torch' not in sys.modules and 'reasonrl.api' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
