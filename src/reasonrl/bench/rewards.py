"""``reasonrl bench rewards``: grading throughput, sandboxed vs unsandboxed, measured side by side.

Code: executions per second of one short program (a built-in code task's demonstration with its 4
test calls, one sandbox invocation each) through (a) the bubblewrap sandbox, (b) the same runner as
a plain subprocess with rlimits (``UNSAFE_none``), (c) a bare ``python3 -c 'print(1)'``
subprocess, all with the same number of parallel workers, in interleaved rounds so machine load
hits every variant alike. Math: verifications per second through the number fast path, the
Math-Verify worker (distinct LaTeX pairs, cache off) and the pre-filters.

Overrides (``key=value``): ``n`` executions per variant per round (default 100), ``rounds`` (3),
``workers`` (0 = cores), ``math_n`` (200), ``out`` (benchmarks/rewards).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from reasonrl.bench.results import BenchRun, env_markdown


def _parse(overrides: list[str]) -> dict:
    opts = {"n": 100, "rounds": 3, "workers": 0, "math_n": 200, "out": "benchmarks/rewards"}
    for o in overrides:
        k, sep, v = o.partition("=")
        if not sep or k not in opts:
            raise SystemExit(f"bench rewards: unknown override {o!r}; valid keys: {', '.join(opts)}")
        opts[k] = v if k == "out" else int(v)
    return opts


def _bare(n: int, workers: int, python: str) -> float:
    def one(_):
        subprocess.run([python, "-I", "-S", "-c", "print(1)"], capture_output=True, env={}, check=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - t0)


def _code_rate(ex, jobs) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = ex.run_many(jobs)
    dt = time.perf_counter() - t0
    st: dict[str, int] = {}
    for r in res:
        st[r.status] = st.get(r.status, 0) + 1
    return len(jobs) / dt, st


def _math(n: int) -> dict:
    from reasonrl.rewards.math_verify_worker import MathVerifier

    out = {}
    with MathVerifier(timeout_s=5.0, cache_size=0) as v:
        v.verify("2", r"\sqrt{4}")  # worker start-up is not throughput
        cases = {
            "fast_path": [(str(i), f"{i}.0") for i in range(n)],
            "worker": [(str(i), rf"\sqrt{{{i * i}}}") for i in range(1, n + 1)],
            "prefilter": [("1", rf"{i}^{{{i}^{{{i}}}}}") for i in range(2, n + 2)],
        }
        for name, pairs in cases.items():
            t0 = time.perf_counter()
            verdicts = v.verify_many(pairs)
            dt = time.perf_counter() - t0
            out[name] = {"per_s": len(pairs) / dt, "n": len(pairs),
                         "verdicts": {k: sum(x.value == k for x in verdicts) for k in ("correct", "wrong", "timeout", "error")}}
        out["counts"] = v.counts
    return out


def bench_rewards(overrides: list[str]) -> int:
    from reasonrl.rewards.sandbox import UNSAFE, CodeExecutor, CodeJob, SandboxConfig
    from reasonrl.tasks import generate

    o = _parse(overrides)
    run = BenchRun("rewards", overrides)
    workers = o["workers"] or os.cpu_count() or 1
    tasks = generate("code", o["n"], seed=11)
    jobs = [CodeJob(t.solution, "call", t.meta["code"]["cases"], t.meta["code"]["expected"]) for t in tasks]
    cfg = SandboxConfig(workers=workers)
    boxed = CodeExecutor(cfg)
    plain = CodeExecutor(replace(cfg, isolation=UNSAFE))
    _code_rate(boxed, jobs[:4])
    _code_rate(plain, jobs[:4])
    rates: dict[str, list[float]] = {"bwrap_sandbox": [], "unsandboxed_runner": [], "bare_subprocess": []}
    statuses = {}
    for r in range(o["rounds"]):
        print(f"round {r + 1}/{o['rounds']}", flush=True)
        rate, statuses["bwrap_sandbox"] = _code_rate(boxed, jobs)
        rates["bwrap_sandbox"].append(rate)
        rate, statuses["unsandboxed_runner"] = _code_rate(plain, jobs)
        rates["unsandboxed_runner"].append(rate)
        rates["bare_subprocess"].append(_bare(o["n"], workers, boxed.python))
    latency = []
    one = CodeExecutor(replace(cfg, workers=1))
    for j in jobs[:30]:
        latency.append(one.run(j).seconds * 1000)
    math = _math(o["math_n"])
    result = {
        "thread_policy": f"no torch work here; sandboxes run in {workers} parallel workers",
        "code": {"program": "built-in code task demonstration, 4 test calls, one sandbox invocation per program",
                 "n_per_round": o["n"], "rounds": o["rounds"], "workers": workers,
                 "execs_per_s": {k: {"median": statistics.median(v), "all": v} for k, v in rates.items()},
                 "statuses_last_round": statuses,
                 "sandbox_latency_ms_single_worker": {"median": statistics.median(latency),
                                                      "p90": sorted(latency)[int(0.9 * len(latency))]}},
        "math": math,
    }
    out = Path(o["out"])
    run.write(out, result, _markdown)
    print((out / "results.md").read_text())
    return 0


def _markdown(r: dict) -> str:
    c, m = r["code"], r["math"]
    e = c["execs_per_s"]
    env = r["env"]
    busy = (env["load_before"] or [0])[0] > 0.5 * (env["cpus"] or 1)
    lines = [
        "# Reward grading throughput (`reasonrl bench rewards`)", "",
        f"Command: `{r['command'].strip()}` ({r['thread_policy']}).", "",
        env_markdown(env) + f" ({'other work was competing for the CPU' if busy else 'the machine was quiet'}).", "",
        f"## Code execution ({c['program']}; {c['n_per_round']} programs x {c['rounds']} interleaved rounds, "
        f"{c['workers']} workers)", "",
        "| variant | executions/s (median of rounds) | all rounds |", "|---|---|---|",
    ]
    for k, v in e.items():
        lines.append(f"| {k} | {v['median']:.1f} | {', '.join(f'{x:.1f}' for x in v['all'])} |")
    lat = c["sandbox_latency_ms_single_worker"]
    lines += ["", f"Sandbox latency, one worker: median {lat['median']:.1f} ms, p90 {lat['p90']:.1f} ms per program "
              f"(start-up + 4 forked test calls + verdict).", f"Statuses (last round): {c['statuses_last_round']}.", "",
              "`bwrap_sandbox`: setpriv to an unprivileged uid + bubblewrap (all namespaces, ro /usr, tmpfs, empty env, "
              "rlimits) + runner. `unsandboxed_runner`: the same runner as a plain subprocess (`UNSAFE_none`). "
              "`bare_subprocess`: `python3 -I -S -c 'print(1)'`, no runner.", "",
              "## Math verification", "", "| path | verifications/s | verdicts |", "|---|---|---|"]
    for k in ("fast_path", "worker", "prefilter"):
        lines.append(f"| {k} | {m[k]['per_s']:.0f} | {m[k]['verdicts']} |")
    lines += ["", "`fast_path`: plain numbers compared exactly in the parent; `worker`: distinct `\\sqrt{i*i}` vs `i` pairs "
              "through the Math-Verify worker process (cache off); `prefilter`: exponent towers rejected "
              "without parsing.", ""]
    return "\n".join(lines)
