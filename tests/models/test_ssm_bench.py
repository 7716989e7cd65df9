"""`reasonrl bench ssm` on a toy size: every arm runs to full length, the SSM's decode state is the same
at every length while the transformer's KV cache grows with it, and both result files are written."""

import importlib.util
import json
from pathlib import Path

import pytest

import reasonrl


def _bench_ssm():
    try:
        from reasonrl.bench.ssm import run
    except ModuleNotFoundError:  # before the reasonrl/bench/ package lands, reasonrl.bench is a module
        path = Path(reasonrl.__file__).parent / "bench" / "ssm.py"
        spec = importlib.util.spec_from_file_location("reasonrl_bench_ssm", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        run = mod.run
    return run


@pytest.mark.slow  # ~25 s on the loaded machine (tokenizer training + three models)
def test_bench_ssm_toy_run(tmp_path):
    run = _bench_ssm()
    assert run(["lengths=8,24", "window=4", "slots=2", f"out={tmp_path}"]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.md").read_text().startswith("# SSM vs transformer")
    arms = {a["arm"]: a for a in doc["arms"]}
    assert set(arms) == {"transformer", "mamba", "mamba2"}
    for name, a in arms.items():
        mem = [r["decode_state_bytes"] for r in a["rows"]]
        assert all(r["rollout_tokens_per_s"] > 0 and r["decode_tokens_per_s_at_length"] > 0 for r in a["rows"])
        if name == "transformer":
            assert mem[1] > mem[0]
        else:
            assert mem[0] == mem[1] > 0
    assert doc["env"]["load_before"] and doc["command"].startswith("reasonrl bench ssm")


def test_accuracy_mode_options_and_summary():
    from reasonrl.bench.ssm_accuracy import parse, spec_for, summarise

    o = parse(["seeds=2", "arms=mamba2,transformer", "lr=0.001", "resume=false"])
    assert o["seeds"] == 2 and o["arms"] == ["mamba2", "transformer"] and o["lr"] == 0.001 and o["resume"] is False
    with pytest.raises(SystemExit, match="unknown arm"):
        parse(["arms=rwkv"])
    with pytest.raises(SystemExit, match="bad option"):
        parse(["sft_step=3"])
    # every arm of a seed is built from one spec; seeds differ
    assert spec_for(o, 1) == spec_for(o, 1) and spec_for(o, 0) != spec_for(o, 1)
    runs = [{"arm": "mamba2", "seed": s, "params": 10, "sft_pass@1": v, "sft_pass@1_sampled": v,
             "grpo_pass@1": v, "grpo_pass@1_sampled": v, "sft_seconds": 1.0, "grpo_seconds": 1.0}
            for s, v in ((0, 0.2), (1, 0.4), (2, 0.6))]
    s = summarise(runs, ["mamba2", "transformer"])
    assert list(s) == ["mamba2"] and s["mamba2"]["seeds"] == 3
    m, h = s["mamba2"]["grpo_pass@1"]
    assert abs(m - 0.4) < 1e-12 and abs(h - 4.303 * 0.2 / 3 ** 0.5) < 1e-9  # Student-t, df 2
    from reasonrl.bench.ssm_accuracy import paired

    ref = [{**r, "arm": "transformer", "grpo_pass@1": r["grpo_pass@1"] + 0.1 * r["seed"]} for r in runs]
    d, hw = paired(runs + ref, "mamba2", "grpo_pass@1")
    assert abs(d + 0.1) < 1e-12 and abs(hw - 4.303 * 0.1 / 3 ** 0.5) < 1e-9  # differences 0, -0.1, -0.2
    assert paired(runs, "mamba2", "grpo_pass@1") is None


def test_bad_bench_ssm_mode_is_refused():
    with pytest.raises(SystemExit, match="mode must be"):
        _bench_ssm()(["mode=speed"])


@pytest.mark.slow  # 30-90 s on the shared machine: three tiny SFT builds (two in child processes), GRPO and evaluation
def test_accuracy_mode_toy_run_and_resume(tmp_path):
    run = _bench_ssm()
    args = ["mode=accuracy", "seeds=1", "sft_steps=2", "sft_batch=4", "demos=24", "val_size=3", "eval_every=2",
            "grpo_steps=1", "prompts=2", "n=2", "eval_size=4", "k=2", f"out={tmp_path}", f"work={tmp_path / 'w'}"]
    assert run(args) == 0
    doc = json.loads((tmp_path / "accuracy.json").read_text())
    assert set(doc["summary"]) == {"transformer", "mamba", "mamba2"}
    assert all(0 <= r["grpo_pass@1"] <= 1 and r["sft_seconds"] > 0 for r in doc["runs"])
    assert (tmp_path / "accuracy.md").read_text().startswith("# SSM vs transformer: held-out accuracy")
    stored = (tmp_path / "w" / "runs.json").read_text()
    assert run(args) == 0 and (tmp_path / "w" / "runs.json").read_text() == stored  # resumed: nothing rerun
