"""`reasonrl latentseek` and `reasonrl bench latentseek`: LatentSeek next to its baselines, same problems.

Arms, all graded by the same verifier on the same problems:
- greedy CoT (LatentSeek's own starting answer),
- majority vote over ``n`` samples and oracle best-of-n (any of ``n`` correct), ``n`` = LatentSeek's
  maximum budget (1 + max_iters generations) unless set,
- LatentSeek with the chosen reward (self or oracle).
Accuracies carry Wilson intervals; arms are compared pairwise on the same problems (fixed/broken
problems and an exact sign test), since intervals of paired arms overlap even when one is better.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reasonrl.testtime.latentseek import LatentSeekConfig, OracleReward, ProblemResult, SelfReward, context_limit, latentseek


def parse_config(overrides: list[str], base: dict[str, Any] | None = None, **flags: Any) -> LatentSeekConfig:
    """``LatentSeekConfig``: ``base`` values, then ``field=value`` (or ``latentseek.field=value``) strings,
    then the non-None ``flags`` (explicit CLI options win)."""
    from reasonrl.config import ConfigError, _parse_value

    raw: dict[str, Any] = dict(base or {})
    for o in overrides:
        key, sep, val = o.partition("=")
        if not sep:
            raise ConfigError(f"override {o!r} is not of the form field=value (e.g. latentseek.lr=0.05)")
        raw[key.removeprefix("latentseek.")] = _parse_value(val)
    raw.update({k: v for k, v in flags.items() if v is not None})
    try:
        return LatentSeekConfig.model_validate(raw)
    except ValidationError as e:
        bad = "; ".join(f"latentseek.{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(f"invalid latentseek settings: {bad} (every field is documented in reasonrl.testtime.latentseek.LatentSeekConfig and docs/testtime.md)") from None


def _arm(correct: list[bool]) -> dict[str, float]:
    from reasonrl.eval.metrics import wilson_interval

    n = len(correct)
    lo, hi = wilson_interval(sum(correct), n)
    return {"accuracy": sum(correct) / n, "ci_low": lo, "ci_high": hi, "correct": sum(correct), "n": n}


def summarize(arms: dict[str, list[bool]], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Accuracy + Wilson interval per arm; paired fixed/broke/sign-test for each (first, second) pair."""
    from reasonrl.eval.metrics import paired_comparison

    out: dict[str, Any] = {"arms": {k: _arm(v) for k, v in arms.items()}, "paired": {}}
    for a, b in pairs:
        if a in arms and b in arms:
            out["paired"][f"{b} vs {a}"] = paired_comparison(arms[a], arms[b], "p")
    return out


def _ls_stats(res: list[ProblemResult], seconds: float) -> dict[str, float]:
    n = len(res)
    return {"mean_iterations": sum(r.iterations for r in res) / n, "mean_generations": sum(r.generations for r in res) / n,
            "answers_changed": sum(r.changed for r in res), "reached_threshold": sum(r.stopped for r in res),
            "searched": sum(r.iterations > 0 for r in res), "seconds_per_problem": seconds / n}


class Session:
    """A loaded model, its problems and prompts: shared by every arm of a run or a bench model."""

    def __init__(self, cfg: LatentSeekConfig, log=print):
        from reasonrl.models.loading import load_policy
        from reasonrl.rewards import Scorer
        from reasonrl.rollout.hf_engine import HFEngine
        from reasonrl.tasks import load_tasks
        from reasonrl.tasks.templates import render_prompt
        from reasonrl.threads import apply_thread_policy
        from reasonrl.trainer.loop import resolve_model

        apply_thread_policy(cfg.threads or None)
        self.cfg, self.log = cfg, log
        model, tok = load_policy(resolve_model(cfg.model, log), dtype=cfg.dtype)
        self.template = cfg.template if cfg.template != "auto" else ("chat" if getattr(tok, "chat_template", None)
                                                                    else "plain")
        self.tasks = load_tasks(cfg.tasks, cfg.n_problems, split=cfg.split, seed=cfg.seed + 10_000,
                                difficulty=cfg.difficulty)
        self.prompts = [render_prompt(t, self.template, tok) for t in self.tasks]
        self.engine = HFEngine(model, tok, micro_batch=cfg.micro_batch)
        self.scorer = Scorer()
        self.max_new = cfg.max_new_tokens
        limit = context_limit(model)
        if limit is not None:
            longest = max(len(tok(p, add_special_tokens=self.engine.add_special_tokens)["input_ids"]) for p in self.prompts)
            if longest >= limit:
                from reasonrl.config import ConfigError

                raise ConfigError(f"a prompt has {longest} tokens but the model's context is {limit}; use shorter tasks")
            if longest + self.max_new > limit:
                self.max_new = limit - longest
                log(f"max_new_tokens clipped to {self.max_new} to fit the model's {limit}-token context")

    def reward(self, kind: str):
        c = self.cfg
        if kind == "oracle":
            return OracleReward(self.scorer, self.tasks, c.answer_fallback)
        return SelfReward(self.engine, self.tasks, self.template, weights=c.verifier_weights,
                          max_new_tokens=c.verifier_max_new_tokens, format_rule=c.format_rule)

    def run_latentseek(self, kind: str, **over) -> tuple[list[ProblemResult], float, Any]:
        """One LatentSeek arm, graded against the gold answers; returns (results, seconds, reward fn)."""
        from reasonrl.testtime.grading import grade

        c = self.cfg.model_copy(update=over)
        fn = self.reward(kind)
        t0 = time.perf_counter()
        res = latentseek(self.engine, self.prompts, fn, rho=c.rho, lr=c.lr, max_iters=c.max_iters,
                         threshold=c.threshold, max_latents=c.max_latents, grad_clip=c.grad_clip,
                         max_new_tokens=self.max_new, batch_problems=c.batch_problems,
                         uids=[t.uid for t in self.tasks], progress=c.progress, label=f"latentseek/{kind}")
        secs = time.perf_counter() - t0
        ok, ans = grade(self.scorer, self.tasks * 2, [r.initial_text for r in res] + [r.final_text for r in res],
                        c.answer_fallback)
        n = len(res)
        for i, r in enumerate(res):
            r.initial_correct, r.initial_answer = ok[i], ans[i]
            r.final_correct, r.final_answer = ok[n + i], ans[n + i]
        return res, secs, fn

    def run_baselines(self, n: int):
        from reasonrl.testtime.baselines import sample_baselines

        t0 = time.perf_counter()
        b = sample_baselines(self.engine, self.scorer, self.tasks, self.prompts, n=n,
                             temperature=self.cfg.baseline_temperature, max_new_tokens=self.max_new,
                             seed=self.cfg.seed, fallback=self.cfg.answer_fallback)
        return b, time.perf_counter() - t0


def _machine() -> dict[str, str]:
    try:
        up = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        up = "unavailable"
    return {"python": platform.python_version(), "platform": platform.platform(), "uptime": up}


def evaluate_model(cfg: LatentSeekConfig, rewards: list[str], log=print,
                   extra: dict[str, tuple[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Greedy, baselines and LatentSeek with each reward in ``rewards`` on one model's problems.

    ``extra`` adds LatentSeek arms ``name -> (reward, setting overrides)`` (e.g. a larger lr)."""
    s = Session(cfg, log)
    arms: dict[str, list[bool]] = {}
    out: dict[str, Any] = {"config": cfg.model_dump(mode="json"), "template": s.template,
                           "max_new_tokens_used": s.max_new, "latentseek": {}, "problems": {}}
    greedy_texts = None
    runs = [(k, k, {}) for k in rewards] + [(name, k, over) for name, (k, over) in (extra or {}).items()]
    for kind, reward, over in runs:
        res, secs, fn = s.run_latentseek(reward, **over)
        if greedy_texts is None:
            greedy_texts = [r.initial_text for r in res]
            arms["greedy_cot"] = [bool(r.initial_correct) for r in res]
        elif greedy_texts != [r.initial_text for r in res]:
            log("warning: the greedy CoT pass differed between LatentSeek arms (numerical nondeterminism)")
        arms[f"latentseek_{kind}"] = [bool(r.final_correct) for r in res]
        st = {**_ls_stats(res, secs), "reward": reward, "overrides": over}
        if isinstance(fn, SelfReward):
            st["verifier"] = dict(fn.stats)
            st["verifier_samples"] = fn.samples
        out["latentseek"][kind] = st
        out["problems"][kind] = [r.to_json() for r in res]
        for r in res:
            log(f"  [{kind}] {r.uid}: iterations {r.iterations}, reward {r.rewards[0]:.3f} -> {r.rewards[-1]:.3f}, "
                f"answer {'changed' if r.changed else 'same'} ({r.initial_answer} -> {r.final_answer}), "
                f"{'correct' if r.final_correct else 'wrong'}")
    if cfg.baselines:
        n = cfg.n_baseline
        b, secs = s.run_baselines(n)
        arms[f"majority@{n}"] = [x.majority_correct for x in b]
        arms[f"oracle_best_of_{n}"] = [x.best_of_n_correct for x in b]
        firsts = [x.first_correct or n for x in b]
        out["baselines"] = {"n": n, "temperature": cfg.baseline_temperature, "seconds_per_problem": secs / len(b),
                            "oracle_mean_generations_to_first_correct": sum(firsts) / len(firsts)}
        out["problems"]["baselines"] = [{"answers": x.answers, "correct": x.correct} for x in b]
    pairs = [("greedy_cot", k) for k in arms if k != "greedy_cot"]
    pairs += [("latentseek_oracle", f"latentseek_{k}") for k in (extra or {})]
    if cfg.baselines:
        pairs += [(f"majority@{cfg.n_baseline}", "latentseek_self"),
                  (f"oracle_best_of_{cfg.n_baseline}", "latentseek_oracle")]
    out.update(summarize(arms, pairs))
    return out


def _write(out_dir: Path, result: dict[str, Any], command: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    problems = result.pop("problems", {})
    with (out_dir / "problems.jsonl").open("w") as f:
        for arm, rows in problems.items():
            for row in rows:
                f.write(json.dumps({"arm": arm, **row}) + "\n")
    (out_dir / "summary.json").write_text(json.dumps({"command": command, "machine": _machine(), **result}, indent=1))


def run_cli(model: str | None, tasks: str | None, reward: str | None, n: int | None, out: str | None,
            overrides: list[str]) -> int:
    cfg = parse_config(overrides, model=model, tasks=tasks, reward=reward, n_problems=n, out=out)
    res = evaluate_model(cfg, [cfg.reward])
    _write(Path(cfg.out), res, "reasonrl " + shlex.join(sys.argv[1:]))
    print(_table(res))
    print(f"wrote {cfg.out}/summary.json and problems.jsonl")
    return 0


def _table(res: dict[str, Any]) -> str:
    lines = ["| arm | accuracy | 95% Wilson | correct/n |", "|---|---|---|---|"]
    for k, a in res["arms"].items():
        lines.append(f"| {k} | {a['accuracy']:.3f} | [{a['ci_low']:.3f}, {a['ci_high']:.3f}] | {a['correct']}/{a['n']} |")
    lines += ["", "| LatentSeek arm | mean iterations | searched | reached threshold | answer changed | s/problem |",
              "|---|---|---|---|---|---|"]
    for k, st in res["latentseek"].items():
        lines.append(f"| {k} | {st['mean_iterations']:.2f} | {st['searched']} | {st['reached_threshold']} | "
                     f"{st['answers_changed']} | {st['seconds_per_problem']:.2f} |")
    if "baselines" in res:
        lines.append(f"| (baselines: {res['baselines']['n']} samples) | | | | | {res['baselines']['seconds_per_problem']:.2f} |")
    lines += ["", "| paired (same problems) | fixed | broke | sign-test p |", "|---|---|---|---|"]
    for k, p in res["paired"].items():
        lines.append(f"| {k} | {p['p_fixed']} | {p['p_broke']} | {p['p_sign_p']:.3g} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ bench
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
    command = "reasonrl bench latentseek " + shlex.join(overrides)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for m in models:
        cfg = parse_config(per[m], base=BENCH_PRESETS[m])
        before = _machine()["uptime"]
        t0 = time.perf_counter()
        res = evaluate_model(cfg, ["oracle", "self"], log=lambda *a: None, extra=BENCH_EXTRA.get(m))
        res["wall_s"] = time.perf_counter() - t0
        res["uptime_before"] = before
        _write(out_dir / m, res, command)
        print(f"== {m} ({res['wall_s']:.0f} s)\n{_table(res)}", flush=True)
    # results.json/.md cover every model whose summary is in out_dir, so models can be run separately
    report = {name: json.loads((out_dir / name / "summary.json").read_text())
              for name in BENCH_PRESETS if (out_dir / name / "summary.json").exists()}
    for name, res in report.items():
        res["matched_budget"] = matched_budget(out_dir / name / "problems.jsonl")
    (out_dir / "results.json").write_text(json.dumps({"models": report}, indent=1))
    (out_dir / "results.md").write_text(_bench_md(report))
    print(f"wrote {out_dir}/results.json, results.md")
    return 0


def matched_budget(problems_jsonl: Path) -> dict[str, Any] | None:
    """Oracle best-of-k from the first k baseline samples, k = LatentSeek-oracle's mean generations rounded down:
    both stop on the gold answer, and best-of-k never gets more solver generations than LatentSeek used."""
    import math

    from reasonrl.eval.metrics import paired_comparison

    rows = [json.loads(x) for x in problems_jsonl.read_text().splitlines()] if problems_jsonl.exists() else []
    base = [r for r in rows if r["arm"] == "baselines"]
    ls = [r for r in rows if r["arm"] == "oracle"]
    if not base or len(base) != len(ls):
        return None
    k = max(1, min(len(base[0]["correct"]), math.floor(sum(r["generations"] for r in ls) / len(ls))))
    bon = [any(r["correct"][:k]) for r in base]
    return {"k": k, "oracle_best_of_k": _arm(bon),
            "latentseek_oracle_vs_best_of_k": paired_comparison(bon, [bool(r["final_correct"]) for r in ls], "p")}


def _bench_md(report: dict[str, Any]) -> str:
    lines = ["# LatentSeek vs greedy CoT and sampling baselines (tables generated by the bench)", "",
             "Threads: `OMP_WAIT_POLICY=PASSIVE REASONRL_THREADS=1`; 2 CPU cores shared with other helpers' jobs "
             "(load averages below).", ""]
    for m, res in report.items():
        c = res["config"]
        lines += [f"## {m}: {c['model']}, {c['tasks']} test split (difficulty {c['difficulty'] or 'default'}), "
                  f"{c['n_problems']} problems", "",
                  f"Command: `{res['command']}`  ",
                  f"Load before: `{res.get('uptime_before')}`; after: `{res['machine']['uptime']}`  ",
                  f"Template {res['template']}, max_new_tokens {res['max_new_tokens_used']}, rho {c['rho']}, lr {c['lr']}, "
                  f"K {c['max_iters']}, threshold {c['threshold']}, verifier tokens {c['verifier_max_new_tokens']}, "
                  f"answer fallback {c['answer_fallback']}, baselines n {res.get('baselines', {}).get('n')} at "
                  f"T {c['baseline_temperature']}. Wall {res['wall_s']:.0f} s.", "", _table(res), ""]
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
