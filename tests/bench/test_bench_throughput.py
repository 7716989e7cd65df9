"""`reasonrl bench throughput` plumbing on a tiny random model, and the GPU script's CPU smoke mode.
(The timings themselves are benchmark output, not test assertions.)"""

import importlib.util
import json
from pathlib import Path

import pytest

from reasonrl.bench import throughput as bt
from reasonrl.bench.results import BenchRun
from reasonrl.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _settings(model_dir, **kw):
    s = bt.ThroughputSettings(model=str(model_dir), n=4, max_new_tokens=5, steps=2, warmup=1, threads=1,
                              arms=["native", "hf"], **kw).model_dump()
    return s


def test_interleaved_arms_do_the_same_work(tiny_model_dir, tmp_path):
    s = _settings(tiny_model_dir)
    out = bt._run_interleaved(s)
    assert set(out) == {"native", "hf"}
    for arm in ("native", "hf"):
        raw = out[arm]
        assert len(raw["step_s"]) == 2 and all(t > 0 for t in raw["step_s"])
        assert raw["gen_tokens"] == [20.0, 20.0]  # 4 rows x 5 tokens: EOS never cuts a row short
        assert all(0 <= m < 1e-4 for m in raw["mismatch"])  # the learner forward ran (random reward)
    results = [bt._summarise(a, out[a], s) for a in ("native", "hf")]
    st = bt.ThroughputSettings(**{**s, "out": str(tmp_path)})
    bt._write(st, st.model_dump(), results, BenchRun("throughput", command=bt.command(s)), {"peak_rss_mb_all_arms": 100.0})
    saved = json.loads((tmp_path / "results.json").read_text())["tiny"]
    assert "hf/native wall (ratio of medians)" in saved["ratios"] and saved["command"].startswith("reasonrl bench throughput")
    assert "| native |" in (tmp_path / "results.md").read_text()


def test_bad_bench_settings_fail_fast():
    with pytest.raises(ConfigError, match="bench.<field>"):
        bt.bench_throughput(["trainer.steps=3"])
    with pytest.raises(ConfigError, match="unknown arm"):
        bt.bench_throughput(["bench.arms=[native,vllm]"])
    with pytest.raises(ConfigError, match="invalid bench settings"):
        bt.bench_throughput(["bench.n=1"])


def test_gpu_script_smoke_mode(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks/throughput/gpu_bench.py")
    gb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gb)
    assert gb.main(["--smoke", "--out", str(tmp_path), "--batches", "2", "--new-tokens", "4"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["smoke"] and not res["errors"]
    assert {r["variant"] for r in res["decode"]} == {"hf_dynamic", "hf_static", "native"}
    assert all(r["tok_s"] > 0 and r["roofline_tok_s"] > 0 for r in res["decode"])
    assert {r["variant"] for r in res["learner"]} == {"hf_plain", "ours"}
    assert "SMOKE RUN" in (tmp_path / "results.md").read_text()


def test_flops_formula_by_hand():
    from transformers import Qwen2Config

    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks/throughput/gpu_bench.py")
    gb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gb)
    cfg = Qwen2Config(vocab_size=10, hidden_size=4, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1)
    # per layer: q 4*4 + k,v 2*(4*2) + o 4*4 + mlp 3*4*8 = 16+16+16+96 = 144; lm_head 40; attention 12*1*2*2*seq
    assert gb.learner_flops_per_token(cfg, seq=3) == 6 * (144 + 40) + 12 * 1 * 2 * 2 * 3


@pytest.mark.slow
def test_cli_with_trl_arm(tiny_model_dir, tmp_path):
    pytest.importorskip("trl")
    assert bt.bench_throughput([f"bench.model={tiny_model_dir}", "bench.n=4", "bench.max_new_tokens=4", "bench.steps=1",
                                "bench.warmup=1", "bench.threads=1", f"bench.out={tmp_path}"]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())["tiny"]
    assert [r["arm"] for r in saved["results"]] == ["native", "hf", "trl"]
    assert "trl/native CPU time (ratio of medians)" in saved["ratios"]
