"""`reasonrl bench throughput`: our GRPO step (native and HF engines) vs TRL's ``GRPOTrainer``, side by side.

Same model directory, same prompts (the training stream's first prompts, same template), same group
size, same completion length (every completion is exactly ``max_new_tokens`` long in every arm: our
engines ignore EOS, TRL gets ``min_new_tokens``), same reward function, fp32, no KL/reference
model, one optimizer step per batch, same thread policy. All arms live in one fresh process and take
one step each in turn, so bursts of load on a shared machine hit every arm alike. Reported per arm:
median wall and process-CPU step time, generated tokens/s over the whole step, generation time (ours),
the sampler/learner log-prob gap; the load average around the run; and the ratios.

Arguments are ``bench.*`` settings, e.g.::

    reasonrl bench throughput bench.model=builtin:smollm2 bench.n=8 bench.steps=3 bench.label=smollm2

TRL comes from the ``bench`` extra (``pip install 'reasonrl[bench]'``); without it the TRL arm is
reported as skipped with the reason.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reasonrl.bench.results import BenchRun, env_markdown
from reasonrl.bench.throughput_learner import VARIANTS
from reasonrl.provenance import write_atomic

ARMS = ("native", "native_ref", "hf", "trl")
# native_ref: the native arm with the learner's reference path (perf.* off): before/after in one run
_ARM_OVERRIDES = {"native_ref": ["perf.logprob_chunk_tokens=0", "perf.packing=false"]}


class ThroughputSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field("builtin:tiny", description="Model for every arm (builtin name or HF directory).")
    label: str = Field("tiny", description="Key of this run in results.json (runs with other labels are kept).")
    template: str = Field("", description="Prompt template; '' = 'chat' for builtin:smollm2, else 'plain'.")
    n: int = Field(16, ge=2, description="Completions per prompt (group size); the batch is prompts * n.")
    prompts: int = Field(1, ge=1, description="Prompts per step.")
    max_new_tokens: int = Field(64, ge=1, description="Completion length (forced in every arm).")
    steps: int = Field(6, ge=1, description="Measured steps per arm.")
    warmup: int = Field(2, ge=0, description="Unmeasured steps first (allocator, lazy init).")
    threads: int = Field(2, ge=1, description="torch intra-op threads in every arm (OMP_WAIT_POLICY=PASSIVE).")
    arms: list[str] = Field(default_factory=lambda: ["native", "hf", "trl"],
                            description="Arms to run, stepped in turn (native, native_ref: native with perf.* off, hf, trl).")
    out: str = Field("benchmarks/throughput", description="Where results.json / results.md go.")
    timeout_s: float = Field(1800, gt=0, description="Per-arm wall-clock limit.")
    mode: Literal["step", "learner", "decode"] = Field("step", description=(
        "'step': whole GRPO steps per arm (with the roofline: each stage's time and efficiency); 'learner': one "
        "learner pass per perf.* variant on a synthetic ragged batch of prompts*n rows (throughput_learner.py), "
        "written to learner.json / learner.md; 'decode': the native engine's reference vs lean decode step at batch n "
        "against the bandwidth/compute roofline, steps rounds (throughput_decode.py), written to decode.json / decode.md."))
    roofline: bool = Field(True, description="mode=step: measure GEMM peak and bandwidth in the same process and report "
                                             "each stage's efficiency (roofline.py).")
    prompt_tokens: list[int] = Field(default_factory=lambda: [16, 48], description=(
        "mode=learner: prompt lengths drawn uniformly from [min, max]; response lengths from [max_new_tokens/4, max_new_tokens]."))
    variants: list[str] = Field(default_factory=lambda: list(VARIANTS), description=(
        "mode=learner: perf variants to compare (names in throughput_learner.VARIANTS; 'reference' first is the baseline)."))


_REWARD_RNG = random.Random(0)


def random_reward(prompt: str, response: str, answer: str, meta: dict) -> float:
    """The benchmark's reward in every arm: uniform noise. Every group then has non-zero advantages,
    so every arm runs the full learner forward/backward each step (with a reward that is constant
    within a group our GRPO recipe would skip the group's forward, which TRL does not)."""
    return _REWARD_RNG.random()


def _template(s: dict[str, Any]) -> str:
    return s["template"] or ("chat" if s["model"] == "builtin:smollm2" else "plain")


def _our_config(s: dict[str, Any], arm: str, out_dir: str):
    from reasonrl.config import load_config

    engine = "native" if arm == "native_ref" else arm
    return load_config(None, _ARM_OVERRIDES.get(arm, []) + [
        f"model.path={s['model']}", f"model.template={_template(s)}", f"rollout.engine={engine}",
        f"rollout.n={s['n']}", f"rollout.max_new_tokens={s['max_new_tokens']}", "rollout.temperature=1.0",
        f"trainer.prompts_per_step={s['prompts']}", "trainer.micro_batch=64", f"rollout.micro_batch={s['prompts'] * s['n']}",
        "reward.correctness=0", "reward.functions=[reasonrl.bench.throughput:random_reward]", "optim.lr=1e-6",
        f"run.threads={s['threads']}", f"run.out_dir={out_dir}", "trainer.tensorboard=false", "data.eval_size=1",
    ])


def _prompts(cfg, tok, count: int) -> list[str]:
    from reasonrl.tasks import load_tasks
    from reasonrl.tasks.templates import render_prompt

    tasks = load_tasks(cfg.data.train, count, split="train", seed=cfg.run.seed + 1, difficulty=cfg.data.difficulty,
                       start=0)
    return [render_prompt(t, cfg.model.template, tok) for t in tasks]


class _OurArm:
    """One of our GRPO trainers (own model copy) stepped on demand: collect + update."""

    def __init__(self, s: dict[str, Any], engine: str, tmp: str):
        from reasonrl.rollout.hf_engine import HFEngine
        from reasonrl.rollout.native_engine import NativeEngine
        from reasonrl.trainer.loop import Trainer

        self.tr = tr = Trainer(_our_config(s, engine, tmp), log=lambda *a: None)
        rows = s["prompts"] * s["n"]
        # fixed-length completions: EOS does not stop a row (same token count as TRL with min_new_tokens)
        tr.engine = (NativeEngine(tr.model, tr.tok, eos_token_ids=[], slots=rows) if engine in ("native", "native_ref")
                     else HFEngine(tr.model, tr.tok, eos_token_ids=[], micro_batch=rows))
        self.raw: dict[str, list[float]] = {"step_s": [], "cpu_s": [], "gen_s": [], "gen_tokens": [], "mismatch": [],
                                            "train_s": [], "reward_s": [], "sync_s": [], "learner_flops": [],
                                            "decode_bytes": [], "decode_flops": []}

    def step(self, record: bool) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        batch, tasks, m = self.tr.collect()
        u = self.tr.update(batch, tasks)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if record:
            self.raw["step_s"].append(dt)
            self.raw["cpu_s"].append(dc)
            self.raw["gen_s"].append(m["time/gen_s"])
            self.raw["gen_tokens"].append(float(batch.loss_mask.sum()))
            self.raw["mismatch"].append(u.get("rollout/logp_mismatch_mean", float("nan")))
            self.raw["train_s"].append(u.get("time/train_s", 0.0))
            self.raw["reward_s"].append(m.get("time/reward_s", 0.0))
            self.raw["sync_s"].append(sum(v for k, v in {**m, **u}.items() if k.startswith("sync/") and k.endswith("_s")))
            self._count(batch)

    def _count(self, batch) -> None:
        """The roofline's counts for this step's batch (roofline.py): learner FLOPs of the loss pass,
        decode bytes and FLOPs of generating it (prompts + forced-length completions, fp32)."""
        from reasonrl.bench.roofline import ModelShape, decode_bytes, decode_flops, learner_flops

        shape = ModelShape.from_config(self.tr.model.config)
        plens = batch.prompt_mask.sum(1).long().tolist()
        seq = [p + int(r) for p, r in zip(plens, batch.response_valid.sum(1).tolist())]
        self.raw["learner_flops"].append(learner_flops(shape, seq, int(batch.loss_mask.sum())))
        new = int(batch.response_valid.sum(1).max()) if len(batch) else 0
        self.raw["decode_bytes"].append(decode_bytes(shape, plens, new))
        self.raw["decode_flops"].append(decode_flops(shape, plens, new))


def _run_interleaved(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """All arms in one process, one step each in turn, so load changes hit every arm alike.

    TRL keeps its own ``Trainer.train`` loop; our arms take their step inside TRL's ``on_step_end``
    callback, outside the window TRL's step is timed over (``on_step_begin`` -> ``on_step_end``,
    which contains its generation: checked against end-to-end spacing when TRL runs alone).
    """
    import importlib.util

    total = s["warmup"] + s["steps"]
    ours = [a for a in dict.fromkeys(s["arms"]) if a != "trl"]
    with tempfile.TemporaryDirectory() as tmp:
        arms = {a: _OurArm(s, a, tmp) for a in ours}
        rounds = {"n": 0}

        def our_round() -> None:
            order = ours if rounds["n"] % 2 == 0 else ours[::-1]  # alternate who goes first
            for a in order:
                arms[a].step(record=rounds["n"] >= s["warmup"])
            rounds["n"] += 1

        out: dict[str, dict[str, Any]] = {}
        if "trl" in s["arms"] and importlib.util.find_spec("trl") is not None:
            out["trl"] = _run_trl(s, tmp, our_round)
        else:
            if "trl" in s["arms"]:
                out["trl"] = {"skipped": "trl is not installed (pip install 'reasonrl[bench]')"}
            for _ in range(total):
                our_round()
        for a in ours:
            out[a] = arms[a].raw
    return out


def _run_trl(s: dict[str, Any], tmp: str, between_steps) -> dict[str, Any]:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from reasonrl.models.loading import load_policy
    from reasonrl.trainer.loop import resolve_model

    cfg = _our_config(s, "hf", tmp)
    model, tok = load_policy(resolve_model(s["model"], log=lambda *a: None), dtype="float32")
    total = s["warmup"] + s["steps"]
    prompts = _prompts(cfg, tok, s["prompts"] * total)

    def reward(completions, **kw):
        return [random_reward("", c, "", {}) for c in completions]

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.cpu, self.logs, self.t0, self.c0 = [], [], [], 0.0, 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)
            between_steps()

        def on_log(self, args, state, control, logs=None, **kw):
            self.logs.append(dict(logs or {}))

    clock = Clock()
    args = GRPOConfig(
        output_dir=str(Path(tmp) / "trl"), use_cpu=True, bf16=False, fp16=False, seed=0, report_to="none",
        save_strategy="no", logging_steps=1, disable_tqdm=True, max_steps=total, learning_rate=1e-6,
        per_device_train_batch_size=s["prompts"] * s["n"], num_generations=s["n"], gradient_accumulation_steps=1,
        max_completion_length=s["max_new_tokens"], temperature=1.0, beta=0.0,
        generation_kwargs={"min_new_tokens": s["max_new_tokens"]}, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=Dataset.from_dict({"prompt": prompts}),
                          processing_class=tok, callbacks=[clock])
    trainer.train()
    lens = [lg["completions/mean_length"] for lg in clock.logs if "completions/mean_length" in lg][s["warmup"]:]
    return {"step_s": clock.times[s["warmup"]:], "cpu_s": clock.cpu[s["warmup"]:], "gen_tokens": [float(x) * s["prompts"] * s["n"] for x in lens],
            "trl_version": trl.__version__}


def _child(payload: str) -> None:
    s = json.loads(payload)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    from reasonrl.threads import apply_thread_policy

    apply_thread_policy(s["threads"])
    if s.get("mode") == "learner":
        print("RESULT " + json.dumps(_learner_child(s)), flush=True)
        return
    if s.get("mode") == "decode":
        from reasonrl.bench.throughput_decode import run_decode
        from reasonrl.models.loading import load_policy
        from reasonrl.trainer.loop import resolve_model

        model, tok = load_policy(resolve_model(s["model"], log=lambda *a: None), dtype="float32")
        got = run_decode(model.eval(), tok, s["n"], s["max_new_tokens"], s["steps"], s["threads"],
                         log=lambda m: print(m, file=sys.stderr, flush=True))
        print("RESULT " + json.dumps(got), flush=True)
        return
    out = _run_interleaved(s)
    peaks = None
    if s.get("roofline"):
        from reasonrl.bench.roofline import machine_peaks

        peaks = machine_peaks(s["threads"])
    print("RESULT " + json.dumps({"arms": out, "peaks": peaks,
                                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def _learner_child(s: dict[str, Any]) -> dict[str, Any]:
    from reasonrl.bench.throughput_learner import run_learner_options
    from reasonrl.models.loading import load_policy
    from reasonrl.trainer.loop import resolve_model

    model, _ = load_policy(resolve_model(s["model"], log=lambda *a: None), dtype="float32")
    lo, hi = s["prompt_tokens"]
    out = run_learner_options(model, s["prompts"] * s["n"], (lo, hi), (max(1, s["max_new_tokens"] // 4), s["max_new_tokens"]),
                              s["steps"], s["threads"], s["variants"], log=lambda m: print(m, file=sys.stderr, flush=True))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _summarise(arm: str, raw: dict[str, Any], s: dict[str, Any], peaks: dict[str, float] | None = None) -> dict[str, Any]:
    if raw.get("skipped"):
        return {"arm": arm, "skipped": raw["skipped"]}
    step = statistics.median(raw["step_s"])
    tokens = statistics.median(raw["gen_tokens"]) if raw.get("gen_tokens") else float(s["prompts"] * s["n"] * s["max_new_tokens"])
    out = {"arm": arm, "median_step_s": step, "gen_tokens_per_step": tokens, "step_tokens_per_s": tokens / step,
           "step_s": raw["step_s"], "cpu_s": raw.get("cpu_s", []),
           "median_cpu_s": statistics.median(raw["cpu_s"]) if raw.get("cpu_s") else None}
    if raw.get("gen_s"):
        g = statistics.median(raw["gen_s"])
        out.update({"median_gen_s": g, "gen_tokens_per_s": tokens / g})
    if raw.get("mismatch"):
        out["logp_mismatch_mean"] = statistics.median(raw["mismatch"])
    if raw.get("trl_version"):
        out["trl_version"] = raw["trl_version"]
    if peaks and raw.get("train_s"):
        out["stages"] = stage_roofline(raw, peaks)
    return out


def stage_roofline(raw: dict[str, list[float]], peaks: dict[str, float]) -> dict[str, dict[str, float]]:
    """Median seconds per stage and, where a roofline applies, its efficiency: the learner's counted
    FLOPs against the fp32 GEMM peak, the rollout's counted bytes against the copy bandwidth (and its
    FLOPs against the GEMM peak); reward, weight sync and the rest of the step (overhead) are time only."""
    med = statistics.median
    gen, train, rew, sync, step = (med(raw[k]) for k in ("gen_s", "train_s", "reward_s", "sync_s", "step_s"))
    out = {
        "learner": {"s": train, "flops": med(raw["learner_flops"]),
                    "flop_efficiency": med(raw["learner_flops"]) / max(train, 1e-9) / peaks["gemm_fp32_flops"]},
        "rollout": {"s": gen, "bytes": med(raw["decode_bytes"]),
                    "bandwidth_efficiency": med(raw["decode_bytes"]) / max(gen, 1e-9) / peaks["bandwidth_bytes_s"],
                    "flop_efficiency": med(raw["decode_flops"]) / max(gen, 1e-9) / peaks["gemm_fp32_flops"]},
        "reward": {"s": rew},
        "sync": {"s": sync},
        "overhead": {"s": max(0.0, step - gen - rew - train - sync)},
    }
    return out


def bench_throughput(overrides: list[str]) -> int:
    from reasonrl.config import ConfigError, _parse_value

    data: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.startswith("bench."):
            raise ConfigError(f"override {item!r}: `reasonrl bench throughput` takes bench.<field>=value "
                              f"(fields: {', '.join(ThroughputSettings.model_fields)})")
        data[key[len("bench."):]] = _parse_value(raw)
    try:
        st = ThroughputSettings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid bench settings: {e}") from None
    if st.mode == "learner" and (len(st.prompt_tokens) != 2 or not 1 <= st.prompt_tokens[0] <= st.prompt_tokens[1]
                                 or [v for v in st.variants if v not in VARIANTS] or not st.variants):
        raise ConfigError(f"bench.prompt_tokens must be [min, max] with 1 <= min <= max, and bench.variants a non-empty "
                          f"subset of {list(VARIANTS)}; got {st.prompt_tokens}, {st.variants}")
    bad = [a for a in st.arms if a not in ARMS]
    if bad or not st.arms:
        raise ConfigError(f"bench.arms: unknown arm(s) {bad} or none given; choose from {list(ARMS)}")
    s = st.model_dump()
    run = BenchRun("throughput", command=command(s))
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    what = (f"learner variants {', '.join(st.variants)}: 1+{st.steps} rounds" if st.mode == "learner" else
            f"decode reference vs lean at batch {st.n}: {st.steps} rounds" if st.mode == "decode" else
            f"{', '.join(dict.fromkeys(st.arms))}: {st.warmup}+{st.steps} interleaved steps")
    print(f"[throughput] {what} (load {run.load_before})", flush=True)
    # a fresh process: the thread policy is applied before torch does any work
    proc = subprocess.run([sys.executable, "-m", "reasonrl.bench.throughput", json.dumps(s)], env=env,
                          capture_output=True, text=True, timeout=st.timeout_s)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        print(f"[throughput] failed (exit {proc.returncode}):\n{(proc.stderr or proc.stdout)[-4000:]}", flush=True)
        return 1
    got = json.loads(line[len("RESULT "):])
    if st.mode == "learner":
        _write_learner(st, s, got, run)
        return 0
    if st.mode == "decode":
        _write_decode(st, s, got, run)
        return 0
    results = [_summarise(a, got["arms"][a], s, got.get("peaks")) for a in dict.fromkeys(st.arms)]
    for r in results:
        if "median_step_s" in r:
            print(f"[throughput] {r['arm']}: {r['median_step_s']:.3f} s/step, {r['step_tokens_per_s']:.0f} tok/s", flush=True)
    _write(st, s, results, run, {"peak_rss_mb_all_arms": got["peak_rss_mb"], "peaks": got.get("peaks")})
    return 0


def command(s: dict[str, Any]) -> str:
    """The command line that reproduces settings ``s`` (non-default settings only)."""
    return ("reasonrl bench throughput " + " ".join(
        shlex.quote(f"bench.{k}={json.dumps(v) if isinstance(v, list) else v}") for k, v in s.items()
        if v != ThroughputSettings.model_fields[k].get_default(call_default_factory=True))).strip()


def _ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    """Ratios of medians (wall and process CPU time), and the median of per-round paired wall ratios
    (round i of one arm against round i of another: both ran within seconds of each other)."""
    by = {r["arm"]: r for r in results if "median_step_s" in r}
    out = {}

    def add(num: str, den: str) -> None:
        a, b = by[num], by[den]
        out[f"{num}/{den} wall (ratio of medians)"] = a["median_step_s"] / b["median_step_s"]
        if a.get("median_cpu_s") and b.get("median_cpu_s"):
            out[f"{num}/{den} CPU time (ratio of medians)"] = a["median_cpu_s"] / b["median_cpu_s"]
        pairs = [x / y for x, y in zip(a["step_s"], b["step_s"])]
        if pairs:
            out[f"{num}/{den} wall (median of paired rounds)"] = statistics.median(pairs)

    for arm in by:
        if arm != "trl" and "trl" in by:
            add("trl", arm)
    if "native_ref" in by and "native" in by:
        add("native_ref", "native")
    if "hf" in by and "native" in by:
        add("hf", "native")
        if "median_gen_s" in by["hf"] and "median_gen_s" in by["native"]:
            out["hf/native generation wall (ratio of medians)"] = by["hf"]["median_gen_s"] / by["native"]["median_gen_s"]
    return out


def _write(st: ThroughputSettings, s: dict[str, Any], results: list[dict[str, Any]], run: BenchRun,
           extra: dict[str, Any]) -> None:
    """Add this run under ``st.label`` to ``results.json`` (other labels are kept) and re-render ``results.md``."""
    import transformers

    out = Path(st.out)
    jp = out / "results.json"
    allres = json.loads(jp.read_text()) if jp.exists() else {}
    allres[st.label] = run.stamp({
        "settings": s, "results": results, "ratios": _ratios(results), **extra,
        "thread_policy": f"torch.set_num_threads({st.threads}), interop threads 1, OMP_WAIT_POLICY=PASSIVE; all arms in "
                         "one process, one step each in turn",
        "transformers": transformers.__version__,
        "note": "shared machine: other engineers' jobs were running; compare arms within this run, not across runs",
    })
    write_atomic(jp, json.dumps(allres, indent=2) + "\n")
    write_atomic(out / "results.md", results_md(allres))


def _write_learner(st: ThroughputSettings, s: dict[str, Any], got: dict[str, Any], run: BenchRun) -> None:
    """Add this learner-options run under ``st.label`` to ``learner.json`` and re-render ``learner.md``."""
    out = Path(st.out)
    jp = out / "learner.json"
    allres = json.loads(jp.read_text()) if jp.exists() else {}
    allres[st.label] = run.stamp({"settings": s, **got,
                                  "note": "shared machine: compare variants within this run, not across runs"})
    write_atomic(jp, json.dumps(allres, indent=2) + "\n")
    lines = ["# Learner speed options (perf.*), side by side", "",
             "Generated by `reasonrl bench throughput bench.mode=learner` (src/reasonrl/bench/throughput_learner.py): "
             "one forward (with entropy) + GRPO-like loss + backward per variant per round, variants in turn (order "
             "alternating), one process. FLOP efficiency = counted learner FLOPs (roofline.py) / time / the GEMM peak "
             "measured in the same process (bf16 peak for bf16 variants). Saved MB = bytes autograd keeps for the "
             "backward.", ""]
    for label, rr in allres.items():
        p = rr["peaks"]
        lines += [f"## {label}: {rr['settings']['model']}, {rr['rows']} rows, {rr['real_tokens']} real tokens "
                  f"({rr['padded_tokens']} padded), {rr['scored_tokens']} scored, {rr['settings']['steps']} rounds", "",
                  f"Command: `{rr['command']}`  ", f"{env_markdown(rr['env'])}  " if "env" in rr else "",
                  f"Measured peaks ({p['threads']:.0f} threads): fp32 GEMM {p['gemm_fp32_flops'] / 1e9:.1f} GFLOP/s, "
                  + (f"bf16 GEMM {p['gemm_bf16_flops'] / 1e9:.1f} GFLOP/s, " if "gemm_bf16_flops" in p else "")
                  + f"copy bandwidth {p['bandwidth_bytes_s'] / 1e9:.1f} GB/s; learner pass {rr['learner_flops'] / 1e9:.2f} GFLOP", "",
                  "| variant | median s | vs reference | real tok/s | FLOP efficiency | saved for backward MB | max abs logp gap vs fp32 reference |",
                  "|---|---|---|---|---|---|---|"]
        ref = rr["variants"].get("reference", {}).get("median_s")
        for v, r in rr["variants"].items():
            eff = f"{100 * r['flop_efficiency']:.1f} %" if r["flop_efficiency"] else "n/a"
            gap = "n/a" if r["max_abs_logp_gap_vs_reference"] is None else f"{r['max_abs_logp_gap_vs_reference']:.1e}"
            rel = f"{ref / r['median_s']:.2f}x" if ref else "n/a"
            lines.append(f"| {v} | {r['median_s']:.3f} | {rel} | {r['tokens_per_s']:.0f} | {eff} | {r['saved_mb']:.1f} | {gap} |")
        lines.append("")
    write_atomic(out / "learner.md", "\n".join(lines) + "\n")


def _write_decode(st: ThroughputSettings, s: dict[str, Any], got: dict[str, Any], run: BenchRun) -> None:
    """Add this decode run under ``st.label`` to ``decode.json`` and re-render ``decode.md``."""
    from reasonrl.bench.throughput_decode import decode_md

    out = Path(st.out)
    jp = out / "decode.json"
    allres = json.loads(jp.read_text()) if jp.exists() else {}
    allres[st.label] = run.stamp({"settings": s, **got})
    write_atomic(jp, json.dumps(allres, indent=2) + "\n")
    write_atomic(out / "decode.md", decode_md(allres))
    for v, r in got["variants"].items():
        print(f"[throughput] decode {v}: {r['median_wall_s']:.3f} s wall, {100 * r['bandwidth_roofline_cpu']:.1f} % of "
              f"the bandwidth roofline (cpu), tokens equal {r['greedy_tokens_equal'] and r['sampled_tokens_equal']}",
              flush=True)


def _provenance(rr: dict[str, Any]) -> list[str]:
    trl = next((f", trl {r['trl_version']}" for r in rr["results"] if r.get("trl_version")), "")
    lines = [f"Command: `{rr['command']}`  ", f"Threads: {rr['thread_policy']}  "]
    if "env" in rr:
        return lines + [f"{env_markdown(rr['env'])}  ", f"Peak RSS of the one process holding all arms: "
                        f"{rr.get('peak_rss_mb_all_arms', float('nan')):.0f} MB; transformers {rr.get('transformers')}{trl}"]
    return lines + [  # written before the shared result writer
        f"Date: {rr['date']}  ",
        f"Load average (1, 5, 15 min) before -> after: {rr.get('load_before')} -> {rr.get('load_after')}  ",
        f"Peak RSS of the one process holding all arms: {rr.get('peak_rss_mb_all_arms', float('nan')):.0f} MB  ",
        f"Versions: torch {rr['machine']['torch']}, transformers {rr['machine']['transformers']}{trl}"]


def _stage_md(rr: dict[str, Any]) -> list[str]:
    """The roofline table: each stage's median time and efficiency against this machine's measured peaks."""
    p = rr.get("peaks")
    staged = [r for r in rr["results"] if r.get("stages")]
    if not p or not staged:
        return []
    lines = ["", f"Roofline (measured in the same process, {p['threads']:.0f} threads): fp32 GEMM peak "
             f"{p['gemm_fp32_flops'] / 1e9:.1f} GFLOP/s"
             + (f", bf16 GEMM peak {p['gemm_bf16_flops'] / 1e9:.1f} GFLOP/s" if "gemm_bf16_flops" in p else "")
             + f", copy bandwidth {p['bandwidth_bytes_s'] / 1e9:.1f} GB/s. Learner efficiency = counted FLOPs of the "
             "loss pass (6 x params x tokens + attention) / time / fp32 peak; rollout = counted decode bytes (weights + "
             "K/V read per token) / time / bandwidth, and its FLOPs / time / fp32 peak.", "",
             "| arm | learner s | learner % of GEMM peak | rollout s | rollout % of bandwidth roofline | rollout % of GEMM peak "
             "| reward s | sync s | overhead s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in staged:
        g = r["stages"]
        lines.append(f"| {r['arm']} | {g['learner']['s']:.3f} | {100 * g['learner']['flop_efficiency']:.1f} % | "
                     f"{g['rollout']['s']:.3f} | {100 * g['rollout']['bandwidth_efficiency']:.1f} % | "
                     f"{100 * g['rollout']['flop_efficiency']:.1f} % | {g['reward']['s']:.3f} | {g['sync']['s']:.3f} | "
                     f"{g['overhead']['s']:.3f} |")
    return lines


def results_md(allres: dict[str, Any]) -> str:
    lines = ["# Throughput: our GRPO step vs TRL GRPOTrainer (CPU)", "",
             "Generated by `reasonrl bench throughput` (src/reasonrl/bench/throughput.py). Every arm: same model "
             "directory, prompts, group size, forced completion length, reward, fp32, no reference model, one "
             "optimizer step per batch, same threads. All arms run in one process, one step each in turn (our arms "
             "inside TRL's step-end callback), so load changes on this shared machine (other engineers' jobs; load "
             "averages below) hit every arm alike: the ratio within one run is the figure to read.", ""]
    for label, rr in allres.items():
        st_ = rr["settings"]
        lines += [f"## {label}: {st_['model']}, {st_['prompts']} prompt(s) x {st_['n']} completions x "
                  f"{st_['max_new_tokens']} tokens, {st_['warmup']} warm-up + {st_['steps']} measured steps", "",
                  *_provenance(rr), "",
                  "| arm | median step s (wall) | median step s (process CPU) | generated tok/s (whole step, wall) | "
                  "median generation s | generation tok/s | sampler-learner mean abs logp gap | step times s (wall) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rr["results"]:
            if "median_step_s" not in r:
                lines.append(f"| {r['arm']} | {r.get('skipped') or r.get('failed')} | | | | | | |")
                continue
            g = f"{r['median_gen_s']:.3f}" if "median_gen_s" in r else "n/a"
            gt = f"{r['gen_tokens_per_s']:.0f}" if "gen_tokens_per_s" in r else "n/a"
            mm = f"{r['logp_mismatch_mean']:.1e}" if "logp_mismatch_mean" in r else "n/a"
            cpu = f"{r['median_cpu_s']:.3f}" if r.get("median_cpu_s") else "n/a"
            lines.append(f"| {r['arm']} | {r['median_step_s']:.3f} | {cpu} | {r['step_tokens_per_s']:.0f} | {g} | {gt} | {mm} | "
                         + ", ".join(f"{x:.2f}" for x in r["step_s"]) + " |")
        lines += _stage_md(rr)
        lines += ["", "Ratios (> 1: the second arm is faster):", ""]
        lines += [f"- {k}: {v:.2f}x" for k, v in rr["ratios"].items()] + [""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    _child(sys.argv[1])
