"""`reasonrl bench ssm`: decode cost vs generation length, transformer vs Mamba vs Mamba-2 (matched size).

Each arm generates ``max_len`` tokens (EOS disabled) for ``slots`` rows from one prompt, with its best
engine here: the transformer (``builtin:tiny``'s 4×128 Llama) on ``NativeEngine`` (preallocated KV
cache, continuous batching), the SSMs (``builtin:tiny-mamba``/``-mamba2`` architectures) on
``RecurrentEngine``. Every decode step is timed, so one run of ``max_len`` tokens yields, at each
length L in ``lengths``:

- per-token decode time at L: the median step time over the ``window`` steps ending at L;
- throughput at L: ``slots · L`` tokens over the wall time of the first L steps (prefill included),
  i.e. what a rollout of L tokens gets;
- decode-state memory at L: the KV cache a length-L sequence occupies (bytes per position of the
  engine's allocated cache × (prompt + L)) vs the SSM's recurrent state (measured tensor bytes, the
  same at every L).

Weights are random (speed does not depend on them); threads default to 1. Results:
``benchmarks/ssm/results.json`` and ``results.md`` with the command, load average and versions.
The accuracy arm (SFT + GRPO at equal budget) is not run by this benchmark (docs/ssm.md says why).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

DEFAULTS: dict[str, Any] = {"lengths": [256, 1024, 2048, 4096, 8192], "slots": 4, "window": 128, "threads": 1,
                            "arms": ["transformer", "mamba", "mamba2"], "out": "benchmarks/ssm",
                            "prompt": "Compute 18*3-16+98."}


def _parse(args: list[str]) -> dict[str, Any]:
    opts = dict(DEFAULTS)
    for a in args:
        key, eq, val = a.partition("=")
        if not eq or key not in DEFAULTS:
            raise SystemExit(f"bench ssm: bad option {a!r}; expected key=value with key in {sorted(DEFAULTS)}")
        if key in ("lengths", "arms"):
            opts[key] = [int(v) if key == "lengths" else v for v in val.split(",") if v]
        elif isinstance(DEFAULTS[key], int):
            opts[key] = int(val)
        else:
            opts[key] = val
    bad = set(opts["arms"]) - {"transformer", "mamba", "mamba2"}
    if bad:
        raise SystemExit(f"bench ssm: unknown arm(s) {sorted(bad)}; valid: transformer, mamba, mamba2")
    return opts


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _models(tok, max_len: int) -> dict[str, torch.nn.Module]:
    from dataclasses import replace

    from reasonrl.models.ssm.tiny import build_ssm
    from reasonrl.models.tiny import TinySpec, build_model

    spec = TinySpec()
    return {"transformer": build_model(replace(spec, max_positions=max_len + 64), tok).eval(),
            "mamba": build_ssm("mamba", spec, tok).eval(), "mamba2": build_ssm("mamba2", spec, tok).eval()}


def measure_arm(name: str, model: torch.nn.Module, tok, opts: dict[str, Any]) -> dict[str, Any]:
    """Generate ``max(lengths)`` tokens per slot, timing each decode step; return the per-length table."""
    from reasonrl.rollout.native_engine import NativeEngine
    from reasonrl.rollout.recurrent_engine import RecurrentEngine
    from reasonrl.rollout.sampling import SamplingParams

    max_len, slots = max(opts["lengths"]), opts["slots"]
    times: list[float] = []
    if name == "transformer":
        eng = NativeEngine(model, tok, slots=slots, eos_token_ids=[])
        inner = eng._decode_step

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = inner(*a, **k)
            times.append(time.perf_counter() - t0)
            return out

        eng._decode_step = timed
    else:
        eng = RecurrentEngine(model, tok, slots=slots, eos_token_ids=[])
        inner = eng._view.step

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = inner(*a, **k)
            times.append(time.perf_counter() - t0)
            return out

        eng._view.step = timed
    prompt_len = len(tok(opts["prompt"])["input_ids"])
    t0 = time.perf_counter()
    ro = eng.generate([opts["prompt"]], SamplingParams(n=slots, greedy=True, max_new_tokens=max_len))
    wall = time.perf_counter() - t0
    assert int(ro.loss_mask.sum()) == slots * max_len, "every row must run to max_len (EOS is disabled)"
    prefill_s = eng.last_stats["prefill_s"]
    if name == "transformer":
        cache = eng._cache
        per_pos = cache.numel() * cache.element_size() / (cache.shape[1] * cache.shape[4])  # bytes / slot / position
    rows = []
    cum = [0.0]
    for t in times:
        cum.append(cum[-1] + t)
    for L in opts["lengths"]:
        # step i (0-based) feeds token i and produces the logits of token i+1; L tokens need L-1 steps
        w = times[max(0, L - 1 - opts["window"]): L - 1]
        mem = (per_pos * slots * (prompt_len + L)) if name == "transformer" else eng.last_stats["state_bytes"]
        rows.append({"length": L, "ms_per_step": 1e3 * statistics.median(w),
                     "tokens_per_s": slots * L / (prefill_s + cum[L - 1]), "decode_state_bytes": int(mem)})
    return {"arm": name, "engine": type(eng).__name__, "params": sum(p.numel() for p in model.parameters()),
            "wall_s": wall, "prefill_s": prefill_s, "rows": rows}


def _markdown(doc: dict[str, Any]) -> str:
    lines = ["# SSM vs transformer decode cost vs generation length", "",
             f"Command: `{doc['command']}`", "",
             f"Slots {doc['opts']['slots']}, greedy, EOS disabled, random weights, {doc['env']['threads']} thread(s); "
             f"load average before {doc['env']['load_before']}, after {doc['env']['load_after']}; "
             f"torch {doc['env']['torch']}, {doc['env']['cpu']}; {doc['env']['date']}.", "",
             "| arm | params | length | ms / decode step | tokens/s | decode state (MiB) |", "|---|---|---|---|---|---|"]
    for arm in doc["arms"]:
        for r in arm["rows"]:
            lines.append(f"| {arm['arm']} ({arm['engine']}) | {arm['params'] / 1e6:.2f}M | {r['length']} | "
                         f"{r['ms_per_step']:.2f} | {r['tokens_per_s']:.0f} | {r['decode_state_bytes'] / 2**20:.2f} |")
    lines += ["", "| arm | step time max/256 | state memory max/256 | throughput at max vs transformer |", "|---|---|---|---|"]
    for arm, s in doc["summary"].items():
        lines.append(f"| {arm} | {s['step_time_ratio']:.2f} | {s['memory_ratio']:.2f} | "
                     f"{s.get('throughput_vs_transformer', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def run(args: list[str]) -> int:
    """Entry point (``reasonrl bench ssm [key=value ...]``); writes ``<out>/results.{json,md}``."""
    from reasonrl.models.tiny import TinySpec, _tokenizer_corpus
    from reasonrl.models.tokenizer import train_tokenizer

    opts = _parse(list(args))
    torch.set_num_threads(opts["threads"])
    load_before = _loadavg()
    t_start = time.perf_counter()
    tok = train_tokenizer(_tokenizer_corpus(TinySpec()), TinySpec().vocab_size)
    models = _models(tok, max(opts["lengths"]))
    arms = []
    for name in opts["arms"]:
        res = measure_arm(name, models[name], tok, opts)
        print(json.dumps(res), flush=True)
        arms.append(res)
    lo, hi = min(opts["lengths"]), max(opts["lengths"])
    by = {a["arm"]: {r["length"]: r for r in a["rows"]} for a in arms}
    summary = {}
    for name, rows in by.items():
        s = {"step_time_ratio": rows[hi]["ms_per_step"] / rows[lo]["ms_per_step"],
             "memory_ratio": rows[hi]["decode_state_bytes"] / rows[lo]["decode_state_bytes"]}
        if "transformer" in by:
            s["throughput_vs_transformer"] = rows[hi]["tokens_per_s"] / by["transformer"][hi]["tokens_per_s"]
        summary[name] = s
    doc = {"command": "reasonrl bench ssm " + shlex.join(args), "opts": opts, "arms": arms, "summary": summary,
           "env": {"load_before": load_before, "load_after": _loadavg(), "threads": torch.get_num_threads(),
                   "torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor()
                   or platform.machine(), "cpus": os.cpu_count(), "wall_s": time.perf_counter() - t_start,
                   "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}}
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "results.md").write_text(_markdown(doc))
    print(_markdown(doc))
    return 0


if __name__ == "__main__":  # runnable before the bench package lands: python src/reasonrl/bench/ssm.py ...
    sys.exit(run(sys.argv[1:]))
