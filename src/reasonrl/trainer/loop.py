"""The RL loop: collect -> score -> prepare -> update -> log/save/eval, algorithm- and mode-blind.

One step: the rollout stage samples ``rollout.n`` responses for each of the next ``prompts_per_step``
prompts and scores them (``rollout/stage.py``; the mode chose the stage at build time), the recipe
filters rows (refilling for as many rounds as it allows, ``trainer/sampler.py``), then the learner
prepares advantages and runs ``epochs`` passes of mini-batch updates where the recipe supplies the
loss (``trainer/learner.py``). Everything a step depends on (weights, optimizer, LR step, every RNG,
the data cursor, recipe state) is checkpointed atomically, so a run killed at any moment resumes
bit-identically (``trainer/lifecycle.py``). ``trainer/scale.py`` decides where collection and updates
run (this process, a background producer, Ray actors); by default it calls straight through.
"""

from __future__ import annotations

import time
from typing import Any

from reasonrl.batch import Rollouts
from reasonrl.config import Config
from reasonrl.models.resolve import resolve_model  # noqa: F401  (compatibility: callers import it from here)
from reasonrl.trainer import lifecycle
from reasonrl.trainer.build import build
from reasonrl.trainer.learner import TrainingError  # noqa: F401  (re-exported: the loop's error type)
from reasonrl.trainer.logging import sample_entropy
from reasonrl.trainer.sampler import BatchSampler


class Trainer:
    def __init__(self, cfg: Config, *, log=print, model=None, tokenizer=None):
        from reasonrl.trainer.scale import Scale

        self.run_parts = r = build(cfg, log=log, model=model, tokenizer=tokenizer)
        self.cfg, self.log, self.run_dir = cfg, log, cfg.run_dir
        self.model, self.tok, self.recipe, self.learner, self.stage = r.model, r.tokenizer, r.recipe, r.learner, r.stage
        self.test_tasks = r.test_tasks
        from reasonrl.eval.probe import Probe  # fixed probe sets during training (eval/probe.py); off by default

        self.probe = Probe(cfg, self.scorer) if cfg.eval.probe_every else None
        from reasonrl.tasks.files import check_run_prompts

        check_run_prompts(cfg, self.model, self.tok, self.test_tasks)  # a too-long prompt fails now, not at eval
        self.step, self.rl_seconds, self.last_eval_correct = 0, 0.0, []
        self.sampler = BatchSampler(self.stage, self.recipe, cfg, self.tok.pad_token_id)  # feeds training
        self.scale = Scale(self)  # async producer, Ray roles, watchdog: all off by default

    # ------------------------------------------------------------------ one step, in pieces
    def collect(self, rng=None) -> tuple[Rollouts, list, dict[str, float]]:
        """Rollouts for one step (``rng``: the seed stream; default the global generator)."""
        got = self.sampler.collect(rng)
        return got.batch, got.tasks, got.metrics

    def update(self, batch: Rollouts, tasks: list | None = None) -> dict[str, float]:
        return self.learner.update(batch, tasks, self.step)

    def evaluate(self) -> dict[str, float]:
        return lifecycle.evaluate(self)

    def save_checkpoint(self):
        return lifecycle.save_checkpoint(self)

    def try_resume(self, required: bool = True) -> bool:
        return lifecycle.try_resume(self, required)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        from reasonrl.trainer.rundir import open_run_dir

        try:
            with open_run_dir(self) as self.rundir:  # lock, refuse to destroy a run, remove crash debris
                return self._run()
        finally:
            self.scale.close()  # stops the rollout thread, the watchdog and Ray (if any were started)
            if hasattr(self.stage, "close"):  # a stage holding processes (vla: env workers) ends with its run
                self.stage.close()

    def _run(self) -> dict[str, Any]:
        c = self.cfg
        logger, summary, before_correct = lifecycle.start_run(self)
        with logger.progress(total=c.trainer.steps, start=self.step, enabled=c.trainer.progress) as bar:
            while self.step < c.trainer.steps:
                if c.trainer.max_time_s and self.rl_seconds >= c.trainer.max_time_s:
                    self.log(f"stopping at step {self.step}: trainer.max_time_s={c.trainer.max_time_s} reached")
                    break
                t0 = time.perf_counter()
                with self.scale.guard(self.step):  # default: exactly self.collect() and self.update()
                    batch, tasks, m = self.scale.collect()
                    sample_ent = sample_entropy(self.model, batch, c)  # samples.jsonl's rows, before the update
                    m.update(self.scale.update(batch, tasks))
                self.step += 1
                m["step"] = self.step
                m["time/step_s"] = time.perf_counter() - t0
                self.rl_seconds += m["time/step_s"]
                m["perf/tokens_per_s"] = float(batch.response_valid.sum()) / m["time/step_s"]
                if c.trainer.eval_every and self.step % c.trainer.eval_every == 0 and self.step < c.trainer.steps:
                    m.update({f"eval/{k}": v for k, v in self.evaluate().items()})
                if self.probe and self.probe.due(self.step):
                    m.update(lifecycle.probe_metrics(self, self.step))
                logger.log(m)
                logger.samples(self.step, batch, tasks, c.trainer.log_samples, tokenizer=self.tok, entropy=sample_ent)
                bar.update(self.step, m)
                if c.trainer.save_every and self.step % c.trainer.save_every == 0:
                    self.save_checkpoint()
        return lifecycle.finish_run(self, logger, summary, before_correct)

    # ------------------------------------------------------------------ component views (tests, benchmarks)
    engine = property(lambda self: self.stage.engine, lambda self, v: setattr(self.stage, "engine", v))
    scorer = property(lambda self: self.stage.scorer, lambda self, v: setattr(self.stage, "scorer", v))
    cursor = property(lambda self: self.stage.tasks.cursor, lambda self, v: setattr(self.stage.tasks, "cursor", v))
    invalid_groups_total = property(lambda self: self.sampler.invalid_groups_total,
                                    lambda self, v: setattr(self.sampler, "invalid_groups_total", v))
    groups_total = property(lambda self: self.sampler.groups_total, lambda self, v: setattr(self.sampler, "groups_total", v))
    modules = property(lambda self: self.learner.modules)
    ref = property(lambda self: self.learner.ref)
    opt = property(lambda self: self.learner.opt, lambda self, v: setattr(self.learner, "opt", v))
    dist = property(lambda self: self.learner.dist, lambda self, v: setattr(self.learner, "dist", v))
    opt_steps = property(lambda self: self.learner.opt_steps, lambda self, v: setattr(self.learner, "opt_steps", v))
    updates_per_step = property(lambda self: self.learner.updates_per_step)
