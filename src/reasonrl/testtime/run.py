"""`reasonrl latentseek`: LatentSeek next to its baselines, same problems (the benchmark over models,
`reasonrl bench latentseek`, is :mod:`reasonrl.bench.latentseek`).

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
import shlex
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


def arm_accuracy(correct: list[bool]) -> dict[str, float]:
    from reasonrl.eval.metrics import wilson_interval

    n = len(correct)
    lo, hi = wilson_interval(sum(correct), n)
    return {"accuracy": sum(correct) / n, "ci_low": lo, "ci_high": hi, "correct": sum(correct), "n": n}


def summarize(arms: dict[str, list[bool]], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Accuracy + Wilson interval per arm; paired fixed/broke/sign-test for each (first, second) pair."""
    from reasonrl.eval.metrics import paired_comparison

    out: dict[str, Any] = {"arms": {k: arm_accuracy(v) for k, v in arms.items()}, "paired": {}}
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


def write_summary(out_dir: Path, result: dict[str, Any], command: str, env: dict[str, Any] | None = None) -> None:
    """``summary.json`` (command, environment, results) and ``problems.jsonl`` (one row per arm and problem)."""
    from reasonrl.provenance import environment, write_atomic

    problems = result.pop("problems", {})
    write_atomic(out_dir / "problems.jsonl", "".join(json.dumps({"arm": arm, **row}) + "\n"
                                                      for arm, rows in problems.items() for row in rows))
    write_atomic(out_dir / "summary.json", json.dumps({"command": command, **result, "env": env or environment()},
                                                      indent=1))


def run_cli(model: str | None, tasks: str | None, reward: str | None, n: int | None, out: str | None,
            overrides: list[str]) -> int:
    cfg = parse_config(overrides, model=model, tasks=tasks, reward=reward, n_problems=n, out=out)
    res = evaluate_model(cfg, [cfg.reward])
    write_summary(Path(cfg.out), res, "reasonrl " + shlex.join(sys.argv[1:]))
    print(results_table(res))
    print(f"wrote {cfg.out}/summary.json and problems.jsonl")
    return 0


def results_table(res: dict[str, Any]) -> str:
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
