"""The RL loop: tasks -> rollout -> rewards -> recipe -> learner, algorithm-blind.

One step: take the next ``prompts_per_step`` prompts of the training stream, sample ``n`` responses
each, score them, let the recipe filter rows and compute its advantages, then run ``epochs`` passes of
mini-batch updates where the recipe supplies the loss. Everything the step depends on (weights,
optimizer, LR step, every RNG, the data cursor, recipe state) is checkpointed atomically, so a run
killed at any moment resumes bit-identically.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from reasonrl.algorithms.offpolicy import reweight_token_grads
from reasonrl.algorithms.recipes import ForwardOut, Norm, Recipe, StepContext, make_recipe
from reasonrl.batch import Rollouts, concat
from reasonrl.config import Config
from reasonrl.rollout.logprobs import sequence_logprobs
from reasonrl.rollout.mismatch import MismatchMeter
from reasonrl.rollout.sampling import SamplingParams
from reasonrl.trainer.sft import lr_at


class TrainingError(RuntimeError):
    pass


def resolve_model(path: str, log=print) -> Path:
    """Map built-in names to cached directories (building on first use); pass paths through."""
    if path == "builtin:tiny":
        from reasonrl.models.tiny import build_default_model

        return build_default_model(log=log)
    if path.startswith("builtin:tiny-"):  # the tiny model SFT'd on another built-in family, e.g. tiny-code
        from reasonrl.models.tiny import build_default_model, variant_spec

        return build_default_model(variant_spec(path.removeprefix("builtin:tiny-")), log=log)
    if path.startswith("builtin:"):
        from reasonrl.models.gguf import resolve_model_path

        return Path(resolve_model_path(path))
    return Path(path)


class Trainer:
    def __init__(self, cfg: Config, *, log=print, model=None, tokenizer=None):
        from reasonrl.models.loading import load_policy
        from reasonrl.rewards import Scorer
        from reasonrl.rollout.factory import make_engine
        from reasonrl.tasks import load_tasks
        from reasonrl.threads import apply_thread_policy

        self.cfg = cfg
        self.log = log
        from reasonrl.trainer.rng import seed_all

        apply_thread_policy(cfg.run.threads or None)
        seed_all(cfg.run.seed)  # python, numpy and torch: the checkpointed RNG state is the run's, not the process's
        self.run_dir = cfg.run_dir
        model_dir = None
        if model is None:
            model_dir = resolve_model(cfg.model.path, log)
            model, tokenizer = load_policy(model_dir, dtype=cfg.model.dtype)
        self.model, self.tok = model, tokenizer
        self.recipe: Recipe = make_recipe(cfg.algorithm)
        self.modules = torch.nn.ModuleDict(self.recipe.modules(self.model))
        self.ref = None
        if self.recipe.needs_reference():
            import copy

            self.ref = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.engine = make_engine(cfg, self.model, self.tok, model_dir=model_dir)
        fns = []
        for spec in cfg.reward.functions:
            path, _, w = spec.partition("=")
            fns.append((path, float(w) if w else 1.0))
        from reasonrl.rewards.sandbox import SandboxConfig

        r = cfg.reward
        self.scorer = Scorer(correctness_weight=r.correctness, format_weight=r.format,
                             user_fns=fns, math_timeout_s=r.math_timeout_s, max_error_fraction=r.max_error_fraction,
                             tag_format_weight=r.tag_format, length_penalty_weight=r.length_penalty,
                             length_target_chars=r.length_target_chars, code_partial_credit=r.code_partial_credit,
                             sandbox=SandboxConfig(isolation=r.code_sandbox, timeout_s=r.code_timeout_s,
                                                   cpu_s=r.code_timeout_s, memory_mb=r.code_memory_mb,
                                                   workers=r.code_workers))
        from reasonrl.ssrl import wrap_engine_and_scorer  # tools / SSRL modes (docs/ssrl.md); no-op by default

        self.engine, self.scorer = wrap_engine_and_scorer(cfg, self.engine, self.scorer)
        self.ttrl = None  # label-free majority-vote rewards (docs/ttrl.md)
        if cfg.ttrl.enabled:
            from reasonrl.rewards.majority import MajorityVoteReward

            self.ttrl = MajorityVoteReward.from_config(cfg, self.scorer)
        params = list(self.model.parameters()) + list(self.modules.parameters())
        o = cfg.optim
        if o.name == "sgd":
            self.opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        else:
            self.opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
        self.step = 0
        self.opt_steps = 0
        self.cursor = 0
        self.rl_seconds = 0.0
        self.last_eval_correct: list[bool] = []
        self.invalid_groups_total = self.groups_total = 0  # ungradable vs all prompt groups (_check_invalid)
        from reasonrl.eval.runner import heldout_tasks

        self.test_tasks = heldout_tasks(cfg)
        from reasonrl.tasks.files import check_run_prompts

        check_run_prompts(cfg, self.model, self.tok, self.test_tasks)  # a too-long prompt fails now, not at eval
        if any(t.verifier == "code" for t in self.test_tasks):
            self.scorer.executor  # start the sandbox now: no bubblewrap -> fail before any work, with the fix
        self._load_tasks = load_tasks
        mini = cfg.trainer.mini_batch_prompts or cfg.trainer.prompts_per_step
        self.updates_per_step = cfg.trainer.epochs * (cfg.trainer.prompts_per_step // mini)
        self.total_opt_steps = max(1, cfg.trainer.steps * self.updates_per_step)
        # scale-out hook (trainer/scale.py): async rollout, Ray roles, watchdog; all off by default
        from reasonrl.trainer.scale import Scale

        self.scale = Scale(self)

    # ------------------------------------------------------------------ data
    def next_tasks(self, n: int):
        if self.ttrl is not None and self.cfg.ttrl.prompts == "heldout":  # TTRL trains on its test prompts
            from reasonrl.rewards.majority import cycle_tasks

            tasks = cycle_tasks(self.test_tasks, n, self.cursor, self.cfg.run.seed)
        else:
            tasks = self._load_tasks(self.cfg.data.train, n, split="train", seed=self.cfg.run.seed + 1,
                                     difficulty=self.cfg.data.difficulty, start=self.cursor)
        self.cursor += n
        return tasks if self.ttrl is None else self.ttrl.hide_labels(tasks)

    # ------------------------------------------------------------------ rollout + rewards
    def collect(self, engine=None, rng: torch.Generator | None = None) -> tuple[Rollouts, list, dict[str, float]]:
        """``engine``/``rng``: the async producer's or Ray's engine and seed stream (default: ours, global)."""
        from reasonrl.tasks.templates import render_prompt

        c = self.cfg
        engine = engine or self.engine
        timings = {"time/gen_s": 0.0, "time/reward_s": 0.0}
        kept: list[Rollouts] = []
        tasks_all: list = []
        have = 0
        rounds = 0
        mg = c.algorithm.get("max_gen_batches", 1)  # recipes without a sample filter need one round
        max_rounds = int(mg) if mg is not None and int(mg) > 0 else 10**9  # <= 0 / None: unlimited (DAPO)
        gen_tokens = 0
        stats = {"reward": [], "correct": [], "length": [], "zero_var": [], "truncated": [], "invalid_groups": 0}
        while have < c.trainer.prompts_per_step:
            if rounds >= max_rounds:
                raise TrainingError(
                    f"sample filter kept only {have}/{c.trainer.prompts_per_step} prompts after {rounds} generation "
                    f"rounds (algorithm.max_gen_batches={max_rounds}); raise algorithm.max_gen_batches (<= 0: "
                    f"unlimited), relax the filter, or pick easier/harder prompts so groups have mixed rewards")
            rounds += 1
            tasks = self.next_tasks(c.trainer.prompts_per_step)
            prompts = [render_prompt(t, c.model.template, self.tok) for t in tasks]
            seed = int(torch.randint(0, 2**62, (1,), generator=rng).item())
            t0 = time.perf_counter()
            ro = engine.generate(prompts, SamplingParams(
                n=c.ttrl.n_votes if self.ttrl is not None else c.rollout.n,
                temperature=c.rollout.temperature, top_p=c.rollout.top_p, top_k=c.rollout.top_k,
                max_new_tokens=c.rollout.max_new_tokens, stop=list(c.rollout.stop), seed=seed),
                task_index=list(range(len(tasks_all), len(tasks_all) + len(tasks))))
            timings["time/gen_s"] += time.perf_counter() - t0
            timings.update(getattr(self.engine, "last_metrics", {}))
            gen_tokens += int(ro.response_valid.sum())
            t0 = time.perf_counter()
            rep = [tasks[i - len(tasks_all)] for i in ro.task_index]
            if self.ttrl is None:
                res = self.scorer.score(rep, ro.response_text)
            else:  # label-free: rewards from the majority of n_votes samples, keeping rollout.n of them
                ro, res = self.ttrl.score(rep, ro)
            timings["time/reward_s"] += time.perf_counter() - t0
            timings.update(getattr(self.scorer, "last_metrics", {}))
            short = 0
            ro.rewards = torch.tensor(res.scores, dtype=torch.float32)
            ro.info["correct"] = list(res.correct)
            ro.info["extracted"] = list(res.extracted)
            ro.group_ids = ro.group_ids + len(tasks_all)
            tasks_all.extend(tasks)
            stats["reward"] += res.scores
            stats["correct"] += [float(x) for x in res.correct]
            stats["length"] += ro.response_lengths.float().tolist()
            stats["truncated"] += ro.truncated.float().tolist()
            r = ro.rewards.view(-1, c.rollout.n)
            stats["zero_var"] += (r.max(1).values == r.min(1).values).float().tolist()
            if not all(res.valid):
                # a grading failure (verifier crash/timeout) is not a wrong answer: drop its whole group
                bad = {int(g) for g, ok in zip(ro.group_ids, res.valid) if not ok}
                stats["invalid_groups"] += len(bad)
                ro = ro.select([i for i, g in enumerate(ro.group_ids.tolist()) if g not in bad])
                short += len(bad)
            rows = self.recipe.filter_rows(ro)
            if rows is not None:
                ro = ro.select(rows)
            kept.append(ro)
            have += len(ro) // c.rollout.n + short
        _check_invalid(self, stats["invalid_groups"], rounds * c.trainer.prompts_per_step)
        batch = concat(kept, self.tok.pad_token_id)
        if len(batch) > c.trainer.prompts_per_step * c.rollout.n:
            batch = batch.select(list(range(c.trainer.prompts_per_step * c.rollout.n)))
        m = {
            "reward/mean": _mean(stats["reward"]), "reward/accuracy": _mean(stats["correct"]),
            "response/length_mean": _mean(stats["length"]), "response/truncated_frac": _mean(stats["truncated"]),
            "batch/zero_var_frac": _mean(stats["zero_var"]), "batch/gen_rounds": rounds,
            "reward/invalid_groups": stats["invalid_groups"],
            "perf/gen_tokens_per_s": gen_tokens / max(timings["time/gen_s"], 1e-9), **timings,
            **(self.scorer.metrics() if hasattr(self.scorer, "metrics") else {}),  # grader counters (optional)
            **(self.ttrl.pop_metrics() if self.ttrl is not None else {}),
        }
        return batch.trim(), tasks_all, m

    # ------------------------------------------------------------------ learner
    @torch.no_grad()
    def _reference_logp(self, batch: Rollouts) -> torch.Tensor:
        logp, _ = sequence_logprobs(self.ref, batch, temperature=self.cfg.rollout.temperature,
                                    micro_batch=self.cfg.trainer.micro_batch)
        return logp

    def _set_lr(self) -> float:
        o = self.cfg.optim
        lr = o.lr * lr_at(self.opt_steps, self.total_opt_steps, o.warmup_steps, o.schedule, o.min_lr_ratio)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    @torch.no_grad()
    def _forward_nograd(self, batch: Rollouts) -> ForwardOut:
        logp, ent, hidden = sequence_logprobs(self.model, batch, temperature=self.cfg.rollout.temperature,
                                              micro_batch=self.cfg.trainer.micro_batch, with_entropy=True,
                                              return_hidden=True)
        return ForwardOut(logp=logp, entropy=ent, hidden=hidden, modules=dict(self.modules))

    def demo_rows(self, tasks: list, task_indices: list[int]) -> Rollouts:
        """Rows whose response is the task's demonstration + EOS, in the rollout layout."""
        from reasonrl.tasks.templates import render_prompt
        from reasonrl.trainer.sft import SFTExample, collate, encode_examples

        exs = []
        for i in task_indices:
            t = tasks[i]
            if not t.solution:
                raise TrainingError(f"task {t.uid} has no worked solution, but algorithm "
                                    f"{self.cfg.algorithm['name']!r} needs demonstrations; add a `solution` field")
            exs.append(SFTExample(render_prompt(t, self.cfg.model.template, self.tok), t.solution))
        enc = encode_examples(self.tok, exs)
        tp = max(len(p) for p, _ in enc)
        b = collate(enc, self.tok.pad_token_id)
        resp_mask = (b["labels"][:, tp:] != -100).float()
        ids = b["input_ids"]
        with torch.no_grad():
            ro = Rollouts(prompt_ids=ids[:, :tp], prompt_mask=b["attention_mask"][:, :tp], response_ids=ids[:, tp:],
                          loss_mask=resp_mask, rollout_logp=torch.zeros_like(resp_mask),
                          group_ids=torch.tensor([-1 - i for i in task_indices]), task_index=list(task_indices),
                          response_text=[e.completion for e in exs], truncated=torch.zeros(len(exs), dtype=torch.bool),
                          rewards=torch.ones(len(exs)), info={"correct": [True] * len(exs), "demo": [True] * len(exs)})
            ro.rollout_logp = sequence_logprobs(self.model, ro, temperature=self.cfg.rollout.temperature)[0]
        return ro

    def update(self, batch: Rollouts, tasks: list | None = None) -> dict[str, float]:
        c = self.cfg
        if self.ref is not None:
            batch.extras["ref_logp"] = self._reference_logp(batch)
        ctx = StepContext(forward=self._forward_nograd, demo_rows=lambda idx: self.demo_rows(tasks or [], idx),
                          tasks=tasks or [], step=self.step,
                          reference=self._reference_logp if self.ref is not None else None,
                          max_new_tokens=c.rollout.max_new_tokens, pad_id=self.tok.pad_token_id or 0)
        batch = self.recipe.prepare(batch, ctx)
        active_all = self.recipe.row_active(batch)
        # mini-batches are runs of whole groups, not fixed row counts: a recipe may add or drop rows
        # (HPT swaps a group's n rollouts for one demonstration); groups are contiguous rows.
        _, gsize = torch.unique_consecutive(batch.group_ids, return_counts=True)
        gstart = torch.cat([gsize.new_zeros(1), gsize.cumsum(0)])
        n_mini = c.trainer.prompts_per_step // (c.trainer.mini_batch_prompts or c.trainer.prompts_per_step)
        chunks = [(int(gstart[g[0]]), int(gstart[g[-1] + 1])) for g in torch.arange(len(gsize)).tensor_split(n_mini)
                  if len(g)]
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        ent_sum, ent_tok, trained_tokens = 0.0, 0.0, 0
        t0 = time.perf_counter()
        grad_norm = lr = float("nan")
        losses: list[float] = []
        mismatch = MismatchMeter()  # sampler vs learner log-probs, before this step's first update
        self.model.train()
        self.modules.train()
        for _epoch in range(c.trainer.epochs):
            for start, end in chunks:
                rows = torch.arange(start, end)
                mb_all = batch.select(rows)
                mask = mb_all.loss_mask.float()
                norm = Norm(num_tokens=float(mask.sum()), num_seqs=float((mask.sum(1) > 0).sum()),
                            loss_scale_factor=float(c.rollout.max_new_tokens), batch=mb_all)
                act = rows[active_all[rows]]
                self.opt.zero_grad(set_to_none=True)
                lr = self._set_lr()
                step_loss = 0.0
                # data-parallel hooks (trainer/distributed.py): this rank's share; scale 0 = a padding pass
                for mb_rows, scale, last in self.dist.micro_batches(act, c.trainer.micro_batch):
                    mb = batch.select(mb_rows).trim()
                    with self.dist.grad_sync(last):
                        fwd = sequence_logprobs(
                            self.dist.module, mb, temperature=c.rollout.temperature,
                            with_entropy=self.recipe.needs_entropy(), return_hidden=self.recipe.needs_hidden())
                        logp, ent = fwd[0], fwd[1]
                        if _epoch == 0 and start == chunks[0][0] and scale:
                            mismatch.add(mb.rollout_logp, logp, mb.loss_mask)
                        if "is_logw" in mb.extras:  # async: truncated IS weight per token (algorithms/offpolicy.py)
                            logp = reweight_token_grads(logp, mb.extras["is_logw"].exp().to(logp.device))
                        hidden = fwd[2] if len(fwd) == 3 else None
                        out = ForwardOut(logp=logp, entropy=ent, hidden=hidden, modules=dict(self.modules))
                        loss, metrics = self.recipe.loss(mb, out, norm)
                        if not torch.isfinite(loss):
                            raise TrainingError(f"non-finite loss {float(loss)} at step {self.step}; lower optim.lr or check rewards")
                        (loss * scale if scale != 1.0 else loss).backward()
                    if not scale:
                        continue
                    step_loss += loss.item()
                    lm = mb.loss_mask.float()
                    trained_tokens += int(lm.sum())
                    if ent is not None:
                        ent_sum += float((ent.detach() * lm).sum())
                        ent_tok += float(lm.sum())
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0) + 1
                step_loss = self.dist.all_sum(step_loss)
                self.dist.reduce_module_grads(self.modules)
                params = [p for g in self.opt.param_groups for p in g["params"] if p.grad is not None]
                if params:
                    grad_norm = self.dist.clip_grad_norm(params, c.optim.grad_clip)
                    self.opt.step()
                self.opt_steps += 1
                losses.append(step_loss)
                _trace(self.step + 1, self.opt_steps, step_loss, grad_norm)
        train_s = time.perf_counter() - t0
        out = {k: sums[k] / counts[k] for k in sums}
        out.update(mismatch.metrics())
        out.update({"actor/loss": sum(losses) / max(1, len(losses)), "actor/entropy": ent_sum / ent_tok if ent_tok else float("nan"), "actor/grad_norm": grad_norm,
                    "actor/lr": lr, "batch/active_frac": float(active_all.float().mean()), "time/train_s": train_s,
                    "perf/train_tokens_per_s": trained_tokens * c.trainer.epochs / max(train_s, 1e-9) / c.trainer.epochs})
        return out

    # ------------------------------------------------------------------ state
    def trainer_state(self) -> dict[str, Any]:
        from reasonrl.trainer.checkpoint import counters_state
        from reasonrl.trainer.rng import capture_rng

        scale = self.scale.state_dict()  # first: it quiesces the async producer, which owns the cursor
        return {"scale": scale, "step": self.step, "opt_steps": self.opt_steps, "cursor": self.cursor, "rl_seconds": self.rl_seconds,
                "optimizer": self.opt.state_dict(), "modules": self.modules.state_dict(),
                "recipe": self.recipe.state_dict(), "rng": capture_rng(), "ref": None if self.ref is None else self.ref.state_dict(),
                "counters": counters_state(self)}

    def load_trainer_state(self, st: dict[str, Any]) -> None:
        from reasonrl.trainer.rng import restore_rng

        self.step, self.opt_steps, self.cursor = st["step"], st["opt_steps"], st["cursor"]
        self.rl_seconds = st["rl_seconds"]
        self.opt.load_state_dict(st["optimizer"])
        self.modules.load_state_dict(st["modules"])
        self.recipe.load_state_dict(st["recipe"])
        if self.ref is not None and st.get("ref") is not None:
            self.ref.load_state_dict(st["ref"])
        if not os.environ.get("REASONRL_TEST_FORGET_RNG"):
            restore_rng(st["rng"])
        self.scale.load_state_dict(st.get("scale"))
        from reasonrl.trainer.checkpoint import load_counters_state

        load_counters_state(self, st.get("counters"))

    def save_checkpoint(self) -> Path:
        from reasonrl.trainer.checkpoint import hf_writer, save_checkpoint

        files = {"model": hf_writer(self.model, self.tok)}
        delay = float(os.environ.get("REASONRL_TEST_SAVE_DELAY", "0"))
        if delay:  # test hook: widen the save window so SIGKILLs land mid-save
            files["slow.bin"] = lambda p: (time.sleep(delay), p.write_bytes(b"x"))
        return save_checkpoint(self.run_dir / "checkpoints", self.step, files=files,
                               state=self.trainer_state(), keep_last=self.cfg.trainer.keep_last)

    def try_resume(self, required: bool = True) -> bool:
        from reasonrl.trainer.checkpoint import find_resume_point, load_trainer_state

        ck = find_resume_point(self.run_dir / "checkpoints", required=required)
        if ck is None:
            self.log(f"resume=auto: no committed checkpoint under {self.run_dir / 'checkpoints'}; starting fresh")
            return False
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(ck / "model", local_files_only=True,
                                                      torch_dtype=next(self.model.parameters()).dtype)
        self.model.load_state_dict(loaded.state_dict())
        self.load_trainer_state(load_trainer_state(ck))
        self.log(f"resumed from {ck} (step {self.step})")
        return True

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        from reasonrl.eval.runner import evaluate, settings_from_config
        from reasonrl.trainer.checkpoint import counters_state, load_counters_state
        from reasonrl.trainer.rng import capture_rng, restore_rng

        st = settings_from_config(self.cfg)
        was = self.model.training
        rng, counters = capture_rng(), counters_state(self)
        try:
            out, self.last_eval_correct = evaluate(self.engine, self.scorer, self.test_tasks, st, return_correct=True)
            return out
        finally:
            # evaluation never perturbs the training RNG streams or the training graders' counters,
            # so a run that reuses a stored evaluation continues exactly like one that computed it
            restore_rng(rng)
            load_counters_state(self, counters)
            self.model.train(was)

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        from reasonrl.trainer.rundir import open_run_dir

        try:
            with open_run_dir(self) as self.rundir:  # lock, refuse to destroy a run, remove crash debris
                return self._run()
        finally:
            self.scale.close()  # stops the rollout thread, the watchdog and Ray (if any were started)

    def _run(self) -> dict[str, Any]:
        from reasonrl.trainer.logging import RunLogger

        c = self.cfg
        self.log(f"run {c.run.name}: starting ({c.trainer.steps} steps, algorithm {c.algorithm['name']}, resume={c.trainer.resume})")
        from reasonrl.trainer.checkpoint import reset_counters

        reset_counters(self)  # the run's counters start at 0 (the math verifier is shared by the process)
        if c.trainer.resume:
            self.try_resume(required=c.trainer.resume is True)
        self.rundir.write_config(c)  # only now: a failed resume leaves the run's config as it was
        logger = RunLogger(self.run_dir, tensorboard=c.trainer.tensorboard)
        logger.truncate_after(self.step)
        summary: dict[str, Any] = {}
        from reasonrl.trainer.rundir import eval_key

        key = eval_key(c, self.test_tasks)
        before = self.rundir.load_eval_before(key)  # reused only if computed under exactly these settings
        if before is None:
            ev = self.evaluate()
            before = self.rundir.save_eval_before(key, ev, self.last_eval_correct)
            self.log(f"before RL: held-out pass@1 {ev['pass@1']:.3f}")
        logger.log_before({"step": 0, **{f"eval/{k}": v for k, v in before.metrics.items()}})
        before_correct = before.correct
        summary["pass@1_before"] = before.metrics["pass@1"]
        with logger.progress(total=c.trainer.steps, start=self.step, enabled=c.trainer.progress) as bar:
            while self.step < c.trainer.steps:
                if c.trainer.max_time_s and self.rl_seconds >= c.trainer.max_time_s:
                    self.log(f"stopping at step {self.step}: trainer.max_time_s={c.trainer.max_time_s} reached")
                    break
                t0 = time.perf_counter()
                with self.scale.guard(self.step):  # default: exactly self.collect() and self.update()
                    batch, tasks, m = self.scale.collect()
                    m.update(self.scale.update(batch, tasks))
                self.step += 1
                m["step"] = self.step
                m["time/step_s"] = time.perf_counter() - t0
                self.rl_seconds += m["time/step_s"]
                m["perf/tokens_per_s"] = float(batch.response_valid.sum()) / m["time/step_s"]
                if c.trainer.eval_every and self.step % c.trainer.eval_every == 0 and self.step < c.trainer.steps:
                    m.update({f"eval/{k}": v for k, v in self.evaluate().items()})
                logger.log(m)
                logger.samples(self.step, batch, tasks, c.trainer.log_samples)
                bar.update(self.step, m)
                if c.trainer.save_every and self.step % c.trainer.save_every == 0:
                    self.save_checkpoint()
        ev = self.evaluate()
        logger.log({"step": self.step, **{f"eval/{k}": v for k, v in ev.items()}})
        if before_correct is not None:  # same problems before and after: a paired test, not two intervals
            from reasonrl.eval.metrics import paired_comparison

            summary.update(paired_comparison(before_correct, self.last_eval_correct, "after_vs_before"))
        rows = [r for r in logger.read_metrics() if "perf/gen_tokens_per_s" in r]
        for key in ("perf/gen_tokens_per_s", "perf/train_tokens_per_s", "perf/tokens_per_s"):
            vals = [r[key] for r in rows if r.get(key) is not None]
            summary[f"mean_{key.split('/')[1]}"] = sum(vals) / len(vals) if vals else None
        import resource

        summary["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        summary.update({"pass@1_after": ev["pass@1"], "steps": self.step, "rl_seconds": self.rl_seconds,
                        **{f"final/{k}": v for k, v in ev.items()}})
        from reasonrl.models.loading import save_policy

        save_policy(self.model, self.tok, self.run_dir / "final")
        logger.close()
        return summary


def _check_invalid(trainer: "Trainer", invalid: int, groups: int) -> None:
    """Stop when ungradable groups (dropped, never scored 0) exceed ``reward.max_error_fraction`` of
    all groups so far: past that the run is training on what the graders happen to survive."""
    trainer.invalid_groups_total += invalid
    trainer.groups_total += groups
    limit = trainer.cfg.reward.max_error_fraction
    if trainer.invalid_groups_total > limit * trainer.groups_total:
        raise TrainingError(
            f"{trainer.invalid_groups_total}/{trainer.groups_total} prompt groups so far could not be graded "
            f"(verifier or sandbox infrastructure errors, dropped rather than scored 0), more than "
            f"reward.max_error_fraction={limit}; fix the grader (for code: is bubblewrap working? see the "
            f"reward/code_infra_error metric) or raise reward.max_error_fraction")


def _trace(step: int, opt_step: int, loss: float, grad_norm: float) -> None:
    """Test hook: with REASONRL_STEP_TRACE=<file>, append every optimizer step's loss and grad norm as
    exact float hex, never truncated on resume, so replayed steps can be compared bit for bit."""
    path = os.environ.get("REASONRL_STEP_TRACE")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"step": step, "opt_step": opt_step, "loss": float(loss).hex(),
                            "grad_norm": float(grad_norm).hex()}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")
