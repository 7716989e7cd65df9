"""The learner: turns a scored batch into optimizer steps, with the recipe supplying the loss.

It owns what the update needs and nothing else: the recipe's extra modules (value head, log Z), the
frozen reference policy, the optimizer and its LR schedule, the data-parallel hooks
(``trainer/distributed.py``) and the sampler/learner mismatch meter. One update: reference
log-probs -> ``recipe.prepare`` (advantages, filters, HPT's demo rows) -> ``epochs`` passes over
mini-batches of whole groups -> per micro-batch ``recipe.loss`` -> clip, step. A Ray learner rank
runs exactly this object with ``DataParallelLearner`` hooks.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from reasonrl import _testing
from reasonrl.algorithms.offpolicy import reweight_token_grads
from reasonrl.algorithms.recipes import ForwardOut, Norm, Recipe, StepContext
from reasonrl.batch import Rollouts
from reasonrl.models.lora import reference_view
from reasonrl.rollout.logprobs import enable_activation_checkpointing, logprob_options, sequence_logprobs
from reasonrl.rollout.mismatch import MismatchMeter
from reasonrl.trainer.distributed import LocalLearner


class TrainingError(RuntimeError):
    pass


def make_optimizer(o, params: list) -> torch.optim.Optimizer:
    """``optim.name`` over ``params`` (``o`` is the ``OptimConfig``)."""
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


class Learner:
    def __init__(self, cfg, model: torch.nn.Module, tokenizer: Any, recipe: Recipe):
        self.cfg, self.model, self.tok, self.recipe = cfg, model, tokenizer, recipe
        self.modules = torch.nn.ModuleDict(recipe.modules(model))
        self.ref = reference_view(model) if recipe.needs_reference() else None  # LoRA: the base, adapters off
        self.lp_kw = logprob_options(cfg.perf)  # perf.* (docs/performance.md)
        if cfg.perf.activation_checkpointing:
            enable_activation_checkpointing(model)
        trainable = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters only
        self.opt = make_optimizer(cfg.optim, trainable + list(self.modules.parameters()))
        self.dist = LocalLearner(model)
        self.opt_steps = 0
        t = cfg.trainer
        self.updates_per_step = t.epochs * (t.prompts_per_step // (t.mini_batch_prompts or t.prompts_per_step))
        self.total_opt_steps = max(1, t.steps * self.updates_per_step)

    # ------------------------------------------------------------------ what a recipe may ask for
    @torch.no_grad()
    def reference_logp(self, batch: Rollouts) -> torch.Tensor:
        logp, _ = sequence_logprobs(self.ref, batch, temperature=self.cfg.rollout.temperature,
                                    micro_batch=self.cfg.trainer.micro_batch, **self.lp_kw)
        return logp

    @torch.no_grad()
    def forward_nograd(self, batch: Rollouts) -> ForwardOut:
        logp, ent, hidden = sequence_logprobs(self.model, batch, temperature=self.cfg.rollout.temperature,
                                              micro_batch=self.cfg.trainer.micro_batch, with_entropy=True,
                                              return_hidden=True, **self.lp_kw)
        return ForwardOut(logp=logp, entropy=ent, hidden=hidden, modules=dict(self.modules))

    def demo_rows(self, tasks: list, task_indices: list[int]) -> Rollouts:
        """Rows whose response is the task's demonstration + EOS, in the rollout layout."""
        from reasonrl.models.sft import SFTExample, collate, encode_examples
        from reasonrl.tasks.templates import render_prompt

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
            ro.rollout_logp = sequence_logprobs(self.model, ro, temperature=self.cfg.rollout.temperature,
                                                **self.lp_kw)[0]
        return ro

    def set_lr(self) -> float:
        from reasonrl.models.sft import lr_at

        o = self.cfg.optim
        lr = o.lr * lr_at(self.opt_steps, self.total_opt_steps, o.warmup_steps, o.schedule, o.min_lr_ratio)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    # ------------------------------------------------------------------ the update
    def update(self, batch: Rollouts, tasks: list | None, step: int) -> dict[str, float]:
        """``epochs`` passes of mini-batch updates on ``batch`` (``step``: the step being trained, for traces)."""
        c = self.cfg
        tasks = tasks or []
        if self.ref is not None:
            batch.ref_logp = self.reference_logp(batch)
        ctx = StepContext(forward=self.forward_nograd, demo_rows=lambda idx: self.demo_rows(tasks, idx), tasks=tasks,
                          step=step, reference=self.reference_logp if self.ref is not None else None,
                          max_new_tokens=c.rollout.max_new_tokens, pad_id=self.tok.pad_token_id or 0)
        batch = self.recipe.prepare(batch, ctx)
        active_all = self.recipe.row_active(batch)
        chunks = _group_chunks(batch.group_ids, c.trainer.prompts_per_step // (c.trainer.mini_batch_prompts
                                                                             or c.trainer.prompts_per_step))
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        ent_sum, ent_tok, trained_tokens = 0.0, 0.0, 0
        t0 = time.perf_counter()
        grad_norm = lr = float("nan")
        losses: list[float] = []
        mismatch = MismatchMeter()  # sampler vs learner log-probs, before this step's first update
        self.model.train()
        self.modules.train()
        for epoch in range(c.trainer.epochs):
            for start, end in chunks:
                rows = torch.arange(start, end)
                mb_all = batch.select(rows)
                mask = mb_all.loss_mask.float()
                norm = Norm(num_tokens=float(mask.sum()), num_seqs=float((mask.sum(1) > 0).sum()),
                            loss_scale_factor=float(c.rollout.max_new_tokens), batch=mb_all)
                act = rows[active_all[rows]]
                self.opt.zero_grad(set_to_none=True)
                lr = self.set_lr()
                step_loss = 0.0
                # data-parallel hooks (trainer/distributed.py): this rank's share; scale 0 = a padding pass
                for mb_rows, scale, last in self.dist.micro_batches(act, c.trainer.micro_batch):
                    mb = batch.select(mb_rows).trim()
                    with self.dist.grad_sync(last):
                        fwd = sequence_logprobs(
                            self.dist.module, mb, temperature=c.rollout.temperature,
                            with_entropy=self.recipe.needs_entropy(), return_hidden=self.recipe.needs_hidden(),
                            **self.lp_kw)
                        logp, ent = fwd[0], fwd[1]
                        if epoch == 0 and start == chunks[0][0] and scale:
                            mismatch.add(mb.rollout_logp, logp, mb.loss_mask)
                        if mb.is_logw is not None:  # off-policy batch: truncated IS weight per token (offpolicy.py)
                            logp = reweight_token_grads(logp, mb.is_logw.exp().to(logp.device))
                        out = ForwardOut(logp=logp, entropy=ent, hidden=fwd[2] if len(fwd) == 3 else None,
                                         modules=dict(self.modules))
                        loss, metrics = self.recipe.loss(mb, out, norm)
                        if not torch.isfinite(loss):
                            raise TrainingError(f"non-finite loss {float(loss)} at step {step}; lower optim.lr or check rewards")
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
                _testing.trace_step(step + 1, self.opt_steps, step_loss, grad_norm)
        train_s = time.perf_counter() - t0
        out = {k: sums[k] / counts[k] for k in sums}
        out.update(mismatch.metrics())
        out.update({"actor/loss": sum(losses) / max(1, len(losses)),
                    "actor/entropy": ent_sum / ent_tok if ent_tok else float("nan"), "actor/grad_norm": grad_norm,
                    "actor/lr": lr, "batch/active_frac": float(active_all.float().mean()), "time/train_s": train_s,
                    "perf/train_tokens_per_s": trained_tokens * c.trainer.epochs / max(train_s, 1e-9) / c.trainer.epochs})
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"opt_steps": self.opt_steps, "optimizer": self.opt.state_dict(), "modules": self.modules.state_dict(),
                "recipe": self.recipe.state_dict(), "ref": None if self.ref is None else self.ref.state_dict()}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.opt_steps = st["opt_steps"]
        self.opt.load_state_dict(st["optimizer"])
        self.modules.load_state_dict(st["modules"])
        self.recipe.load_state_dict(st["recipe"])
        if self.ref is not None and st.get("ref") is not None:
            self.ref.load_state_dict(st["ref"])


def _group_chunks(group_ids: torch.Tensor, n_mini: int) -> list[tuple[int, int]]:
    """Mini-batches as row ranges of whole groups, not fixed row counts: a recipe may add or drop rows
    (HPT swaps a group's n rollouts for one demonstration); groups are contiguous rows."""
    _, gsize = torch.unique_consecutive(group_ids, return_counts=True)
    gstart = torch.cat([gsize.new_zeros(1), gsize.cumsum(0)])
    return [(int(gstart[g[0]]), int(gstart[g[-1] + 1])) for g in torch.arange(len(gsize)).tensor_split(n_mini)
            if len(g)]
