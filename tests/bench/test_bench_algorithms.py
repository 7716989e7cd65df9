"""`reasonrl bench algorithms` at a toy size: files, exact command, stage handling, validation."""

import json
import math

import pytest
from trainer_fixtures import make_tiny_model_dir

from reasonrl.bench import run_bench
from reasonrl.bench.algorithms import parse_args
from reasonrl.bench.results import mean_t_ci
from reasonrl.config import ConfigError


def test_bench_writes_table_json_and_plot(tmp_path):
    model = make_tiny_model_dir(tmp_path / "m")
    over = ["bench.recipes=[sft_then_grpo,rloo]", "bench.seeds=1", "bench.k=4", "bench.maj=2",
            f"bench.out={tmp_path / 'out'}", f"bench.work={tmp_path / 'work'}", f"model.path={model}",
            "trainer.steps=2", "rollout.n=2", "trainer.prompts_per_step=2", "rollout.max_new_tokens=8",
            "data.eval_size=2"]
    assert run_bench("algorithms", over, log=lambda *a: None) == 0
    md = (tmp_path / "out" / "results.md").read_text()
    assert "reasonrl bench algorithms 'bench.recipes=[sft_then_grpo,rloo]'" in md
    assert "| sft_then_grpo |" in md and "| rloo |" in md and "| start |" in md and "pass@4" in md
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["finished"] and {(r["arm"], r["steps"]) for r in doc["runs"]} == {("start", 0), ("sft_then_grpo", 2), ("rloo", 2)}
    assert (tmp_path / "work" / "sft_then_grpo_s0" / "stage0" / "config.json").exists()  # SFT half, then GRPO from it
    assert (tmp_path / "out" / "passk.png").stat().st_size > 1000
    # resume reuses finished runs instead of retraining them
    msgs = []
    assert run_bench("algorithms", over + ["bench.resume=true"], log=msgs.append) == 0
    assert any("3 finished run(s) reused" in m for m in msgs)


def test_bench_rejects_bad_arguments_before_any_work():
    with pytest.raises(ConfigError, match="unknown"):
        parse_args(["bench.recipes=[grpo,nope]"])
    with pytest.raises(ConfigError, match="bench.recipes"):
        parse_args(["algorithm.name=grpo"])
    with pytest.raises(ConfigError, match="bench.sedes"):
        parse_args(["bench.sedes=3"])


def test_student_t_interval_over_seeds():
    m, h = mean_t_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(mean_t_ci([1.0])[1])
