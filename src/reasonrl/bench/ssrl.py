"""`reasonrl bench ssrl`: EM of the untrained knowledge model vs the SSRL-trained policy with self-search
vs the same policy with the real search engine (sim-to-real), per seed (docs/ssrl.md)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from reasonrl.bench.results import BenchRun, env_markdown

SUBSETS = ("seen", "corpus_only")


def evaluate_em(model, tokenizer, tasks: list, search=None, max_turns: int = 3, max_new_tokens: int = 128,
                micro_batch: int = 128) -> dict:
    """Greedy exact match of ``model`` on ``tasks`` with self-search (``search=None``: single pass, the
    policy writes its own information) or with a real search tool (the multi-turn loop). Reports EM
    overall and on the ``seen`` (facts in the SFT data) and ``corpus_only`` subsets, the format score,
    searches per answer, and per-task EM (for paired comparisons)."""
    from reasonrl.rewards.ssrl import SSRLScorer
    from reasonrl.rollout.hf_engine import HFEngine
    from reasonrl.rollout.multiturn import MultiTurnEngine
    from reasonrl.rollout.sampling import SamplingParams
    from reasonrl.tasks.templates import render_prompt

    engine = HFEngine(model, tokenizer, micro_batch=micro_batch)
    if search is not None:
        engine = MultiTurnEngine(engine, [search], max_turns=max_turns)
    ro = engine.generate([render_prompt(t, "plain") for t in tasks],
                         SamplingParams(n=1, greedy=True, max_new_tokens=max_new_tokens))
    res = SSRLScorer().score(tasks, ro.response_text)
    em = res.components["em"]

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    out = {"em": mean(em), "n": len(em), "format": mean(res.components["format"]),
           "searches_per_answer": mean([len(re.findall(r"<search>", r)) for r in ro.response_text]),
           "per_task_em": em}
    for name in SUBSETS:
        sel = [e for e, t in zip(em, tasks) if t.meta["needs_corpus"] == (name == "corpus_only")]
        out[f"em_{name}"], out[f"n_{name}"] = mean(sel), len(sel)
    out["examples"] = [{"prompt": t.prompt, "answer": t.answer, "response": r}
                       for t, r in list(zip(tasks, ro.response_text))[:3]]
    return out


def bench_ssrl(overrides: list[str], log=print) -> int:
    """`reasonrl bench ssrl`: EM of the untrained knowledge model vs the SSRL-trained policy with
    self-search vs the same policy with the real search engine (sim-to-real), per seed."""
    from pydantic import BaseModel, ConfigDict, Field

    from reasonrl.config import load_config, parse_bench_overrides
    from reasonrl.demo import packaged_config
    from reasonrl.models.loading import load_policy
    from reasonrl.rollout.search import SearchIndex, SearchTool, load_corpus
    from reasonrl.tasks.knowledge import all_questions
    from reasonrl.tasks import generate
    from reasonrl.threads import apply_thread_policy
    from reasonrl.trainer.loop import Trainer, resolve_model

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        seeds: int = Field(2, ge=1, description="Training seeds 0..seeds-1 (2: ~20 min on a shared 2-core CPU).")
        top_k: list[int] = Field(default_factory=lambda: [1, 3], description="Documents per real search call.")
        eval_size: int = Field(0, ge=0, description="Held-out questions (0 = every test question).")
        out: str = Field("benchmarks/ssrl", description="Where results.md/.json go.")
        work: str = Field("runs/bench_ssrl", description="Scratch directory for the training runs.")

    s, train = parse_bench_overrides(overrides, Settings)
    config = str(packaged_config("bench_ssrl.yaml"))
    load_config(config, train)  # fail before any compute
    run = BenchRun("ssrl", overrides)
    apply_thread_policy(None)
    model_dir = resolve_model(load_config(config, train).model.path, log)
    n_test = sum(q["split"] == "test" for q in all_questions())
    tasks = generate("knowledge", s.eval_size or n_test, split="test")
    index = SearchIndex()
    index.add(load_corpus("builtin:knowledge"))
    max_new = load_config(config, train).rollout.max_new_tokens

    def arms(model, tok) -> dict:
        r = {"self_search": evaluate_em(model, tok, tasks, None, max_new_tokens=max_new)}
        for k in s.top_k:
            r[f"real_search_k{k}"] = evaluate_em(model, tok, tasks, SearchTool(index, k), max_new_tokens=max_new)
        return r

    out = Path(s.out)

    def write(finished: bool) -> None:
        """Results so far (after every seed, so a long run that is stopped still leaves its numbers)."""
        run.write(out, {"settings": s.model_dump(), "finished": finished, "model_dir": str(model_dir),
                        "config": load_config(config, train).model_dump(mode="json"), "results": results}, results_md)

    log(f"bench ssrl: evaluating the untrained knowledge model on {len(tasks)} test questions")
    model, tok = load_policy(model_dir)
    t0 = time.perf_counter()
    results = {"untrained": arms(model, tok), "trained": []}
    results["eval_seconds_untrained"] = time.perf_counter() - t0
    write(finished=False)
    for seed in range(s.seeds):
        cfg = load_config(config, [*train, f"run.seed={seed}", f"run.out_dir={s.work}", f"run.name=seed{seed}",
                                   "trainer.overwrite=true"])  # scratch runs: a rerun replaces them
        log(f"bench ssrl: SSRL training, seed {seed} ({cfg.trainer.steps} steps)")
        t0 = time.perf_counter()
        summary = Trainer(cfg, log=log).run()
        train_s = time.perf_counter() - t0
        model, tok = load_policy(cfg.run_dir / "final")
        rows = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
        curve = [{k: r.get(k) for k in ("step", "reward/mean", "reward/em_mean", "reward/format_mean",
                                         "rollout/info_masked_frac")} for r in rows if "reward/mean" in r]
        results["trained"].append({"seed": seed, "train_seconds": train_s, "steps": summary["steps"],
                                   "curve": curve, **arms(model, tok)})
        write(finished=seed == s.seeds - 1)
    log(f"bench ssrl finished in {run.env()['wall_s']:.0f}s: {out / 'results.md'}")
    return 0


def results_md(doc: dict) -> str:
    from reasonrl.eval.metrics import paired_comparison

    results = doc["results"]
    arms = ["self_search", *[f"real_search_k{k}" for k in doc["settings"]["top_k"]]]
    lines = ["# SSRL benchmark: self-search vs real search (sim-to-real) vs the untrained model", "",
             f"Command: `{doc['command']}`", "",
             *([] if doc.get("finished") else ["**Partial results: the run had not finished all seeds when this was written.**", ""]),
             env_markdown(doc.get("env")), "",
             "Greedy exact match (last `<answer>`, normalised) on the knowledge family's test questions; "
             "`seen` = every needed fact is in the SFT data (held-out questions, recall), `corpus_only` = at least "
             "one needed fact exists only in the search corpus.", "",
             "| policy | inference | EM | EM seen | EM corpus-only | format | searches/answer |",
             "|---|---|---|---|---|---|---|"]

    def row(name, arm, r):
        return (f"| {name} | {arm} | {r['em']:.3f} | {r['em_seen']:.3f} (n={r['n_seen']}) | "
                f"{r['em_corpus_only']:.3f} (n={r['n_corpus_only']}) | {r['format']:.3f} | {r['searches_per_answer']:.2f} |")

    for arm in arms:
        lines.append(row("untrained", arm, results["untrained"][arm]))
    for t in results["trained"]:
        for arm in arms:
            lines.append(row(f"SSRL seed {t['seed']} ({t['steps']} steps, {t['train_seconds']:.0f} s)", arm, t[arm]))
    lines += ["", "Paired sign tests on the same questions (per-question EM):", ""]
    for t in results["trained"]:
        pairs = [("trained self_search vs untrained self_search", t["self_search"], results["untrained"]["self_search"])]
        for arm in arms[1:]:
            pairs.append((f"trained {arm} vs trained self_search", t[arm], t["self_search"]))
        for name, a, b in pairs:
            pc = paired_comparison([bool(x) for x in b["per_task_em"]], [bool(x) for x in a["per_task_em"]], "x")
            lines.append(f"- seed {t['seed']}: {name}: {_fmt_pc(pc)}")
    lines += ["", "Training curve (reward / EM / format per step), seed 0:", ""]
    if results["trained"]:
        c = results["trained"][0]["curve"]
        lines.append(" ".join(f"{r['step']}:{r['reward/mean']:.2f}/{r['reward/em_mean']:.2f}/{r['reward/format_mean']:.2f}"
                              for r in c))
    return "\n".join(lines) + "\n"


def _fmt_pc(pc: dict) -> str:
    return ", ".join(f"{k.replace('x_', '')}={v:.4g}" if isinstance(v, float) else f"{k.replace('x_', '')}={v}"
                     for k, v in pc.items())
