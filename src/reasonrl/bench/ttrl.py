"""`reasonrl bench ttrl`: does label-free TTRL make the tiny model beat its own initial maj@N?

TTRL's claim (arXiv 2504.16084, spec §4.5): training on unlabeled test prompts with majority-vote
rewards lifts pass@1 above the starting model's maj@N, the accuracy of the very pseudo-labels it trains
on. Per seed: evaluate the start model on the held-out problems (greedy pass@1; from ``eval.k`` = N samples
at the eval temperature: sampled pass@1, pass@N, maj@N), run TTRL on those same problems with their answers
hidden, evaluate again on them. Before and after share the problems and the sampling seed, so every
comparison is paired per problem (exact sign test on discordant problems) and per seed (t-interval over
seeds of the differences). Arguments are ``section.field=value`` training overrides on top of the packaged
``bench_ttrl.yaml`` plus ``bench.*`` settings, e.g. ``reasonrl bench ttrl bench.seeds=1 trainer.steps=8``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reasonrl.bench.results import BenchRun, env_markdown, mean_t_ci


class TTRLBenchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seeds: int = Field(3, ge=1, description="Number of seeds (each: its own held-out problems, prompt order, sampling).")
    first_seed: int = Field(0, ge=0, description="Seeds run are first_seed .. first_seed+seeds-1 (pilots use others).")
    out: str = Field("benchmarks/ttrl", description="Where results.md and results.json go.")
    config: str | None = Field(None, description="Base YAML (default: the packaged bench_ttrl.yaml).")


def parse_args(overrides: list[str]) -> tuple[TTRLBenchSettings, list[str]]:
    from reasonrl.config import ConfigError, parse_bench_overrides

    s, train = parse_bench_overrides(overrides, TTRLBenchSettings)
    if any(o.startswith("run.seed=") for o in train):
        raise ConfigError("run.seed is set by the bench; use bench.seeds")
    return s, train


def eval_per_problem(tr) -> dict[str, list]:
    """Per held-out problem: greedy correctness, and from N samples the correct count and maj@N correctness."""
    from reasonrl.eval.metrics import maj_at_k
    from reasonrl.eval.runner import settings_from_config
    from reasonrl.rollout.sampling import SamplingParams
    from reasonrl.tasks.templates import render_prompt

    st = settings_from_config(tr.cfg)
    tasks, k = tr.test_tasks, st.k
    was = tr.model.training
    tr.model.eval()
    prompts = [render_prompt(t, st.template, tr.tok) for t in tasks]
    idx = list(range(len(tasks)))
    greedy = tr.engine.generate(prompts, SamplingParams(n=1, greedy=True, max_new_tokens=st.max_new_tokens,
                                                        stop=list(st.stop), seed=st.seed), task_index=idx)
    g = tr.scorer.score(tasks, greedy.response_text)
    samp = tr.engine.generate(prompts, SamplingParams(n=k, temperature=st.temperature, max_new_tokens=st.max_new_tokens,
                                                      stop=list(st.stop), seed=st.seed), task_index=idx)
    s = tr.scorer.score([tasks[i] for i in samp.task_index], samp.response_text)
    tr.model.train(was)
    rows = [slice(i * k, (i + 1) * k) for i in range(len(tasks))]
    return {"greedy": [bool(c) for c in g.correct],
            "n_correct": [sum(s.correct[r]) for r in rows],
            "maj": [maj_at_k([s.extracted[r]], [s.correct[r]], k) == 1.0 for r in rows], "k": k}


def summarise_eval(ev: dict[str, list]) -> dict[str, float]:
    from reasonrl.eval.metrics import mean_pass_at_k

    k, n = ev["k"], len(ev["greedy"])
    corr = [[True] * c + [False] * (k - c) for c in ev["n_correct"]]
    return {"pass@1_greedy": sum(ev["greedy"]) / n, "pass@1_sampled": mean_pass_at_k(corr, 1),
            f"pass@{k}": mean_pass_at_k(corr, k), f"maj@{k}": sum(ev["maj"]) / n}


def run_seed(seed: int, config: str, train: list[str], log=print) -> dict[str, Any]:
    from reasonrl.config import load_config
    from reasonrl.eval.metrics import paired_comparison
    from reasonrl.trainer.loop import Trainer

    cfg = load_config(config, [*train, f"run.seed={seed}"])
    tr = Trainer(cfg, log=lambda *a: None)
    t0 = time.perf_counter()
    before = eval_per_problem(tr)
    eval_s = time.perf_counter() - t0
    steps: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for _ in range(cfg.trainer.steps):
        batch, tasks, m = tr.collect()
        m.update(tr.update(batch, tasks))
        tr.step += 1
        steps.append({k: v for k, v in m.items() if k.startswith(("ttrl/", "actor/entropy", "reward/mean"))})
    train_s = time.perf_counter() - t0
    after = eval_per_problem(tr)
    k = before["k"]
    b, a = summarise_eval(before), summarise_eval(after)
    out: dict[str, Any] = {"seed": seed, "train_seconds": train_s, "eval_seconds": eval_s, "problems": len(before["greedy"]),
                           "before": b, "after": a, "train_metrics": steps}
    out.update(paired_comparison(before["greedy"], after["greedy"], "greedy_after_vs_before"))
    out.update(paired_comparison(before["maj"], after["maj"], f"maj@{k}_after_vs_before"))
    out.update(paired_comparison(before["maj"], after["greedy"], f"greedy_after_vs_maj@{k}_before"))
    log(f"  seed {seed}: greedy {b['pass@1_greedy']:.3f}->{a['pass@1_greedy']:.3f}  sampled pass@1 "
        f"{b['pass@1_sampled']:.3f}->{a['pass@1_sampled']:.3f}  maj@{k} {b[f'maj@{k}']:.3f}->{a[f'maj@{k}']:.3f}  "
        f"({train_s:.0f}s training)")
    out["per_problem"] = {"before": before, "after": after}
    return out


def _claims(runs: list[dict[str, Any]], k: int) -> list[tuple[str, str, str]]:
    """(label, first metric, second metric): second - first, paired by seed."""
    return [("sampled pass@1 after vs maj@N before (TTRL's claim)", f"before.maj@{k}", "after.pass@1_sampled"),
            ("greedy pass@1 after vs maj@N before", f"before.maj@{k}", "after.pass@1_greedy"),
            ("sampled pass@1 after vs before", "before.pass@1_sampled", "after.pass@1_sampled"),
            ("greedy pass@1 after vs before", "before.pass@1_greedy", "after.pass@1_greedy"),
            ("maj@N after vs before", f"before.maj@{k}", f"after.maj@{k}"),
            ("pass@N after vs before", f"before.pass@{k}", f"after.pass@{k}")]


def _get(r: dict, dotted: str) -> float:
    side, key = dotted.split(".", 1)
    return float(r[side][key])


def pooled_sign(runs: list[dict[str, Any]], key: str) -> tuple[int, int, float]:
    """Fixed / broke over all (seed, problem) pairs (different seeds hold different problems) and the sign test."""
    from reasonrl.eval.metrics import sign_test_p

    fixed = sum(int(r[f"{key}_fixed"]) for r in runs)
    broke = sum(int(r[f"{key}_broke"]) for r in runs)
    return fixed, broke, sign_test_p(fixed, broke)


def _pass_means(tm: list[dict[str, float]], w: int) -> dict[str, dict[str, float]]:
    """Training metrics averaged over the first and the last ``w`` steps (one pass over the prompts), nan-aware."""
    def mean(rows, key):
        xs = [r[key] for r in rows if key in r and r[key] == r[key]]
        return sum(xs) / len(xs) if xs else float("nan")
    keys = dict.fromkeys(k for r in tm for k in r)
    return {side: {key: mean(rows, key) for key in keys} for side, rows in (("first", tm[:w]), ("last", tm[-w:]))}


def write_results(out: Path, run: BenchRun, base_cfg: dict, runs: list[dict[str, Any]], finished: bool) -> None:
    run.write(out, analyse(base_cfg, runs, finished), results_md)


def analyse(base_cfg: dict, runs: list[dict[str, Any]], finished: bool) -> dict[str, Any]:
    """The results document: per-seed runs, their summary, the paired claims and sign tests."""
    k = base_cfg["eval"]["k"]
    keys = list(runs[0]["before"]) if runs else []
    summary = {side: {key: list(mean_t_ci([r[side][key] for r in runs])) for key in keys} for side in ("before", "after")}
    claims = []
    for label, first, second in _claims(runs, k):
        m, h = mean_t_ci([_get(r, second) - _get(r, first) for r in runs])
        claims.append({"claim": label, "metric": f"{second} - {first}", "mean": m, "half_width": h})
    signs = {key: pooled_sign(runs, key) for key in ("greedy_after_vs_before", f"maj@{k}_after_vs_before",
                                                    f"greedy_after_vs_maj@{k}_before")}
    return {"finished": finished, "config": base_cfg, "summary": summary, "claims": claims,
            "pooled_sign_tests": {k2: {"fixed": f, "broke": b, "p": p} for k2, (f, b, p) in signs.items()},
            "runs": runs}


def results_md(doc: dict[str, Any]) -> str:
    c, runs, summary, claims, finished = doc["config"], doc["runs"], doc["summary"], doc["claims"], doc["finished"]
    k = c["eval"]["k"]
    keys = list(runs[0]["before"]) if runs else []
    signs = {key: (v["fixed"], v["broke"], v["p"]) for key, v in doc["pooled_sign_tests"].items()}
    w = max(1, -(-c["data"]["eval_size"] // c["trainer"]["prompts_per_step"]))
    if c["ttrl"]["prompts"] != "heldout":
        w = max(1, min(16, len(runs[0]["train_metrics"]) // 4)) if runs else 1
    first_last = {r["seed"]: _pass_means(r["train_metrics"], w) for r in runs if r["train_metrics"]}

    def fmt(v):
        m, h = v
        return f"{m:.3f}" + ("" if h != h else f" ± {h:.3f}")

    lines = [
        "# TTRL benchmark: label-free RL on unlabeled test prompts", "", "Command:", "", f"    {doc['command']}", "",
        f"Start model `{c['model']['path']}`; prompts: {c['data']['eval_size']} held-out `{c['data']['train']}` problems "
        f"per seed (test split, seed-dependent), answers hidden from training; TTRL with {c['ttrl']['n_votes']} votes "
        f"per prompt, {c['rollout']['n']} kept for the update, `{c['algorithm']['name']}`, {c['trainer']['steps']} steps x "
        f"{c['trainer']['prompts_per_step']} prompts, lr {c['optim']['lr']} (warm-up {c['optim']['warmup_steps']}), "
        f"rollout T={c['rollout']['temperature']}. Train-on-test (TTRL's setting): evaluation is on the **same** "
        f"problems the policy trained on without labels. Eval: greedy pass@1, and from N={k} samples at "
        f"T={c['eval']['temperature']}: sampled pass@1, pass@{k}, maj@{k}. Cells: mean ± 95% Student-t half-width "
        f"over {len(runs)} seed(s). {'' if finished else '**Partial results: the benchmark has not finished.**'}", "",
        "| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys),
    ]
    for side in ("before", "after"):
        if runs:
            lines.append(f"| {side} | " + " | ".join(fmt(summary[side][key]) for key in keys) + " |")
    lines += ["", "## Paired comparisons", "", "Per seed (difference after − before on the same problems, "
              "t-interval over seeds):", ""]
    for cl in claims:
        m, h = cl["mean"], cl["half_width"]
        word = ("single seed: no interval" if h != h else "higher (interval excludes 0)" if m - h > 0 else
                "lower (interval excludes 0)" if m + h < 0 else "no clear difference (interval includes 0)")
        lines.append(f"- {cl['claim']}: {cl['metric']} = {m:+.3f}" + ("" if h != h else f" ± {h:.3f}") + f": **{word}**")
    lines += ["", "Per problem, pooled over seeds (fixed = solved only after, broke = solved only before; exact "
              "two-sided sign test):", ""]
    for key, (f, b, p) in signs.items():
        lines.append(f"- {key}: fixed {f}, broke {b}, p = {p:.3g}")
    if first_last:
        lines += ["", f"## TTRL training metrics (mean of the first {w} steps -> mean of the last {w}, per seed)", "",
                  "| seed | label_accuracy | reward_accuracy | majority_ratio | ground_truth_ratio | entropy |", "|---|---|---|---|---|---|"]
        for sd, fl in first_last.items():
            cells = [f"{fl['first'].get(x, float('nan')):.3f} -> {fl['last'].get(x, float('nan')):.3f}"
                     for x in ("ttrl/label_accuracy", "ttrl/reward_accuracy", "ttrl/majority_ratio",
                               "ttrl/ground_truth_ratio", "actor/entropy")]
            lines.append(f"| {sd} | " + " | ".join(cells) + " |")
        lines += ["", f"({w} steps = one pass over the training prompts; per-step series in `results.json`.)"]
    lines += ["", env_markdown(doc.get("env")), "", "Per-seed and per-problem numbers: `results.json`.", ""]
    return "\n".join(lines)


def rerender(out: Path) -> None:
    """Rewrite ``results.md`` from ``results.json`` (same numbers; e.g. after a change to the report layout)."""
    from reasonrl.provenance import write_atomic

    doc = json.loads((Path(out) / "results.json").read_text())
    write_atomic(Path(out) / "results.md", results_md(doc))


def bench_ttrl(overrides: list[str], log=print) -> int:
    """`reasonrl bench ttrl`: before/after TTRL on the same unlabeled held-out problems, over seeds."""
    from reasonrl.config import load_config
    from reasonrl.demo import packaged_config

    s, train = parse_args(list(overrides))
    config = s.config or str(packaged_config("bench_ttrl.yaml"))
    base = load_config(config, train)
    if not base.ttrl.enabled:
        from reasonrl.config import ConfigError

        raise ConfigError("ttrl.enabled=false: this benchmark measures label-free TTRL; remove the override")
    base_cfg = base.model_dump(mode="json")
    run = BenchRun("ttrl", overrides)
    out = Path(s.out)
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for seed in range(s.first_seed, s.first_seed + s.seeds):
        log(f"bench ttrl: seed {seed} ...")
        runs.append(run_seed(seed, config, train, log))
        write_results(out, run, base_cfg, runs, finished=False)
    write_results(out, run, base_cfg, runs, finished=True)
    log(f"bench finished in {time.perf_counter() - t0:.0f}s: {out / 'results.md'}")
    return 0
