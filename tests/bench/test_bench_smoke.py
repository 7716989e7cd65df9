"""`reasonrl bench async` and `reasonrl bench rewards` at toy sizes, through the command line: both arms
or variants run and the shared writer leaves the command and environment next to the numbers."""

import json

from reasonrl.cli.main import main


def test_bench_async_toy(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    over = [f"model.path={tiny_model_dir}", "trainer.steps=2", "rollout.n=2", "trainer.prompts_per_step=2",
            "rollout.max_new_tokens=4", "data.eval_size=2", "run.threads=1", f"run.out_dir={tmp_path / 'runs'}",
            "bench.repeats=1", f"bench.out={out}"]
    assert main(["bench", "async", *over]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["command"] == "reasonrl bench async " + " ".join(over)
    assert [r["async"] for r in doc["runs"]] == [False, True] and all(r["steps"] == 2 for r in doc["runs"])
    assert doc["speedup"] == doc["sync_step_s"] / doc["async_step_s"] and doc["env"]["load_after"]
    md = (out / "results.md").read_text()
    assert doc["command"] in md and "| async | 0 | 2 |" in md and "load average" in md
    # the learning curve per sample: each step's batch reward against 2 prompts x 2 samples per step
    assert [r["samples_per_step"] for r in doc["runs"]] == [4, 4] and all(len(r["reward_per_step"]) == 2 for r in doc["runs"])
    assert "| 4 | " in md and "| 8 | " in md and (out / "curves.png").stat().st_size > 1000


def test_bench_rewards_toy(tmp_path):
    out = tmp_path / "out"
    assert main(["bench", "rewards", "n=2", "rounds=1", "math_n=3", "workers=1", f"out={out}"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["command"].startswith("reasonrl bench rewards n=2")
    assert doc["code"]["statuses_last_round"]["bwrap_sandbox"] == {"passed": 2}
    assert doc["math"]["worker"]["verdicts"]["correct"] == 3 and "cpu_model" in doc["env"]
