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
    assert {r["variant"] for r in res["learner"]} == {"hf_plain", "ours", "ours_fused"}
    assert res["gemm_peak_tflops_measured"] > 0 and all(r["pct_measured_gemm_peak"] > 0 for r in res["learner"])
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


def test_stage_roofline_by_hand():
    raw = {"step_s": [10.0, 12.0, 11.0], "gen_s": [4.0, 4.0, 4.0], "train_s": [5.0, 5.0, 5.0], "reward_s": [0.5] * 3,
           "sync_s": [0.25] * 3, "learner_flops": [1e9] * 3, "decode_bytes": [2e9] * 3, "decode_flops": [4e8] * 3}
    g = bt.stage_roofline(raw, {"gemm_fp32_flops": 1e9, "bandwidth_bytes_s": 1e9})
    assert g["learner"]["flop_efficiency"] == pytest.approx(0.2)  # 1e9 FLOP / 5 s / 1e9 FLOP/s
    assert g["rollout"]["bandwidth_efficiency"] == pytest.approx(0.5)  # 2e9 B / 4 s / 1e9 B/s
    assert g["rollout"]["flop_efficiency"] == pytest.approx(0.1)
    assert g["overhead"]["s"] == pytest.approx(11.0 - 4.0 - 0.5 - 5.0 - 0.25)


def test_step_arms_report_stage_roofline(tiny_model_dir, tmp_path):
    from reasonrl.bench.roofline import machine_peaks

    s = {**_settings(tiny_model_dir), "arms": ["native"], "steps": 1}
    out = bt._run_interleaved(s)
    raw = out["native"]
    assert raw["learner_flops"][0] > 0 and raw["decode_bytes"][0] > 0 and raw["train_s"][0] > 0
    peaks = machine_peaks(1, gemm_n=128)
    r = bt._summarise("native", raw, s, peaks)
    assert 0 < r["stages"]["learner"]["flop_efficiency"] and 0 < r["stages"]["rollout"]["bandwidth_efficiency"]
    st = bt.ThroughputSettings(**{**s, "out": str(tmp_path)})
    bt._write(st, st.model_dump(), [r], BenchRun("throughput", command=bt.command(s)),
              {"peak_rss_mb_all_arms": 1.0, "peaks": peaks})
    assert "% of bandwidth roofline" in (tmp_path / "results.md").read_text()


def test_learner_mode_compares_perf_variants(tiny_model_dir, tmp_path):
    assert bt.bench_throughput([f"bench.model={tiny_model_dir}", "bench.mode=learner", "bench.n=4", "bench.max_new_tokens=8",
                                "bench.steps=1", "bench.threads=1", "bench.prompt_tokens=[3,6]", f"bench.out={tmp_path}",
                                "bench.variants=[reference,fused+pack,fused+pack+ckpt,fused+pack+bf16]"]) == 0
    got = json.loads((tmp_path / "learner.json").read_text())["tiny"]
    v = got["variants"]
    assert got["real_tokens"] < got["padded_tokens"]
    assert v["fused+pack"]["max_abs_logp_gap_vs_reference"] < 1e-5
    assert v["fused+pack+ckpt"]["max_abs_logp_gap_vs_reference"] < 1e-5
    assert 0 < v["fused+pack+bf16"]["max_abs_logp_gap_vs_reference"] < 0.5
    assert v["fused+pack+ckpt"]["saved_mb"] < v["fused+pack"]["saved_mb"]
    assert "| fused+pack |" in (tmp_path / "learner.md").read_text()
    with pytest.raises(ConfigError, match="bench.variants"):
        bt.bench_throughput(["bench.mode=learner", "bench.variants=[nope]"])


def test_decode_mode_compares_reference_and_lean_steps(tiny_model_dir, tmp_path):
    """bench.mode=decode: both decode steps run, produce the reference's tokens, and each efficiency is
    the counted roofline time over the measured time (attainable = the larger of bandwidth and compute)."""
    assert bt.bench_throughput([f"bench.model={tiny_model_dir}", "bench.mode=decode", "bench.n=4", "bench.max_new_tokens=6",
                                "bench.steps=2", "bench.threads=1", f"bench.out={tmp_path}"]) == 0
    got = json.loads((tmp_path / "decode.json").read_text())["tiny"]
    p, pc = got["peaks"], got["peaks_cpu"]
    t_bw, t_fl = got["decode_bytes"] / p["bandwidth_bytes_s"], got["decode_flops"] / p["gemm_fp32_flops"]
    c_bw, c_fl = got["decode_bytes"] / pc["bandwidth_bytes_s"], got["decode_flops"] / pc["gemm_fp32_flops"]
    for v in ("reference", "lean"):
        r = got["variants"][v]
        assert r["greedy_tokens_equal"] and r["sampled_tokens_equal"] and r["max_abs_logp_gap"] == 0.0
        assert len(r["wall_s"]) == 2
        assert r["bandwidth_roofline_wall"] == pytest.approx(t_bw / r["median_wall_s"])
        assert r["attainable_roofline_wall"] == pytest.approx(max(t_bw, t_fl) / r["median_wall_s"])
        assert r["attainable_roofline_cpu"] == pytest.approx(max(c_bw, c_fl) / r["median_cpu_s_per_thread"])
    assert "| lean |" in (tmp_path / "decode.md").read_text()
