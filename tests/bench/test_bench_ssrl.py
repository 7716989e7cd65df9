"""`reasonrl bench ssrl` smoke run on a random tiny model: every arm evaluated, results written."""

import json

from reasonrl.cli.main import main


def test_bench_ssrl_smoke(tiny_model_dir, tmp_path):
    over = [f"model.path={tiny_model_dir}", "trainer.steps=1", "bench.seeds=1", "trainer.prompts_per_step=2", "rollout.n=2",
            "rollout.max_new_tokens=8", "eval.max_new_tokens=8", "data.eval_size=2", "run.threads=1",
            "bench.eval_size=6", "bench.top_k=[1]", f"bench.out={tmp_path / 'out'}", f"bench.work={tmp_path / 'w'}"]
    assert main(["bench", "ssrl", *over]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["command"].startswith("reasonrl bench ssrl")
    for arms in (res["results"]["untrained"], res["results"]["trained"][0]):
        assert set(arms) >= {"self_search", "real_search_k1"}
        r = arms["real_search_k1"]
        assert r["n"] == 6 == r["n_seen"] + r["n_corpus_only"] and 0 <= r["em"] <= 1
    md = (tmp_path / "out" / "results.md").read_text()
    assert "real_search_k1" in md and "sign_p" in md
