"""Held-out evaluation: greedy pass@1, sampled pass@k (unbiased estimator) and maj@k.

The same function runs from `reasonrl eval`, inside training every N steps, and in the demo, so the
numbers in every report are computed one way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from reasonrl.eval.metrics import distinct_correct, maj_at_k, mean_pass_at_k, wilson_interval
from reasonrl.rollout.sampling import SamplingParams
from reasonrl.tasks import Task
from reasonrl.tasks.templates import render_prompt


@dataclass
class EvalSettings:
    template: str = "plain"
    max_new_tokens: int = 64
    k: int = 8
    temperature: float = 1.0
    sampled: bool = True
    seed: int = 1234
    stop: tuple[str, ...] = ()
    maj_ks: tuple[int, ...] = ()  # extra maj@m (m <= k) from the first m samples, e.g. maj@16 out of 64
    save_path: str | None = None  # JSONL of every greedy response (prompt, gold, response, extracted, correct)


def heldout_tasks(cfg) -> list[Task]:
    """The run's held-out problems: ``data.eval_size`` of the test split, seeded by ``run.seed``.

    One definition for the trainer, the demo's control arm and the bench, so they always share problems."""
    from reasonrl.tasks import load_tasks

    return load_tasks(cfg.data.test or cfg.data.train, cfg.data.eval_size, split="test", seed=cfg.run.seed + 10_000,
                      difficulty=cfg.data.difficulty)


def settings_from_config(cfg) -> EvalSettings:
    """Evaluation settings of a run config (adjust with ``dataclasses.replace``)."""
    return EvalSettings(template=cfg.model.template,
                        max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens, k=cfg.eval.k,
                        temperature=cfg.eval.temperature, sampled=cfg.eval.sampled, stop=tuple(cfg.rollout.stop),
                        seed=cfg.run.seed + 777,
                        save_path=str(cfg.run_dir / "eval_responses.jsonl") if cfg.eval.save_responses else None)


def evaluate(engine, scorer, tasks: list[Task], settings: EvalSettings, *, return_correct: bool = False):
    """Evaluate ``engine``'s current weights on ``tasks``; keys are ``pass@1``, ``pass@1_ci``, and with
    sampling ``pass@k`` for k in 1, 2, 4, ... up to ``settings.k``, ``maj@k`` and ``distinct_correct``.

    ``return_correct`` also returns the greedy per-problem correctness, for paired comparisons of two
    models on the same problems (``metrics.paired_comparison``)."""
    t0 = time.perf_counter()
    prompts = [render_prompt(t, settings.template, engine.tokenizer) for t in tasks]
    idx = list(range(len(tasks)))
    greedy = engine.generate(prompts, SamplingParams(n=1, greedy=True, max_new_tokens=settings.max_new_tokens,
                                                     stop=list(settings.stop), seed=settings.seed), task_index=idx)
    res = scorer.score(tasks, greedy.response_text)
    n_ok = sum(res.correct)
    lo, hi = wilson_interval(n_ok, len(tasks))
    out: dict[str, float] = {
        "pass@1": n_ok / len(tasks),
        "pass@1_ci_low": lo,
        "pass@1_ci_high": hi,
        "greedy_length": float(greedy.response_lengths.float().mean()),
        "n_problems": float(len(tasks)),
        # no extractable answer (no \\boxed{}, truncated...): tells "cannot format" from "wrong maths"
        "no_answer": sum(e is None for e in res.extracted) / len(tasks),
    }
    if settings.save_path:
        _save_responses(settings.save_path, tasks, prompts, greedy.response_text, res)
    if settings.sampled and settings.k > 1:
        k = settings.k
        samp = engine.generate(prompts, SamplingParams(n=k, temperature=settings.temperature,
                                                       max_new_tokens=settings.max_new_tokens,
                                                       stop=list(settings.stop), seed=settings.seed), task_index=idx)
        rep_tasks = [tasks[i] for i in samp.task_index]
        sres = scorer.score(rep_tasks, samp.response_text)
        correct = [sres.correct[i * k:(i + 1) * k] for i in range(len(tasks))]
        answers = [sres.extracted[i * k:(i + 1) * k] for i in range(len(tasks))]
        texts = [samp.response_text[i * k:(i + 1) * k] for i in range(len(tasks))]
        kk = 1
        while kk <= k:
            out[f"pass@{kk}_sampled" if kk == 1 else f"pass@{kk}"] = mean_pass_at_k(correct, kk)
            kk *= 2
        if k & (k - 1):
            out[f"pass@{k}"] = mean_pass_at_k(correct, k)
        out[f"maj@{k}"] = maj_at_k(answers, correct, k)
        for m in settings.maj_ks:
            if m <= k:
                out[f"maj@{m}"] = maj_at_k(answers, correct, m)
        out["distinct_correct"] = distinct_correct(texts, correct)
        out["no_answer_sampled"] = sum(e is None for e in sres.extracted) / len(sres.extracted)
    out["seconds"] = time.perf_counter() - t0
    return (out, list(res.correct)) if return_correct else out


def _save_responses(path: str, tasks: list[Task], prompts: list[str], responses: list[str], res) -> None:
    import json
    from pathlib import Path

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w") as f:
        for t, pr, r, e, c in zip(tasks, prompts, responses, res.extracted, res.correct):
            f.write(json.dumps({"uid": t.uid, "prompt": pr, "answer": t.answer, "response": r, "extracted": e,
                                "correct": bool(c)}) + "\n")
    tmp.replace(p)
