"""Fixed probe sets evaluated during training: the measurement that can show a gain of a few points.

The per-step batch reward cannot: it moves with which prompts the step happened to draw (sd about 0.1
on the tiny model). A probe is two *fixed* problem sets, evaluated with the same seeds every time:

- ``heldout``: a prefix of the run's held-out test problems;
- ``train``: training-split problems from a stream the trainer does not draw from (unseen prompts of
  the training distribution: do gains on trained prompts transfer to new ones?).

Each problem gets one greedy response and ``samples`` responses at the rollout temperature, so a probe
reports greedy accuracy, per-sample accuracy (the quantity RL optimises), pass@samples and the rate of
responses with no extractable answer. Per-problem results go to ``probe.jsonl`` in the run directory, so
any two probe points (or two arms on the same seed) can be compared paired, problem by problem
(``metrics.paired_comparison``, ``metrics.paired_bootstrap``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from reasonrl.eval.metrics import mean_pass_at_k
from reasonrl.rollout.sampling import SamplingParams
from reasonrl.tasks import Task
from reasonrl.tasks.templates import render_prompt

TRAIN_PROBE_SEED_OFFSET = 20_000  # the trainer's stream is run.seed + 1; this one never coincides with it


@dataclass
class ProbeSettings:
    template: str = "plain"
    samples: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 64
    seed: int = 4321
    stop: tuple[str, ...] = ()


def probe_tasks(cfg) -> dict[str, list[Task]]:
    """The run's two probe sets (see the module docstring); empty sets are left out."""
    from reasonrl.eval.runner import heldout_tasks
    from reasonrl.tasks import load_tasks

    sets: dict[str, list[Task]] = {}
    if cfg.eval.probe_heldout:
        sets["heldout"] = heldout_tasks(cfg)[: cfg.eval.probe_heldout]
    if cfg.eval.probe_train:
        sets["train"] = load_tasks(cfg.data.train, cfg.eval.probe_train, split="train",
                                   seed=cfg.run.seed + TRAIN_PROBE_SEED_OFFSET, difficulty=cfg.data.difficulty)
    return sets


def probe_settings(cfg) -> ProbeSettings:
    return ProbeSettings(template=cfg.model.template, samples=cfg.eval.probe_samples,
                         temperature=cfg.rollout.temperature,
                         max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
                         seed=cfg.run.seed + 4321, stop=tuple(cfg.rollout.stop))


def run_probe(engine, scorer, tasks: list[Task], st: ProbeSettings) -> tuple[dict[str, float], dict[str, list]]:
    """Greedy and ``st.samples`` sampled responses per problem. Returns (aggregate metrics, per-problem
    results: ``greedy`` correct flags and ``sampled`` counts of correct samples)."""
    prompts = [render_prompt(t, st.template, engine.tokenizer) for t in tasks]
    idx = list(range(len(tasks)))
    g = engine.generate(prompts, SamplingParams(n=1, greedy=True, max_new_tokens=st.max_new_tokens,
                                                stop=list(st.stop), seed=st.seed), task_index=idx)
    gres = scorer.score(tasks, g.response_text)
    n = len(tasks)
    out = {"greedy": sum(gres.correct) / n, "no_answer_greedy": sum(e is None for e in gres.extracted) / n}
    per = {"greedy": [bool(c) for c in gres.correct], "sampled": []}
    if st.samples:
        m = st.samples
        s = engine.generate(prompts, SamplingParams(n=m, temperature=st.temperature, max_new_tokens=st.max_new_tokens,
                                                    stop=list(st.stop), seed=st.seed), task_index=idx)
        sres = scorer.score([tasks[i] for i in s.task_index], s.response_text)
        rows = [sres.correct[i * m:(i + 1) * m] for i in range(n)]
        per["sampled"] = [sum(bool(c) for c in r) for r in rows]
        out["sampled"] = sum(per["sampled"]) / (n * m)
        out[f"pass@{m}"] = mean_pass_at_k(rows, m)
        out["no_answer_sampled"] = sum(e is None for e in sres.extracted) / (n * m)
    return out, per


class Probe:
    """Evaluates the fixed probe sets every ``eval.probe_every`` steps; appends per-problem results to
    ``<run_dir>/probe.jsonl`` and returns ``probe/<set>/<metric>`` for the step's metrics row."""

    def __init__(self, cfg, scorer):
        self.every = cfg.eval.probe_every
        self.sets = probe_tasks(cfg)
        self.settings = probe_settings(cfg)
        self.scorer = scorer
        self.path = Path(cfg.run_dir) / "probe.jsonl"

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def __call__(self, engine, model, step: int) -> dict[str, float]:
        was = model.training
        rng = torch.get_rng_state()
        metrics: dict[str, float] = {}
        try:
            model.eval()
            for name, tasks in self.sets.items():
                agg, per = run_probe(engine, self.scorer, tasks, self.settings)
                metrics.update({f"probe/{name}/{k}": v for k, v in agg.items()})
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as f:
                    f.write(json.dumps({"step": step, "set": name, "samples": self.settings.samples, **per}) + "\n")
        finally:
            torch.set_rng_state(rng)  # probing never perturbs the training RNG stream
            model.train(was)
        return metrics


def read_probe(path: Path) -> list[dict]:
    """The rows of a run's ``probe.jsonl`` (one per step and set)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
