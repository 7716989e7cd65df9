"""Throughput of HFEngine on a ~1M-param Llama, one thread (a script, not a test).

Run: .venv/bin/python tests/rollout/bench_hf_engine.py
P=16 prompts x n=8 samples, up to 48 new tokens; tokens/s counts generated (loss-masked) tokens.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from rollout_tiny import EOS, PAD, build_model, build_tokenizer  # noqa: E402

from reasonrl.rollout import HFEngine, SamplingParams  # noqa: E402

torch.set_num_threads(1)
PROMPTS = [f"compute {a}*{a % 7 + 2}-{a + 3}+{2 * a}." for a in range(10, 26)]


def timed(fn, reps=3):
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    tok = build_tokenizer()
    big = dict(hidden=128, layers=4, heads=4, kv_heads=4, ffn=384)
    full_len = build_model(**big)
    early = build_model(**big, eos_bias=1.2)  # many rows end early: where compaction helps
    print(f"params: {sum(p.numel() for p in full_len.parameters()) / 1e6:.2f} M, threads={torch.get_num_threads()}")
    params = SamplingParams(n=8, max_new_tokens=48, seed=0)
    cases = [
        ("all 48 tokens (eos off)", full_len, dict(eos_token_ids=[]), params),
        ("all 48 tokens, no compaction", full_len, dict(eos_token_ids=[], compact=False), params),
        ("all 48 tokens + stop-string check", full_len, dict(eos_token_ids=[]),
         SamplingParams(n=8, max_new_tokens=48, seed=0, stop=["never!"])),
        ("early EOS, compaction", early, {}, params),
        ("early EOS, no compaction", early, dict(compact=False), params),
    ]
    for name, model, kw, p in cases:
        eng = HFEngine(model, tok, **kw)
        sec, r = timed(lambda: eng.generate(PROMPTS, p))
        ntok = int(r.loss_mask.sum())
        print(f"{name:38s} {sec:6.3f} s  {ntok:5d} tok  {ntok / sec:8.0f} tok/s  mean len {ntok / len(r):.1f}")

    # reference: HF generate on the same 128 rows (sampling, eos effectively off via min_new_tokens)
    tok.padding_side = "left"
    enc = tok([p for p in PROMPTS for _ in range(8)], return_tensors="pt", padding=True)

    def hf():
        with torch.inference_mode():
            return full_len.generate(**enc, do_sample=True, max_new_tokens=48, min_new_tokens=48,
                                     pad_token_id=PAD, eos_token_id=EOS, top_k=0)

    sec, out = timed(hf)
    ntok = (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    print(f"{'HF model.generate (reference)':38s} {sec:6.3f} s  {ntok:5d} tok  {ntok / sec:8.0f} tok/s")


if __name__ == "__main__":
    main()
