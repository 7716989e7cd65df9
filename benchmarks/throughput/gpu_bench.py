"""GPU decode and learner benchmark (one prepared script; issue 6). NOT YET RUN ON A GPU.

Decode: tokens/s of ``NativeEngine`` (eager, and CUDA-graph decode step) vs HF ``generate`` with the
dynamic and the static cache, on a Qwen2.5-0.5B-shaped model with random bf16 weights, greedy, at
batch 64 and 256 with 512 new tokens (every row runs to the end: no EOS). Each figure is put next
to the HBM roofline: a decode step must read every weight once plus each row's K/V context, so
``roofline tok/s = batch * bandwidth / bytes_per_step`` with the bandwidth measured here by a
device-to-device copy. Learner: one bf16 training step (forward + backward + AdamW) on 8 x 2048
tokens, plain HF (``model(labels=...)``) and ours (``sequence_logprobs`` over the response half +
a policy-gradient loss), with the reference LM head and with the fused chunked head + packing
(``ours_fused``: no (rows, seq, 152k) float32 logits); MFU = model FLOPs / time / peak (989 TFLOP/s
dense bf16 for H100 SXM, override with ``--peak-tflops``), and the same against a bf16 8192^3 GEMM
measured on the device in the same run.

    python benchmarks/throughput/gpu_bench.py                 # GPU; writes benchmarks/throughput/gpu/
    python benchmarks/throughput/gpu_bench.py --smoke --out /tmp/x   # CPU, tiny model, seconds (tested)

Every variant is timed once after a short warm-up (which also triggers compilation / graph
capture); results are written after each variant so a timeout still leaves the finished ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from reasonrl.batch import Rollouts  # noqa: E402
from reasonrl.rollout import SamplingParams, sequence_logprobs  # noqa: E402
from reasonrl.rollout.native_engine import NativeEngine, decode_bytes_per_step  # noqa: E402

QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
SMOKE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6,
             tie_word_embeddings=True)


class IdTokenizer:
    """Prompts are space-separated token ids; decoding is skipped (no text is needed to time decode)."""

    eos_token_id = None
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [int(t) for t in text.split()]}

    def batch_decode(self, seqs, skip_special_tokens=True):
        return [""] * len(seqs)


def build_model(shape: dict, dtype: torch.dtype, device: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**shape, use_sliding_window=False, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    model.to(dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_bandwidth(device: str, gib: float) -> float:
    """Bytes/s of a device-to-device copy (read + write counted)."""
    n = int(gib * 2**30) // 4
    a = torch.empty(n, dtype=torch.float32, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    sync(device)
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        b.copy_(a)
    sync(device)
    return 2 * a.numel() * 4 * reps / (time.perf_counter() - t0)


def prompts_for(batch: int, plen: int, vocab: int) -> list[str]:
    g = torch.Generator().manual_seed(1)
    return [" ".join(str(int(t)) for t in torch.randint(1, vocab, (plen,), generator=g)) for _ in range(batch)]


def time_native(model, batch, plen, new, graph, device):
    eng = NativeEngine(model, IdTokenizer(), eos_token_ids=[], slots=batch, graph=graph)
    prompts = prompts_for(batch, plen, model.config.vocab_size)
    eng.generate(prompts, SamplingParams(greedy=True, max_new_tokens=min(new, 32)))  # warm-up / capture
    eng.generate(prompts, SamplingParams(greedy=True, max_new_tokens=new))  # every (slots, window) bucket
    sync(device)
    t0 = time.perf_counter()
    r = eng.generate(prompts, SamplingParams(greedy=True, max_new_tokens=new))
    sync(device)
    dt = time.perf_counter() - t0
    assert int(r.loss_mask.sum()) == batch * new
    st = eng.last_stats
    return {"seconds": dt, "tok_s": batch * new / dt, "decode_s": st["decode_s"],
            "decode_tok_s": batch * (new - 1) / st["decode_s"], "prefill_s": st["prefill_s"]}


def time_hf(model, batch, plen, new, cache, device):
    prompts = prompts_for(batch, plen, model.config.vocab_size)
    ids = torch.tensor([[int(t) for t in p.split()] for p in prompts], device=device)
    kw = dict(do_sample=False, max_new_tokens=new, min_new_tokens=new, pad_token_id=0,
              attention_mask=torch.ones_like(ids))
    if cache == "static":
        kw["cache_implementation"] = "static"
    # the static cache is sized by max_new_tokens (and may be compiled for it): warm up at full length
    warm = new if cache == "static" else min(new, 32)
    with torch.inference_mode():
        model.generate(ids, **{**kw, "max_new_tokens": warm, "min_new_tokens": warm})
        sync(device)
        t0 = time.perf_counter()
        out = model.generate(ids, **kw)
        sync(device)
    dt = time.perf_counter() - t0
    assert out.shape[1] - plen == new
    return {"seconds": dt, "tok_s": batch * new / dt}


def learner_flops_per_token(cfg, seq: int) -> float:
    """Training FLOPs per token: 6 x (matmul parameters, lm_head included even when tied) plus
    attention scores/values 12 * layers * heads * head_dim * seq (PaLM appendix B, no causal discount)."""
    d, L, V, f = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.intermediate_size
    hd = d // cfg.num_attention_heads
    kv = cfg.num_key_value_heads * hd
    per_layer = d * (d + 2 * kv) + d * d + 3 * d * f
    n = L * per_layer + V * d
    return 6 * n + 12 * L * cfg.num_attention_heads * hd * seq


def time_learner(model, rows, seq, variant, device, peak):
    cfg = model.config
    model.train()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, cfg.vocab_size, (rows, seq), generator=g).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=device.startswith("cuda"))
    half = seq // 2
    ro = Rollouts(prompt_ids=ids[:, :half].cpu(), prompt_mask=torch.ones(rows, half, dtype=torch.long),
                  response_ids=ids[:, half:].cpu(), loss_mask=torch.ones(rows, seq - half),
                  rollout_logp=torch.zeros(rows, seq - half), group_ids=torch.arange(rows), task_index=list(range(rows)),
                  response_text=[""] * rows, truncated=torch.zeros(rows, dtype=torch.bool))
    adv = torch.randn(rows, 1, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        if variant == "hf_plain":
            loss = model(input_ids=ids, labels=ids).loss
        else:  # ours: the reference head (full float32 logits) or the fused chunked head + packing (perf.*)
            kw = {"chunk_tokens": 64 if device == "cpu" else 4096, "pack": True} if variant == "ours_fused" else {}
            logp, _ = sequence_logprobs(model, ro, 1.0, **kw)
            ratio = torch.exp(logp - logp.detach())
            loss = -(ratio * adv).mean()
        loss.backward()
        opt.step()

    step()
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / reps
    flops = learner_flops_per_token(cfg, seq) * rows * seq
    out = {"seconds": dt, "tokens": rows * seq, "tflops": flops / dt / 1e12,
           "mfu": (flops / dt / (peak * 1e12)) if peak else None}
    if device.startswith("cuda"):
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
    model.eval()
    del opt
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run of every code path (what the test runs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/throughput/gpu"))
    ap.add_argument("--batches", default=None, help="comma list (default 64,256; smoke 2,4)")
    ap.add_argument("--new-tokens", type=int, default=None, help="default 512; smoke 8")
    ap.add_argument("--prompt-len", type=int, default=None, help="default 64; smoke 5")
    ap.add_argument("--learner-rows", type=int, default=None, help="default 8; smoke 2")
    ap.add_argument("--learner-seq", type=int, default=None, help="default 2048; smoke 32")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU for MFU")
    ap.add_argument("--skip", default="", help="comma list of variants to skip (hf_dynamic, hf_static, native, "
                                                 "native_cuda_graph, learner_hf_plain, learner_ours, learner_ours_fused)")
    a = ap.parse_args(argv)
    smoke = a.smoke
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke for the CPU check", file=sys.stderr)
        return 2
    dtype = torch.float32 if smoke else torch.bfloat16
    batches = [int(x) for x in (a.batches or ("2,4" if smoke else "64,256")).split(",")]
    new = a.new_tokens or (8 if smoke else 512)
    plen = a.prompt_len or (5 if smoke else 64)
    rows, seq = a.learner_rows or (2 if smoke else 8), a.learner_seq or (32 if smoke else 2048)
    skip = set(filter(None, a.skip.split(",")))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"command": "python " + " ".join([Path(__file__).relative_to(ROOT).as_posix(), *(argv or sys.argv[1:])]),
           "smoke": smoke, "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "shape": SMOKE if smoke else QWEN25_05B, "dtype": str(dtype),
           "new_tokens": new, "prompt_len": plen, "decode": [], "learner": [], "errors": []}

    def save():
        (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
        write_md(res, out / "results.md")

    model = build_model(SMOKE if smoke else QWEN25_05B, dtype, device)
    res["params"] = sum(p.numel() for p in model.parameters())
    res["copy_bandwidth_gbs"] = copy_bandwidth(device, 0.01 if smoke else 2.0) / 1e9
    bw = res["copy_bandwidth_gbs"] * 1e9
    variants = [("hf_dynamic", lambda b: time_hf(model, b, plen, new, "dynamic", device)),
                ("hf_static", lambda b: time_hf(model, b, plen, new, "static", device)),
                ("native", lambda b: time_native(model, b, plen, new, "off", device))]
    if device == "cuda":
        variants.append(("native_cuda_graph", lambda b: time_native(model, b, plen, new, "cuda_graph", device)))
    for b in batches:
        bytes_step = decode_bytes_per_step(model, b, plen + new / 2)
        roof = b * bw / bytes_step
        for name, fn in variants:
            if name in skip:
                continue
            print(f"[gpu_bench] decode {name} batch {b} ...", flush=True)
            try:
                r = fn(b)
                r.update({"variant": name, "batch": b, "bytes_per_step": bytes_step, "roofline_tok_s": roof,
                          "pct_roofline": 100 * r["tok_s"] / roof})
                res["decode"].append(r)
                print(f"[gpu_bench]   {r['tok_s']:.0f} tok/s ({r['pct_roofline']:.1f} % of roofline)", flush=True)
            except Exception as e:  # keep going: one failing variant must not cost the others
                res["errors"].append({"variant": name, "batch": b, "error": repr(e), "trace": traceback.format_exc()[-2000:]})
                print(f"[gpu_bench]   failed: {e!r}", flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()
            save()
    from reasonrl.bench.roofline import measure_gemm_peak

    res["gemm_peak_tflops_measured"] = measure_gemm_peak(dtype, 256 if smoke else 8192, device=device) / 1e12
    for variant in ("hf_plain", "ours", "ours_fused"):
        if f"learner_{variant}" in skip:
            continue
        print(f"[gpu_bench] learner {variant} {rows} x {seq} ...", flush=True)
        try:
            r = time_learner(model, rows, seq, variant, device, None if smoke else a.peak_tflops)
            r.update({"variant": variant, "rows": rows, "seq": seq,
                      "pct_measured_gemm_peak": 100 * r["tflops"] / res["gemm_peak_tflops_measured"]})
            res["learner"].append(r)
            print(f"[gpu_bench]   {r['tflops']:.1f} TFLOP/s, MFU {r['mfu']}", flush=True)
        except Exception as e:
            res["errors"].append({"variant": f"learner_{variant}", "error": repr(e), "trace": traceback.format_exc()[-2000:]})
            print(f"[gpu_bench]   failed: {e!r}", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
        save()
    save()
    return 0 if not res["errors"] else 1


def write_md(res: dict, path: Path) -> None:
    lines = [f"# GPU decode/learner benchmark{' (SMOKE RUN, CPU: not a GPU result)' if res['smoke'] else ''}", "",
             f"Command: `{res['command']}`  ", f"Device: {res['device']}, torch {res['torch']}, {res['dtype']}  ",
             f"Model: Qwen2-shaped, {res.get('params', 0) / 1e6:.1f} M parameters, random weights  ",
             f"Measured copy bandwidth: {res.get('copy_bandwidth_gbs', 0):.0f} GB/s", "",
             f"## Decode ({res['prompt_len']}-token prompts, {res['new_tokens']} new tokens, greedy, no EOS)", "",
             "| variant | batch | tok/s | % of HBM roofline | roofline tok/s | seconds |", "|---|---|---|---|---|---|"]
    for r in res["decode"]:
        lines.append(f"| {r['variant']} | {r['batch']} | {r['tok_s']:.0f} | {r['pct_roofline']:.1f} | "
                     f"{r['roofline_tok_s']:.0f} | {r['seconds']:.2f} |")
    lines += ["", f"## Learner ({res['dtype']} train step: forward + backward + AdamW)", "",
              f"Measured GEMM peak ({res['dtype']}): {res.get('gemm_peak_tflops_measured', float('nan')):.1f} TFLOP/s", "",
              "| variant | rows x seq | seconds | TFLOP/s | MFU | % of measured GEMM peak | peak GB |",
              "|---|---|---|---|---|---|---|"]
    for r in res["learner"]:
        mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "n/a"
        lines.append(f"| {r['variant']} | {r['rows']} x {r['seq']} | {r['seconds']:.3f} | {r['tflops']:.2f} | {mfu} | "
                     f"{r.get('pct_measured_gemm_peak', float('nan')):.1f} % | {r.get('peak_mem_gb', float('nan')):.1f} |")
    if res["errors"]:
        lines += ["", "Errors: " + "; ".join(f"{e['variant']}: {e['error']}" for e in res["errors"])]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    raise SystemExit(main())
