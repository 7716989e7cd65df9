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


ARMS = {"sync": [], "async": ["async_rollout.enabled=true"],
        "async_process": ["async_rollout.enabled=true", "async_rollout.process=true"]}


def _arm(overrides: list[str], arm: str, name: str) -> dict[str, Any]:
    from reasonrl.config import load_config
    from reasonrl.trainer.loop import Trainer

    async_on = arm != "sync"
    cfg = load_config(None, DEFAULTS + overrides + [f"run.name={name}", *ARMS[arm]])
    t0 = time.perf_counter()
    Trainer(cfg).run()
    total = time.perf_counter() - t0
    rows = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/step_s" in r]

    def mean(k: str) -> float | None:
        v = [r[k] for r in steps if k in r]
        return sum(v) / len(v) if v else None

    return {"arm": arm, "async": async_on, "steps": len(steps), "run_s": total, "step_s_mean": mean("time/step_s"),
            "step_s_sum": sum(r["time/step_s"] for r in steps),
            # without step 1: it pays the producer's start (a spawned process imports torch and builds its stage)
            "step_s_mean_after_first": (sum(r["time/step_s"] for r in steps[1:]) / (len(steps) - 1)
                                        if len(steps) > 1 else None), "gen_s_mean": mean("time/gen_s"),
            "train_s_mean": mean("time/train_s"), "wait_s_mean": mean("async/wait_s"),
            "rollout_cpu_s_mean": mean("async/rollout_cpu_s"),
            "staleness_mean": mean("async/staleness"), "is_weight_mean": mean("offpolicy/is_weight_mean"),
            "reward_mean": mean("reward/mean"),
            # the learning curve per sample: reward of each step's batch against the samples trained on so far
            "samples_per_step": cfg.trainer.prompts_per_step * cfg.rollout.n,
            "reward_per_step": [r.get("reward/mean") for r in steps]}


def bench_async(overrides: list[str], log=print) -> int:
    run = BenchRun("async", overrides)
    repeats, out = 2, Path("benchmarks/async")
    arms = ["sync", "async"]  # bench.arms=[sync,async,async_process] adds the rollout-process arm
    rest = []
    for o in overrides:
        if o.startswith("bench.repeats="):
            repeats = int(o.split("=", 1)[1])
        elif o.startswith("bench.arms="):
            arms = [a.strip() for a in o.split("=", 1)[1].strip("[]").split(",") if a.strip()]
            if not arms or set(arms) - set(ARMS):
                raise ValueError(f"bench.arms={arms}: choose from {list(ARMS)}")
        elif o.startswith("bench.out="):
            out = Path(o.split("=", 1)[1])
        else:
            rest.append(o)
    runs = []
    for r in range(repeats):
        for arm in arms:
            log(f"bench async: repeat {r} {arm} ...")
            runs.append({"repeat": r, **_arm(rest, arm, f"{arm}_{r}")})

    def agg(arm: str, key: str) -> float:
        v = [x[key] for x in runs if x.get("arm", "async" if x["async"] else "sync") == arm and x[key] is not None]
        return sum(v) / len(v) if v else float("nan")

    res = {"overrides": DEFAULTS + rest, "runs": runs, "arms": arms,
           **{f"{a}_step_s": agg(a, "step_s_mean") for a in arms}}
    res.update({f"{a}_step_s_after_first": agg(a, "step_s_mean_after_first") for a in arms})
    if "sync" in arms:  # speed-up of each async arm over sync (> 1: async is faster)
        res["speedups"] = {a: res["sync_step_s"] / res[f"{a}_step_s"] for a in arms if a != "sync"}
        res["speedups_after_first"] = {a: res["sync_step_s_after_first"] / res[f"{a}_step_s_after_first"]
                                       for a in arms if a != "sync"}
        res["speedup"] = res["speedups"].get("async", float("nan"))
    run.write(out, res, results_md)
    if plot_curves(runs, arms, out / "curves.png"):
        with open(out / "results.md", "a") as f:
            f.write(curves_md(runs, arms))
    log((out / "results.md").read_text())
    return 0


def _curve(runs: list[dict[str, Any]], arm: str) -> tuple[list[int], list[float]]:
    """Mean over repeats of the per-step batch reward of ``arm``, against samples trained on."""
    rs = [r for r in runs if r.get("arm") == arm and r.get("reward_per_step")]
    if not rs:
        return [], []
    n = min(len(r["reward_per_step"]) for r in rs)
    ys = [sum(r["reward_per_step"][i] for r in rs) / len(rs) for i in range(n)]
    return [(i + 1) * rs[0]["samples_per_step"] for i in range(n)], ys


def plot_curves(runs: list[dict[str, Any]], arms: list[str], path: Path) -> Path | None:
    """Batch reward against samples trained on, one line per arm (mean over repeats)."""
    from matplotlib.figure import Figure

    curves = {a: _curve(runs, a) for a in arms}
    if not any(xs for xs, _ in curves.values()):
        return None
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for i, (a, (xs, ys)) in enumerate(curves.items()):
        ax.plot(xs, ys, label=a, color=f"C{i}", marker="o", markersize=3)
    ax.set_xlabel("samples trained on")
    ax.set_ylabel("batch reward (mean over repeats)")
    ax.set_title("learning curve per sample: sync vs async (staleness 1)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def curves_md(runs: list[dict[str, Any]], arms: list[str]) -> str:
    curves = {a: _curve(runs, a) for a in arms}
    n = min(len(xs) for xs, _ in curves.values())
    lines = ["\n## Learning curve per sample (`curves.png`; batch reward, mean over repeats)\n",
             "| samples | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for i in range(n):
        lines.append(f"| {curves[arms[0]][0][i]} | " + " | ".join(f"{curves[a][1][i]:.3f}" for a in arms) + " |")
    return "\n".join(lines) + "\n"


def results_md(res: dict[str, Any]) -> str:
    lines = ["# sync vs one-step-off-policy (async) rollout, CPU\n", f"Command: `{res['command']}`\n",
             env_markdown(res["env"]) + "\n",
             "| arm | repeat | steps | step s (mean) | gen s | rollout process cpu s | train s | wait s | staleness | IS weight |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for x in res["runs"]:
        lines.append(f"| {x.get('arm', 'async' if x['async'] else 'sync')} | {x['repeat']} | {x['steps']} | {f(x['step_s_mean'])} | "
                     f"{f(x['gen_s_mean'])} | {f(x.get('rollout_cpu_s_mean'))} | {f(x['train_s_mean'])} | {f(x['wait_s_mean'])} | "
                     f"{f(x['staleness_mean'])} | {f(x['is_weight_mean'])} |")
    arms = res.get("arms", ["sync", "async"])
    lines.append("\nMean step time: " + ", ".join(f"{a} {res[f'{a}_step_s']:.3f} s" for a in arms) + "; speed-up over sync: "
                 + ", ".join(f"{a} {v:.2f}x" for a, v in res.get("speedups", {"async": res.get("speedup", float("nan"))}).items())
                 + ".")
    if res.get("speedups_after_first"):
        lines.append("Without each run's first step (producer start-up): " + ", ".join(
            f"{a} {res[f'{a}_step_s_after_first']:.3f} s" for a in arms) + "; speed-up over sync: "
            + ", ".join(f"{a} {v:.2f}x" for a, v in res["speedups_after_first"].items()) + ".")
    return "\n".join(lines) + "\n"
