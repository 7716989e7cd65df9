"""`reasonrl bench ttrl` end to end on a random tiny model: results files, paired statistics, settings checks."""

import json

import pytest

from reasonrl.bench.ttrl import pooled_sign, rerender
from reasonrl.cli.main import main


def test_bench_ttrl_writes_results(tiny_model_dir, tmp_path):
    out = tmp_path / "bench"
    over = [f"model.path={tiny_model_dir}", "run.threads=1", f"run.out_dir={tmp_path}", "data.eval_size=4",
            "rollout.n=2", "ttrl.n_votes=3", "rollout.max_new_tokens=6", "trainer.prompts_per_step=2",
            "trainer.steps=2", "eval.k=3", "bench.seeds=2", f"bench.out={out}"]
    assert main(["bench", "ttrl", *over]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["finished"] and [r["seed"] for r in doc["runs"]] == [0, 1]
    r = doc["runs"][0]
    assert set(r["before"]) == {"pass@1_greedy", "pass@1_sampled", "pass@3", "maj@3"}
    assert len(r["train_metrics"]) == 2 and len(r["per_problem"]["before"]["greedy"]) == 4
    assert r["greedy_after_vs_before_fixed"] == sum(
        a and not b for a, b in zip(r["per_problem"]["after"]["greedy"], r["per_problem"]["before"]["greedy"]))
    md = (out / "results.md").read_text()
    assert "reasonrl bench ttrl" in md and "TTRL's claim" in md and "| before |" in md
    (out / "results.md").unlink()
    rerender(out)
    assert (out / "results.md").read_text() == md


def test_pooled_sign_sums_seeds():
    runs = [{"k_fixed": 3, "k_broke": 0}, {"k_fixed": 2, "k_broke": 0}]
    assert pooled_sign(runs, "k") == (5, 0, pytest.approx(2 / 32))


def test_bench_ttrl_rejects_bad_settings(capsys):
    assert main(["bench", "ttrl", "run.seed=3"]) == 2
    assert "bench.seeds" in capsys.readouterr().err
    assert main(["bench", "ttrl", "ttrl.enabled=false"]) == 2
    assert main(["bench", "ttrl", "bench.seeds=0"]) == 2
