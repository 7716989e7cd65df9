"""`reasonrl bench latentseek`: LatentSeek (oracle and self reward) next to greedy CoT, majority vote and
oracle best-of-n on each preset model, same problems (docs/testtime.md). Each model's run goes to
``<out>/<model>/summary.json`` + ``problems.jsonl``; ``results.json``/``.md`` cover every model found
there, so models can be run separately and combined (``models=`` only re-renders)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from reasonrl.bench.results import BenchRun, env_markdown
from reasonrl.provenance import write_atomic
from reasonrl.testtime.run import arm_accuracy, evaluate_model, parse_config, results_table, write_summary

# Per-model settings of `reasonrl bench latentseek`, sized for ~25 min on 2 shared CPU cores.
# LatentSeek: the reference example script's rho 0.2 / lr 0.05 (the spec's own CPU check used them too).
# Extra LatentSeek arms per preset: the tiny model's answers are confident, so lr 0.05 barely moves the
# argmax prefix in 10 steps; a 10x larger lr shows whether moving it helps.
BENCH_EXTRA: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "tiny": {"oracle_lr0.5": ("oracle", {"lr": 0.5})},
}
BENCH_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"model": "builtin:tiny", "n_problems": 100, "max_new_tokens": 96, "rho": 0.2, "lr": 0.05,
             "max_iters": 10, "verifier_max_new_tokens": 40, "batch_problems": 100, "micro_batch": 512},
    # SmolLM2-135M runs at ~15 % of one core on the shared machine: 20 problems, K 4, 48 tokens, short
    # verifier replies (its replies are "True."/"False."); arith difficulty 1 (one operation), since the
    # left-to-right multi-operation problems contradict operator precedence for a pretrained model.
    "smollm2": {"model": "builtin:smollm2", "n_problems": 20, "difficulty": 1, "max_new_tokens": 48, "rho": 0.2,
                "lr": 0.05, "max_iters": 4, "verifier_max_new_tokens": 16, "answer_fallback": "last_number",
                "batch_problems": 20, "micro_batch": 100, "baseline_temperature": 0.7},
}


def bench_latentseek(overrides: list[str]) -> int:
    """``reasonrl bench latentseek [models=tiny,smollm2] [out=DIR] [<preset>.<field>=value ...]``."""
    from reasonrl.config import ConfigError

    models, out = list(BENCH_PRESETS), "benchmarks/latentseek"
    per: dict[str, list[str]] = {k: [] for k in BENCH_PRESETS}
    for o in overrides:
        key, _, val = o.partition("=")
        key = key.removeprefix("bench.")
        if key == "models":
            models = [m.strip() for m in str(val).split(",") if m.strip()]
        elif key == "out":
            out = val
        elif key.partition(".")[0] in BENCH_PRESETS:
            name, _, field = key.partition(".")
            per[name].append(f"{field}={val}")
        else:
            raise ConfigError(f"bench latentseek: unknown setting {o!r}; use models=..., out=..., or "
                              f"<{'|'.join(BENCH_PRESETS)}>.<field>=value")
    unknown = [m for m in models if m not in BENCH_PRESETS]
    if unknown:
        raise ConfigError(f"bench latentseek: unknown models {unknown}; valid: {', '.join(BENCH_PRESETS)}")
    out_dir = Path(out)
    for m in models:
        run = BenchRun("latentseek", overrides)  # per model: its own load before/after and wall time
        cfg = parse_config(per[m], base=BENCH_PRESETS[m])
        t0 = time.perf_counter()
        res = evaluate_model(cfg, ["oracle", "self"], log=lambda *a: None, extra=BENCH_EXTRA.get(m))
        res["wall_s"] = time.perf_counter() - t0
        write_summary(out_dir / m, res, run.command, run.env())
        print(f"== {m} ({res['wall_s']:.0f} s)\n{results_table(res)}", flush=True)
    # results.json/.md cover every model whose summary is in out_dir, so models can be run separately
    report = {name: json.loads((out_dir / name / "summary.json").read_text())
              for name in BENCH_PRESETS if (out_dir / name / "summary.json").exists()}
    for name, res in report.items():
        res["matched_budget"] = matched_budget(out_dir / name / "problems.jsonl")
    write_atomic(out_dir / "results.json", json.dumps({"models": report}, indent=1))
    write_atomic(out_dir / "results.md", _bench_md(report))
    print(f"wrote {out_dir}/results.json, results.md")
    return 0


def matched_budget(problems_jsonl: Path) -> dict[str, Any] | None:
    """Oracle best-of-k from the first k baseline samples, k = LatentSeek-oracle's mean generations rounded down:
    both stop on the gold answer, and best-of-k never gets more solver generations than LatentSeek used."""
    from reasonrl.eval.metrics import paired_comparison

    rows = [json.loads(x) for x in problems_jsonl.read_text().splitlines()] if problems_jsonl.exists() else []
    base = [r for r in rows if r["arm"] == "baselines"]
    ls = [r for r in rows if r["arm"] == "oracle"]
    if not base or len(base) != len(ls):
        return None
    k = max(1, min(len(base[0]["correct"]), math.floor(sum(r["generations"] for r in ls) / len(ls))))
    bon = [any(r["correct"][:k]) for r in base]
    return {"k": k, "oracle_best_of_k": arm_accuracy(bon),
            "latentseek_oracle_vs_best_of_k": paired_comparison(bon, [bool(r["final_correct"]) for r in ls], "p")}


def _bench_md(report: dict[str, Any]) -> str:
    lines = ["# LatentSeek vs greedy CoT and sampling baselines (tables generated by the bench)", "",
             "2 CPU cores shared with other helpers' jobs (threads and load averages below).", ""]
    for m, res in report.items():
        c = res["config"]
        lines += [f"## {m}: {c['model']}, {c['tasks']} test split (difficulty {c['difficulty'] or 'default'}), "
                  f"{c['n_problems']} problems", "",
                  f"Command: `{res['command']}`  ",
                  (f"{env_markdown(res['env'])}  " if "env" in res else  # summaries written before the shared writer
                   f"Load before: `{res.get('uptime_before')}`; after: `{res['machine']['uptime']}`  "),
                  f"Template {res['template']}, max_new_tokens {res['max_new_tokens_used']}, rho {c['rho']}, lr {c['lr']}, "
                  f"K {c['max_iters']}, threshold {c['threshold']}, verifier tokens {c['verifier_max_new_tokens']}, "
                  f"answer fallback {c['answer_fallback']}, baselines n {res.get('baselines', {}).get('n')} at "
                  f"T {c['baseline_temperature']}. Wall {res['wall_s']:.0f} s.", "", results_table(res), ""]
        mb = res.get("matched_budget")
        if mb:
            a, p = mb["oracle_best_of_k"], mb["latentseek_oracle_vs_best_of_k"]
            lines += [f"Matched budget: oracle best-of-{mb['k']} (first {mb['k']} baseline samples, k = LatentSeek-oracle's "
                      f"mean generations rounded down, so best-of-k never gets more): {a['accuracy']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]; "
                      f"LatentSeek-oracle vs it: fixed {p['p_fixed']}, broke {p['p_broke']}, sign-test p {p['p_sign_p']:.3g}.", ""]
        for k, st in res["latentseek"].items():
            if "verifier" in st:
                lines.append(f"Self-reward verdicts ({k}): {st['verifier']}")
        lines.append("")
    return "\n".join(lines)
