"""`reasonrl bench ssm`: decode cost vs generation length, transformer vs Mamba vs Mamba-2 (matched size).

Each arm decodes ``max(lengths)`` tokens greedily for ``slots`` rows of one prompt with its rollout
engine's own decode step: the transformer (``builtin:tiny``'s 4×128 Llama) with ``NativeEngine``'s
prefill and decode over its preallocated KV cache, the SSMs (``builtin:tiny-mamba``/``-mamba2``
architectures) with ``RecurrentEngine``'s prefill and recurrent step. The arms advance **one step at a
time in turn** (the order rotating every step), so load changes on a shared machine hit every arm at
the same lengths; every step is timed, the whole decode is run ``repeats`` times from a fresh prefill and
each step keeps its fastest repeat (other processes' bursts only ever add time). At each length L:

- per-token decode time at L: the median step time over the ``window`` steps ending at L;
- decode tokens/s at L: ``slots`` / that step time (the marginal rate at length L);
- rollout tokens/s up to L: ``slots · L`` tokens over prefill + the first L-1 decode steps, i.e. what a
  rollout of L tokens costs the engine's decode loop (sampling included: an argmax per step);
- decode-state memory at L: the KV cache a length-L sequence occupies (bytes per position of the
  engine's allocated cache × (prompt + L)) vs the SSM's recurrent state (its tensors' bytes, the same at
  every L).

Weights are random (speed does not depend on them); threads default to 1. Results:
``benchmarks/ssm/results.json`` and ``results.md`` with the command, load average and versions.
``mode=accuracy`` runs the other half of the comparison instead (``bench/ssm_accuracy.py``): held-out
pass@1 of the three architectures after the same SFT + GRPO budget, over seeds.
"""

from __future__ import annotations

import json
import math
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
                            "repeats": 2,
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


class _TransformerArm:
    """``NativeEngine``'s prefill and decode step over its own KV cache (no sampling overhead beyond argmax)."""

    def __init__(self, model, tok, prompt: list[int], slots: int, max_len: int):
        from reasonrl.rollout.native_engine import NativeEngine

        eng = NativeEngine(model, tok, slots=slots, eos_token_ids=[])
        eng._refresh()
        p = len(prompt)
        self.cache = eng._cache_for(slots, p + max_len)
        eng._rope_table(p + max_len)
        t0 = time.perf_counter()
        kv, lg = eng._prefill(torch.tensor([prompt] * slots), torch.full((slots,), p))
        self.cache[:, :, :, :, :p] = kv
        self.prefill_s = time.perf_counter() - t0
        self.eng, self.logits, self.pos, self.p, self.slots = eng, lg.float(), torch.full((slots,), p), p, slots
        c = self.cache
        self.bytes_per_pos = c.numel() * c.element_size() / (c.shape[1] * c.shape[4])

    def step(self) -> None:
        tok = self.logits.argmax(-1)
        self.logits = self.eng._decode(self.cache, tok, self.pos, int(self.pos.max()) + 1)
        self.pos += 1

    def state_bytes(self, length: int) -> int:
        return int(self.bytes_per_pos * self.slots * (self.p + length))


class _SSMArm:
    """``RecurrentEngine``'s prefill (parallel form) and recurrent step over a fixed-size state."""

    def __init__(self, model, tok, prompt: list[int], slots: int, max_len: int):
        from reasonrl.rollout.recurrent_engine import RecurrentEngine, state_bytes

        eng = RecurrentEngine(model, tok, slots=slots, eos_token_ids=[])
        t0 = time.perf_counter()
        self.logits, self.states = eng._prefill([prompt] * slots)
        self.prefill_s = time.perf_counter() - t0
        self.view, self.bytes = eng._view, state_bytes(self.states)

    def step(self) -> None:
        self.logits, self.states = self.view.step(self.logits.argmax(-1), self.states)

    def state_bytes(self, length: int) -> int:
        return self.bytes


def measure(models: dict[str, torch.nn.Module], tok, opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Decode all arms side by side, one step each in rotating order; return one table per arm."""
    max_len, slots = max(opts["lengths"]), opts["slots"]
    prompt = list(tok(opts["prompt"])["input_ids"])
    names = list(opts["arms"])
    times: dict[str, list[float]] = {n: [math.inf] * (max_len - 1) for n in names}
    prefill: dict[str, float] = {n: math.inf for n in names}
    with torch.inference_mode():
        for _ in range(opts["repeats"]):  # per step, the fastest repeat: filters other processes' bursts
            arms = {n: (_TransformerArm if n == "transformer" else _SSMArm)(models[n], tok, prompt, slots, max_len)
                    for n in names}
            for n in names:
                prefill[n] = min(prefill[n], arms[n].prefill_s)
            for t in range(max_len - 1):  # step t feeds token t and yields the logits of token t+1
                for n in names[t % len(names):] + names[: t % len(names)]:
                    t0 = time.perf_counter()
                    arms[n].step()
                    times[n][t] = min(times[n][t], time.perf_counter() - t0)
    out = []
    for n in names:
        cum = [0.0]
        for dt in times[n]:
            cum.append(cum[-1] + dt)
        rows = []
        for length in opts["lengths"]:
            w = times[n][max(0, length - 1 - opts["window"]): length - 1] or times[n][:1]
            step_s = statistics.median(w)
            rows.append({"length": length, "ms_per_step": 1e3 * step_s, "decode_tokens_per_s_at_length": slots / step_s,
                         "rollout_tokens_per_s": slots * length / (prefill[n] + cum[length - 1]),
                         "decode_state_bytes": arms[n].state_bytes(length)})
        out.append({"arm": n, "engine": "NativeEngine" if n == "transformer" else "RecurrentEngine",
                    "params": sum(p.numel() for p in models[n].parameters()), "prefill_s": prefill[n],
                    "decode_s": cum[-1], "rows": rows})
    return out


def _markdown(doc: dict[str, Any]) -> str:
    lines = ["# SSM vs transformer decode cost vs generation length", "",
             f"Command: `{doc['command']}`", "",
             f"Slots {doc['opts']['slots']}, greedy, random weights, arms interleaved step by step, each step the "
             f"fastest of {doc['opts']['repeats']} repeats, step time the median over the {doc['opts']['window']} "
             f"steps before each length, {doc['env']['threads']} thread(s); "
             f"load average before {doc['env']['load_before']}, after {doc['env']['load_after']}; "
             f"torch {doc['env']['torch']}, {doc['env']['cpu']}; {doc['env']['date']}.", "",
             "| arm | params | length | ms / decode step at length | decode tokens/s at length | rollout tokens/s up to "
             "length | decode state (MiB) |", "|---|---|---|---|---|---|---|"]
    for arm in doc["arms"]:
        for r in arm["rows"]:
            lines.append(f"| {arm['arm']} ({arm['engine']}) | {arm['params'] / 1e6:.2f}M | {r['length']} | "
                         f"{r['ms_per_step']:.2f} | {r['decode_tokens_per_s_at_length']:.0f} | "
                         f"{r['rollout_tokens_per_s']:.0f} | {r['decode_state_bytes'] / 2**20:.2f} |")
    lines += ["", "Ratios, longest length over shortest, and against the transformer at the longest length:", "",
              "| arm | step time | state memory | decode tokens/s at length vs transformer | rollout tokens/s vs "
              "transformer |", "|---|---|---|---|---|"]
    for arm, s in doc["summary"].items():
        lines.append(f"| {arm} | {s['step_time_ratio']:.2f} | {s['memory_ratio']:.2f} | "
                     f"{s.get('decode_vs_transformer', float('nan')):.2f} | "
                     f"{s.get('rollout_vs_transformer', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def run(args: list[str]) -> int:
    """Entry point (``reasonrl bench ssm [key=value ...]``); writes ``<out>/results.{json,md}``."""
    from reasonrl.models.tiny import TinySpec, _tokenizer_corpus
    from reasonrl.models.tokenizer import train_tokenizer

    if any(a.startswith("mode=") for a in args):
        mode = next(a for a in args if a.startswith("mode=")).partition("=")[2]
        if mode == "accuracy":
            from reasonrl.bench.ssm_accuracy import run as run_accuracy

            return run_accuracy(list(args))
        if mode != "decode":
            raise SystemExit(f"bench ssm: mode must be 'decode' (default) or 'accuracy', got {mode!r}")
        args = [a for a in args if not a.startswith("mode=")]
    opts = _parse(list(args))
    torch.set_num_threads(opts["threads"])
    load_before = _loadavg()
    t_start = time.perf_counter()
    tok = train_tokenizer(_tokenizer_corpus(TinySpec()), TinySpec().vocab_size)
    models = _models(tok, max(opts["lengths"]))
    arms = measure(models, tok, opts)
    lo, hi = min(opts["lengths"]), max(opts["lengths"])
    by = {a["arm"]: {r["length"]: r for r in a["rows"]} for a in arms}
    summary = {}
    for name, rows in by.items():
        s = {"step_time_ratio": rows[hi]["ms_per_step"] / rows[lo]["ms_per_step"],
             "memory_ratio": rows[hi]["decode_state_bytes"] / rows[lo]["decode_state_bytes"]}
        if "transformer" in by:
            tr = by["transformer"][hi]
            s["decode_vs_transformer"] = rows[hi]["decode_tokens_per_s_at_length"] / tr["decode_tokens_per_s_at_length"]
            s["rollout_vs_transformer"] = rows[hi]["rollout_tokens_per_s"] / tr["rollout_tokens_per_s"]
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
