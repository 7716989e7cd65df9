"""`reasonrl bench algorithms`: every recipe from one start model at equal rollout budget, over seeds.

Why this shape: the seed papers' claims (FlowRL beats GRPO on accuracy and diversity; entropy-shaped
advantages lift large-k pass@k; HPT beats SFT followed by GRPO) are only checkable when every arm
sees the same start, the same prompt stream, the same number of training steps and the same held-out
evaluation, and when the seed-to-seed spread is reported next to the mean. Results (markdown + JSON
+ a PNG of pass@k curves) go to ``bench.out`` with the exact command that produced them.

Arguments are ``section.field=value`` training overrides (applied on top of the packaged
``bench_algorithms.yaml``) plus ``bench.*`` settings, e.g.::

    reasonrl bench algorithms bench.recipes=[grpo,flowrl] bench.seeds=1 trainer.steps=3
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reasonrl.bench.results import BenchRun, env_markdown, mean_t_ci

SFT_THEN_GRPO = "sft_then_grpo"
ISSUE_RECIPES = ["sft", SFT_THEN_GRPO, "ppo", "grpo", "dr_grpo", "dapo", "rloo", "reinforce_pp", "reinforce_pp_baseline",
                 "gspo", "flowrl", "grpo_entropy_adv", "ppo_entropy_adv", "hpt"]


class BenchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipes: list[str] = Field(default_factory=lambda: list(ISSUE_RECIPES), description=(
        f"Arms: registered recipe names, plus '{SFT_THEN_GRPO}' (sft for sft_frac of the steps, then grpo)."))
    seeds: int = Field(3, ge=1, description="Seeds 0..seeds-1 per arm (training RNG, prompt order, held-out set).")
    k: int = Field(64, ge=1, description="Samples per held-out problem for pass@k (reported at 1, 4, 16, 64).")
    maj: int = Field(16, ge=1, description="maj@m from the first m of the k samples.")
    out: str = Field("benchmarks/algorithms", description="Where results.md/.json and passk.png go.")
    work: str = Field("runs/bench_algorithms", description="Scratch directory (intermediate SFT policies).")
    config: str | None = Field(None, description="Base YAML (default: the packaged bench_algorithms.yaml).")
    sft_frac: float = Field(0.5, gt=0, lt=1, description=f"Share of the steps spent on SFT in {SFT_THEN_GRPO}.")
    resume: bool = Field(False, description="Reuse finished (arm, seed) runs found in <out>/results.json.")


def parse_args(overrides: list[str]) -> tuple[BenchSettings, list[str]]:
    from reasonrl.algorithms.recipes import REGISTRY
    from reasonrl.config import ConfigError, parse_bench_overrides

    def listify(raw: dict[str, Any]) -> None:
        if isinstance(raw.get("recipes"), str):
            raw["recipes"] = [r.strip() for r in raw["recipes"].split(",") if r.strip()]

    s, train = parse_bench_overrides(overrides, BenchSettings, listify)
    unknown = [r for r in s.recipes if r not in REGISTRY and r != SFT_THEN_GRPO]
    if unknown:
        raise ConfigError(f"bench.recipes: unknown {unknown}; valid: {', '.join(sorted(REGISTRY))}, {SFT_THEN_GRPO}")
    if any(o.startswith(("algorithm.name=", "run.seed=")) for o in train):
        raise ConfigError("algorithm.name and run.seed are set by the bench; use bench.recipes and bench.seeds")
    return s, train


def _stages(arm: str, steps: int, s: BenchSettings) -> list[tuple[str, int]]:
    if arm != SFT_THEN_GRPO:
        return [(arm, steps)]
    k = max(1, min(steps - 1, round(steps * s.sft_frac))) if steps > 1 else steps
    return [("sft", k), ("grpo", steps - k)] if steps > 1 else [("sft", k)]


def _eval(tr, s: BenchSettings) -> dict[str, float]:
    from dataclasses import replace

    from reasonrl.eval.runner import evaluate, settings_from_config

    st = replace(settings_from_config(tr.cfg), k=s.k, sampled=s.k > 1, maj_ks=(s.maj,))
    return evaluate(tr.engine, tr.scorer, tr.test_tasks, st)


def policy_entropy(tr, batch) -> float:
    """Mean token entropy of the trainer's current policy on a batch of its own samples (all rows,
    so recipes that skip zero-advantage rows in training are measured the same way)."""
    import torch

    from reasonrl.rollout.logprobs import sequence_logprobs

    was = tr.model.training
    tr.model.eval()
    with torch.no_grad():
        _, ent = sequence_logprobs(tr.model, batch, temperature=tr.cfg.rollout.temperature,
                                   micro_batch=tr.cfg.trainer.micro_batch, with_entropy=True)
    tr.model.train(was)
    v = batch.response_valid.float()
    return float((ent * v).sum() / v.sum().clamp_min(1))


def run_arm(arm: str, seed: int, s: BenchSettings, config: str, train: list[str], log=print) -> dict[str, Any]:
    """Train one arm from the start model with one seed; evaluate the result on the held-out set."""
    from reasonrl.config import load_config
    from reasonrl.models.loading import save_policy
    from reasonrl.trainer.loop import Trainer

    base = load_config(config, train)
    model_path: str | None = None
    wall, rollouts, steps_done, cursor, last = 0.0, 0, 0, 0, None
    stages = _stages(arm, base.trainer.steps, s)
    for i, (name, steps) in enumerate(stages):
        over = [*train, f"algorithm.name={name}", f"run.seed={seed}", f"trainer.steps={steps}",
                f"run.out_dir={s.work}", f"run.name={arm}_s{seed}"] + ([f"model.path={model_path}"] if model_path else [])
        cfg = load_config(config, over)
        tr = Trainer(cfg, log=lambda *a: None)
        tr.cursor = cursor  # a later stage continues the prompt stream instead of replaying it
        t0 = time.perf_counter()
        for _ in range(steps):
            last, tasks, m = tr.collect()
            m.update(tr.update(last, tasks))
            tr.step += 1
            rollouts += int(m["batch/gen_rounds"]) * cfg.trainer.prompts_per_step * cfg.rollout.n
        wall += time.perf_counter() - t0
        steps_done, cursor = steps_done + steps, tr.cursor
        if i + 1 < len(stages):
            model_path = str(Path(s.work) / f"{arm}_s{seed}" / f"stage{i}")
            save_policy(tr.model, tr.tok, Path(model_path))
    ent = policy_entropy(tr, last) if last is not None else math.nan
    ev = _eval(tr, s)
    log(f"  {arm} seed {seed}: pass@1 {ev['pass@1']:.3f}  ({wall:.0f}s training, {ev['seconds']:.0f}s eval)")
    return {"arm": arm, "seed": seed, "steps": steps_done, "train_seconds": wall, "rollouts": rollouts,
            "entropy": ent, **ev}


def eval_start(seed: int, s: BenchSettings, config: str, train: list[str]) -> dict[str, Any]:
    from reasonrl.config import load_config
    from reasonrl.trainer.loop import Trainer

    cfg = load_config(config, [*train, "algorithm.name=grpo", f"run.seed={seed}", f"run.out_dir={s.work}"])
    tr = Trainer(cfg, log=lambda *a: None)
    ent = policy_entropy(tr, tr.collect()[0])
    return {"arm": "start", "seed": seed, "steps": 0, "train_seconds": 0.0, "rollouts": 0, "entropy": ent,
            **_eval(tr, s)}


def metric_columns(k: int, maj: int) -> list[tuple[str, str]]:
    cols = [("pass@1", "pass@1 greedy")]
    for kk in (1, 4, 16, 64):
        if kk <= k and k > 1:
            cols.append(("pass@1_sampled" if kk == 1 else f"pass@{kk}", f"pass@{kk}"))
    if k > 1 and maj <= k:
        cols.append((f"maj@{maj}", f"maj@{maj}"))
    if k > 1:
        cols.append(("distinct_correct", "distinct correct / prompt"))
    return cols + [("entropy", "entropy"), ("train_seconds", "train s"), ("rollouts", "rollouts")]


def summarise(runs: list[dict[str, Any]], arms: list[str], cols: list[tuple[str, str]]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm]
        if rs:
            out[arm] = {key: list(mean_t_ci([float(r[key]) for r in rs])) for key, _ in cols if key in rs[0]}
            out[arm]["seeds"] = len(rs)
    return out


def paired(runs, a: str, b: str, key: str) -> tuple[float, float, int] | None:
    """Mean and t-interval of (a − b) paired by seed (same seed = same prompts and held-out set)."""
    by = {(r["arm"], r["seed"]): r for r in runs}
    d = [by[(a, sd)][key] - by[(b, sd)][key] for (arm, sd) in by if arm == a and (b, sd) in by and key in by[(a, sd)]]
    if not d:
        return None
    m, h = mean_t_ci(d)
    return m, h, len(d)


def verdicts(runs, k: int) -> list[str]:
    top = f"pass@{max(x for x in (1, 4, 16, 64) if x <= k)}" if k > 1 else "pass@1"
    checks = [("flowrl", "grpo", "pass@1", "FlowRL vs GRPO, accuracy"),
              ("flowrl", "grpo", "distinct_correct", "FlowRL vs GRPO, diversity"),
              ("grpo_entropy_adv", "grpo", top, f"entropy-shaped GRPO vs GRPO, large-k {top}"),
              ("ppo_entropy_adv", "ppo", top, f"entropy-shaped PPO vs PPO, large-k {top}"),
              ("hpt", SFT_THEN_GRPO, "pass@1", "HPT vs SFT then GRPO, accuracy")]
    lines = []
    for a, b, key, label in checks:
        p = paired(runs, a, b, key)
        if p is None:
            continue
        m, h, n = p
        if h != h:
            word = "single seed: no interval, no verdict"
        elif m - h > 0:
            word = "higher (interval excludes 0)"
        elif m + h < 0:
            word = "lower (interval excludes 0)"
        else:
            word = "no clear difference (interval includes 0)"
        lines.append(f"- {label}: {a} − {b} on {key} = {m:+.3f} ± {h:.3f} over {n} seed(s): **{word}**")
    return lines


def _fmt(v: list[float], key: str) -> str:
    m, h = v
    if key == "rollouts":
        return f"{m:.0f}"
    digits = 1 if key == "train_seconds" else 3
    return f"{m:.{digits}f}" + ("" if h != h else f" ± {h:.{digits}f}")


def write_results(out: Path, run: BenchRun, s: BenchSettings, base_cfg: dict, runs: list[dict], arms: list[str],
                  finished: bool) -> None:
    cols = metric_columns(s.k, s.maj)
    doc = {"finished": finished, "settings": s.model_dump(), "config": base_cfg, "arms": arms,
           "summary": summarise(runs, ["start", *arms], cols), "runs": runs}
    run.write(out, doc, results_md)
    plot_passk(Path(out) / "passk.png", runs, ["start", *arms], s.k)


def results_md(doc: dict[str, Any]) -> str:
    s, c, summary = doc["settings"], doc["config"], doc["summary"]
    cols = metric_columns(s["k"], s["maj"])
    lines = [
        "# Algorithm benchmark", "", "Command:", "", f"    {doc['command']}", "",
        f"Start model `{c['model']['path']}`, train `{c['data']['train']}`, {c['trainer']['steps']} steps x "
        f"{c['trainer']['prompts_per_step']} prompts x {c['rollout']['n']} samples per arm (equal rollout budget; DAPO's "
        f"dynamic sampling generates extra rollouts, counted in the last column), lr {c['optim']['lr']}, "
        f"{s['seeds']} seed(s). Held-out: {c['data']['eval_size']} problems of the test split (seed-dependent), greedy "
        f"pass@1 and unbiased pass@k from k={s['k']} samples at T={c['eval']['temperature']}. Cells: mean ± 95% "
        f"Student-t half-width over seeds. Entropy: mean token entropy of the final policy on its last "
        f"training batch (start: on one batch of its own samples). "
        f"{'' if doc['finished'] else '**Partial results: the benchmark has not finished.**'}", "",
        "| arm | " + " | ".join(label for _, label in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for arm, row in summary.items():
        lines.append(f"| {arm} | " + " | ".join(_fmt(row[key], key) if key in row else "" for key, _ in cols) + " |")
    v = verdicts(doc["runs"], s["k"])
    if v:
        lines += ["", "## The claims, paired by seed", "", *v]
    lines += ["", env_markdown(doc.get("env")), "", "Per-run numbers: `results.json`; curves: `passk.png`.", ""]
    return "\n".join(lines)


def plot_passk(path: Path, runs: list[dict], arms: list[str], k: int) -> Path | None:
    """Mean pass@k against k (log scale) per arm, with the seed interval as error bars."""
    if k < 2:
        return None
    from matplotlib.figure import Figure

    ks = [kk for kk in (2 ** i for i in range(0, 20)) if kk <= k]
    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for i, arm in enumerate(a for a in arms if any(r["arm"] == a for r in runs)):
        rs = [r for r in runs if r["arm"] == arm]
        stats = [mean_t_ci([r["pass@1_sampled" if kk == 1 else f"pass@{kk}"] for r in rs]) for kk in ks]
        err = [0 if h != h else h for _, h in stats]
        ax.errorbar(ks, [m for m, _ in stats], yerr=err, label=arm, color=f"C{i % 10}",
                    linestyle="-" if i < 10 else "--", marker="o", markersize=3, capsize=2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("held-out pass@k")
    ax.set_title("pass@k by algorithm (mean over seeds, 95% t-interval)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="x-small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def bench_algorithms(overrides: list[str], log=print) -> int:
    """`reasonrl bench algorithms`: every recipe on the tiny model, several seeds, paired verdicts."""
    from reasonrl.config import load_config
    from reasonrl.demo import packaged_config

    s, train = parse_args(list(overrides))
    config = s.config or str(packaged_config("bench_algorithms.yaml"))
    for arm in s.recipes:  # validate every arm's config before spending any compute
        for name, _ in _stages(arm, load_config(config, train).trainer.steps, s):
            load_config(config, [*train, f"algorithm.name={name}"])
    base_cfg = load_config(config, train).model_dump(mode="json")
    run = BenchRun("algorithms", overrides)
    out = Path(s.out)
    runs: list[dict[str, Any]] = []
    if s.resume and (out / "results.json").exists():
        prev = json.loads((out / "results.json").read_text())
        if prev.get("config") == base_cfg and prev["settings"]["k"] == s.k:
            runs = prev["runs"]
            log(f"resuming: {len(runs)} finished run(s) reused from {out / 'results.json'}")
    done = {(r["arm"], r["seed"]) for r in runs}
    t0 = time.perf_counter()
    for seed in range(s.seeds):
        for arm in ["start", *s.recipes]:
            if (arm, seed) in done:
                continue
            log(f"bench: {arm} seed {seed} ...")
            runs.append(eval_start(seed, s, config, train) if arm == "start" else run_arm(arm, seed, s, config, train, log))
            write_results(out, run, s, base_cfg, runs, s.recipes, finished=False)
    write_results(out, run, s, base_cfg, runs, s.recipes, finished=True)
    log(f"bench finished in {time.perf_counter() - t0:.0f}s: {out / 'results.md'}")
    return 0
