"""`reasonrl bench async`: wall clock of synchronous vs one-step-off-policy training, same config.

Both arms run the same number of steps on the same model and data; the arms alternate (sync, async,
sync, async, ...) so drifting machine load hits both. Reported per arm: mean step wall time (the
trainer's ``time/step_s``, evaluation excluded), the generation and training time inside a step, and
for async the time the learner waited for its batch (0 = generation fully hidden behind training).
Overrides go to both arms; ``bench.repeats=N`` and ``bench.out=DIR`` are read by the bench itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from reasonrl.bench.results import BenchRun, env_markdown

DEFAULTS = ["trainer.steps=8", "data.eval_size=8", "eval.sampled=false", "trainer.progress=false",
            "trainer.tensorboard=false", "trainer.log_samples=0", "run.out_dir=runs/bench_async",
            "trainer.overwrite=true"]  # scratch runs: a rerun replaces them


def _arm(overrides: list[str], async_on: bool, name: str) -> dict[str, Any]:
    from reasonrl.config import load_config
    from reasonrl.trainer.loop import Trainer

    cfg = load_config(None, DEFAULTS + overrides + [f"run.name={name}", f"async_rollout.enabled={str(async_on).lower()}"])
    t0 = time.perf_counter()
    Trainer(cfg).run()
    total = time.perf_counter() - t0
    rows = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/step_s" in r]

    def mean(k: str) -> float | None:
        v = [r[k] for r in steps if k in r]
        return sum(v) / len(v) if v else None

    return {"async": async_on, "steps": len(steps), "run_s": total, "step_s_mean": mean("time/step_s"),
            "step_s_sum": sum(r["time/step_s"] for r in steps), "gen_s_mean": mean("time/gen_s"),
            "train_s_mean": mean("time/train_s"), "wait_s_mean": mean("async/wait_s"),
            "staleness_mean": mean("async/staleness"), "is_weight_mean": mean("offpolicy/is_weight_mean"),
            "reward_mean": mean("reward/mean")}


def bench_async(overrides: list[str], log=print) -> int:
    run = BenchRun("async", overrides)
    repeats, out = 2, Path("benchmarks/async")
    rest = []
    for o in overrides:
        if o.startswith("bench.repeats="):
            repeats = int(o.split("=", 1)[1])
        elif o.startswith("bench.out="):
            out = Path(o.split("=", 1)[1])
        else:
            rest.append(o)
    runs = []
    for r in range(repeats):
        for async_on in (False, True):
            log(f"bench async: repeat {r} {'async' if async_on else 'sync'} ...")
            runs.append({"repeat": r, **_arm(rest, async_on, f"{'async' if async_on else 'sync'}_{r}")})

    def agg(flag: bool, key: str) -> float:
        v = [x[key] for x in runs if x["async"] == flag and x[key] is not None]
        return sum(v) / len(v) if v else float("nan")

    res = {"overrides": DEFAULTS + rest, "runs": runs,
           "sync_step_s": agg(False, "step_s_mean"), "async_step_s": agg(True, "step_s_mean")}
    res["speedup"] = res["sync_step_s"] / res["async_step_s"]
    run.write(out, res, results_md)
    log((out / "results.md").read_text())
    return 0


def results_md(res: dict[str, Any]) -> str:
    lines = ["# sync vs one-step-off-policy (async) rollout, CPU\n", f"Command: `{res['command']}`\n",
             env_markdown(res["env"]) + "\n",
             "| arm | repeat | steps | step s (mean) | gen s | train s | wait s | staleness | IS weight |",
             "|---|---|---|---|---|---|---|---|---|"]
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for x in res["runs"]:
        lines.append(f"| {'async' if x['async'] else 'sync'} | {x['repeat']} | {x['steps']} | {f(x['step_s_mean'])} | "
                     f"{f(x['gen_s_mean'])} | {f(x['train_s_mean'])} | {f(x['wait_s_mean'])} | "
                     f"{f(x['staleness_mean'])} | {f(x['is_weight_mean'])} |")
    lines.append(f"\nMean step time: sync {res['sync_step_s']:.3f} s, async {res['async_step_s']:.3f} s "
                 f"(speed-up {res['speedup']:.2f}x).")
    return "\n".join(lines) + "\n"
