"""`reasonrl train configs/ssrl_tiny.yaml` end to end on a random tiny model: SSRL reward, information
masking and the tool loop all reach the trainer's metrics; config errors name the field."""

import json
from pathlib import Path

from trainer_fixtures import tiny_overrides

from reasonrl.cli.main import main

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "ssrl_tiny.yaml")
SMALL = ["rollout.max_new_tokens=16", "eval.max_new_tokens=16", "trainer.steps=2"]


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_ssrl_config_trains_single_pass(tiny_model_dir, tmp_path):
    assert main(["train", CONFIG, *tiny_overrides(tiny_model_dir, tmp_path), *SMALL]) == 0
    steps = [r for r in _rows(tmp_path / "t") if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("reward/em_mean", "reward/format_mean", "reward/f1_mean", "rollout/info_masked_frac", "actor/kl"):
        assert key in steps[0], key
    assert "rollout/tool_calls_mean" not in steps[0]  # SSRL training is single-pass: no tool loop
    assert (tmp_path / "t" / "final" / "config.json").exists()


def test_ssrl_config_with_tools(tiny_model_dir, tmp_path):
    over = tiny_overrides(tiny_model_dir, tmp_path) + SMALL + ["tools.names=[search, calculator]", "tools.top_k=1"]
    assert main(["train", CONFIG, *over]) == 0
    steps = [r for r in _rows(tmp_path / "t") if "reward/mean" in r]
    for key in ("rollout/tool_calls_mean", "rollout/turn_length_mean", "rollout/tool_latency_mean_s"):
        assert key in steps[0], key


def test_unknown_tool_is_a_config_error(capsys):
    assert main(["train", CONFIG, "tools.names=[browser]"]) == 2
    assert "tools.names" in capsys.readouterr().err
    assert main(["train", CONFIG, "tools.search_url=localhost:8765"]) == 2
    assert "tools.search_url" in capsys.readouterr().err
