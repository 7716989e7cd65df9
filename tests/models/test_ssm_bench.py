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
