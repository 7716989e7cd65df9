"""Thin driver: few-demo SFT warm start, then GRPO through the recipe API (``make_recipe``,
``prepare``, ``loss``) with the text trainer's optimizer settings (AdamW, betas (0.9, 0.99), constant
LR, global grad-norm clip). It stands in for the restructured trainer: ``VLARolloutStage.collect``
is the rollout stage and ``grpo_update`` is the learner step, so the trainer can replace this file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from reasonrl.algorithms.recipes import ForwardOut, Norm, Recipe, StepContext, make_recipe
from reasonrl.batch import Rollouts, concat
from reasonrl.embodied.actions import ActionTokenizer
from reasonrl.embodied.config import VLARunConfig
from reasonrl.embodied.envs import ACTION_DIM, STATE_DIM, TASKS, EnvPool, FetchEpisode
from reasonrl.embodied.experts import Demo, collect_demos
from reasonrl.embodied.policy import VLAConfig, VLAPolicy
from reasonrl.embodied.rollout import Trajectories, run_episodes, to_rollouts

DEMO_SEED_BASE = 500_000_000  # demonstrations' initial states (training range, apart from sampled ones)
STATS_SEED_BASE = 700_000_000


def state_statistics(tasks: list[str], n: int = 32, floor: float = 0.05) -> tuple[list[float], list[float]]:
    """Mean/std of the state vector over initial states of ``tasks`` (no actions: the env's own
    start distribution), std floored so constant dimensions (velocities at rest) stay O(1)."""
    rows = []
    for task in tasks:
        ep = FetchEpisode(task, 0, 1)
        try:
            rows += [ep.reset(STATS_SEED_BASE + i).state for i in range(n)]
        finally:
            ep.close()
    x = np.stack(rows)
    return x.mean(0).tolist(), np.maximum(x.std(0), floor).tolist()


def build_policy(cfg: VLARunConfig, demos: list[Demo] | None = None) -> tuple[VLAPolicy, ActionTokenizer]:
    p = cfg.policy
    if p.path:
        pol = VLAPolicy.from_pretrained(p.path)
        return pol, ActionTokenizer(pol.config.action_low, pol.config.action_high, pol.config.n_bins)
    if p.action_norm == "q99":
        if not demos:
            raise ValueError("policy.action_norm=q99 needs demonstrations to take quantiles from")
        tok = ActionTokenizer.from_quantiles(np.concatenate([d.actions.reshape(-1, ACTION_DIM) for d in demos]), p.n_bins)
    else:
        tok = ActionTokenizer(-np.ones(ACTION_DIM), np.ones(ACTION_DIM), p.n_bins)
    words = sorted({w for t in TASKS.values() for w in t.instruction.lower().split()})
    mean, std = state_statistics(cfg.env.tasks)
    torch.manual_seed(cfg.train.seed)
    vc = VLAConfig(words=words, state_dim=STATE_DIM, action_dim=ACTION_DIM, chunk_len=cfg.env.chunk_len,
                   n_bins=p.n_bins, image_size=cfg.env.image_size, vision_encoder=p.vision_encoder, d_model=p.d_model,
                   n_layer=p.n_layer, n_head=p.n_head, state_mean=mean, state_std=std,
                   action_low=tok.low.tolist(), action_high=tok.high.tolist(), head=p.head, min_sigma=p.min_sigma,
                   learn_sigma=p.learn_sigma)
    return VLAPolicy(vc), tok


def gather_demos(cfg: VLARunConfig, per_task: int, offset: int = 0) -> list[Demo]:
    """``per_task`` successful expert episodes per task; ``offset`` picks another set of initial states."""
    base = DEMO_SEED_BASE + 10_000 * offset
    return [d for task in cfg.env.tasks
            for d in collect_demos(task, per_task, range(base, base + 50 * per_task),
                                   cfg.env.chunk_len, cfg.env.max_steps, cfg.env.image_size)]


def sft_demos(cfg: VLARunConfig, per_task: int, offset: int = 0) -> list[Demo]:
    """The warm start's data: ``gather_demos`` plus ``sft.augment`` symmetry copies of each reach demo."""
    return augment_demos(gather_demos(cfg, per_task, offset), cfg.sft.augment, seed=cfg.train.seed + offset)


def augment_demos(demos: list[Demo], copies: int, seed: int = 0, scale: tuple[float, float] = (0.5, 1.5)) -> list[Demo]:
    """The demonstrations plus ``copies`` symmetry-transformed copies of each FetchReach demo.

    Reaching in free space looks the same under a rotation about the start position and (roughly) under
    scaling the displacement: a copy maps positions ``p -> p0 + s R (p - p0)`` (gripper, goal), velocities
    and goal-relative vectors ``v -> s R v`` and the xyz actions ``a -> clip(s R a)`` with a random 3-D
    rotation R and scale s. It is a prior about the task, not new demonstrations: no expert, no
    simulator. Push and pick-and-place demos (an object on a table) are kept as they are."""
    rng = np.random.default_rng(seed)
    out = list(demos)
    for d in demos:
        if d.task != "reach":
            continue
        p0 = d.states[0, 0:3].copy()
        for _ in range(copies):
            q, r = np.linalg.qr(rng.normal(size=(3, 3)))
            rot = q * np.sign(np.diag(r))  # uniform over O(3): reflections too
            sc = rng.uniform(*scale)
            st = d.states.copy()
            for sl in (slice(0, 3), slice(25, 28)):  # gripper and goal positions
                st[:, sl] = p0 + sc * (d.states[:, sl] - p0) @ rot.T
            for sl in (slice(5, 8), slice(28, 31)):  # gripper velocity, goal - gripper
                st[:, sl] = sc * d.states[:, sl] @ rot.T
            act = d.actions.copy()
            act[..., :3] = np.clip(sc * d.actions[..., :3] @ rot.T, -1.0, 1.0)
            out.append(Demo(d.task, d.seed, st.astype(np.float32), d.images, act.astype(np.float32), d.finish_step,
                            d.success))
    return out


def demo_rollouts(demos: list[Demo], policy: VLAPolicy, tok: ActionTokenizer, max_steps: int) -> Rollouts:
    """Demonstrations as trajectory rows (same layout as rollouts, reward 1, rollout_logp 0)."""
    n_max = -(-max_steps // policy.config.chunk_len)
    e, tpc = len(demos), policy.config.tokens_per_call
    tokens = torch.zeros((e, n_max, tpc), dtype=torch.long)
    states = torch.zeros((e, n_max, policy.config.state_dim))
    images = None
    if demos and demos[0].images is not None:
        h = demos[0].images.shape[1]
        images = torch.zeros((e, n_max, h, h, 3), dtype=torch.uint8)
    for i, d in enumerate(demos):
        c = len(d.actions)
        tokens[i, :c] = torch.from_numpy(tok.encode(d.actions).reshape(c, tpc))
        states[i, :c] = torch.from_numpy(d.states)
        if images is not None:
            images[i, :c] = torch.from_numpy(d.images)
    traj = Trajectories([(d.task, d.seed) for d in demos], tokens, torch.zeros((e, n_max, tpc)), states, images,
                        torch.tensor([len(d.actions) for d in demos]), torch.tensor([d.finish_step for d in demos]),
                        torch.tensor([d.success for d in demos]))
    return to_rollouts(traj, policy, torch.arange(e), max_steps)


def make_optimizer(policy: torch.nn.Module, lr: float, cfg: VLARunConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(policy.parameters(), lr=lr, betas=tuple(cfg.train.betas), eps=1e-8,
                             weight_decay=cfg.train.weight_decay)


def _step(policy, opt, clip: float) -> float:
    gn = torch.nn.utils.clip_grad_norm_(policy.parameters(), clip if clip > 0 else float("inf"))
    opt.step()
    return float(gn)


def sft(policy: VLAPolicy, rows: Rollouts, steps: int, opt: torch.optim.Optimizer, cfg: VLARunConfig,
        temperature: float = 1.0) -> list[float]:
    """Behaviour cloning with the ``sft`` recipe's loss (token-mean NLL), full batch per step."""
    recipe = make_recipe({"name": "sft", "loss_agg": "token-mean"})
    mask = rows.loss_mask.float()
    norm = Norm(num_tokens=float(mask.sum()), num_seqs=float(len(rows)), loss_scale_factor=1.0, batch=rows)
    policy.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        logp, _ = policy.sequence_logprobs(rows, temperature=temperature)
        loss, _ = recipe.loss(rows, ForwardOut(logp=logp), norm)
        loss.backward()
        _step(policy, opt, cfg.train.grad_clip)
        losses.append(loss.item())
    return losses


def grpo_update(policy: VLAPolicy, opt: torch.optim.Optimizer, recipe: Recipe, batch: Rollouts, cfg: VLARunConfig,
                step: int = 0) -> dict[str, float]:
    """One learner step on a collected batch: ``recipe.prepare`` then mini-batches of whole groups,
    each split into row slices whose losses share the mini-batch's token count (exact token mean)."""
    t = cfg.train
    temp = cfg.rollout.temperature

    @torch.no_grad()
    def forward(b: Rollouts) -> ForwardOut:
        lp, ent, hid = policy.sequence_logprobs(b, temperature=temp, with_entropy=True, return_hidden=True)
        return ForwardOut(logp=lp, entropy=ent, hidden=hid)

    def no_demos(_idx):
        raise ValueError("embodied runs have no text demonstrations; pick a recipe without demo rows")

    ctx = StepContext(forward=forward, demo_rows=no_demos, tasks=[], step=step, max_new_tokens=batch.response_ids.shape[1])
    batch = recipe.prepare(batch, ctx)
    active = recipe.row_active(batch)
    _, gsize = torch.unique_consecutive(batch.group_ids, return_counts=True)
    gstart = torch.cat([gsize.new_zeros(1), gsize.cumsum(0)])
    chunks = [(int(gstart[g[0]]), int(gstart[g[-1] + 1])) for g in torch.arange(len(gsize)).tensor_split(t.mini_batches)
              if len(g)]
    policy.train()
    metrics: dict[str, float] = {}
    gn = float("nan")
    for _ in range(t.epochs):
        for s, e in chunks:
            rows = torch.arange(s, e)
            mb_all = batch.select(rows)
            mask = mb_all.loss_mask.float()
            norm = Norm(num_tokens=float(mask.sum()), num_seqs=float((mask.sum(1) > 0).sum()),
                        loss_scale_factor=float(batch.response_ids.shape[1]), batch=mb_all)
            act = rows[active[rows]]
            opt.zero_grad(set_to_none=True)
            for m in slice_loss(policy, recipe, batch, act, norm, temp, t.micro_batch):
                for k, v in m.items():
                    metrics[k] = v
            gn = _step(policy, opt, t.grad_clip)
    metrics["actor/grad_norm"] = gn
    metrics["batch/active_frac"] = float(active.float().mean()) if len(active) else 0.0
    return metrics


def slice_loss(policy, recipe: Recipe, batch: Rollouts, rows: torch.Tensor, norm: Norm, temperature: float,
               micro_batch: int) -> list[dict[str, float]]:
    """Backward the loss of ``rows`` in slices of ``micro_batch`` rows (0 = one slice); with the
    mini-batch's ``norm`` the slices' gradients sum to the unsliced gradient (tested)."""
    out = []
    step = micro_batch or max(len(rows), 1)
    for i in range(0, len(rows), step):
        mb = batch.select(rows[i: i + step]).trim()
        lp, ent = policy.sequence_logprobs(mb, temperature=temperature, with_entropy=recipe.needs_entropy())
        loss, m = recipe.loss(mb, ForwardOut(logp=lp, entropy=ent), norm)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)}; lower train.lr")
        loss.backward()
        out.append({**m, "actor/loss": loss.item()})
    return out


def held_out_inits(cfg: VLARunConfig, tasks: list[str] | None = None) -> list[tuple[str, int]]:
    return [(t, cfg.eval.seed_base + i) for t in (tasks or cfg.env.tasks) for i in range(cfg.eval.states_per_task)]


def evaluate(policy: VLAPolicy, pool: EnvPool, tok: ActionTokenizer, inits: list[tuple[str, int]],
             record: bool = False) -> tuple[dict[str, float], Trajectories]:
    """Greedy success per task on fixed initial states (and ``all``)."""
    traj = run_episodes(policy, pool, inits, tok, greedy=True, record=record)
    out: dict[str, float] = {}
    for task in dict.fromkeys(t for t, _ in inits):
        sel = torch.tensor([t == task for t, _ in inits])
        out[task] = float(traj.success[sel].float().mean())
    out["all"] = float(traj.success.float().mean())
    return out, traj


def rl_loop(policy: VLAPolicy, tok: ActionTokenizer, pool: EnvPool, cfg: VLARunConfig, rng: torch.Generator,
            log=print) -> list[dict[str, float]]:
    """``train.steps`` GRPO steps: the rollout stage collects, ``grpo_update`` learns; per-step metrics."""
    from reasonrl.embodied.stage import VLARolloutStage

    stage = VLARolloutStage(policy, pool, tok, cfg)
    recipe = make_recipe(cfg.algorithm)
    opt = make_optimizer(policy, cfg.train.lr, cfg)
    history = []
    for step in range(cfg.train.steps):
        col = stage.collect(cfg.rollout.groups_per_step, rng)
        m = dict(col.metrics)
        t0 = time.perf_counter()
        m["train/updates"] = 0
        if col.batch is not None and len(col.batch):
            m.update(grpo_update(policy, opt, recipe, col.batch, cfg, step))
            m["train/updates"] = cfg.train.epochs * cfg.train.mini_batches
        m["time/learner_s"] = time.perf_counter() - t0
        m["step"] = step + 1
        history.append(m)
        log(f"step {step + 1}: sampled success {m['reward/accuracy']:.3f}, kept groups {m['batch/kept_groups']}, "
            f"env steps/s {m['perf/env_steps_per_s']:.0f}")
    return history


def train(cfg: VLARunConfig, log=print) -> dict:
    """SFT warm start from scripted demonstrations, then ``train.steps`` GRPO steps; writes ``cfg.out``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    demos = sft_demos(cfg, cfg.sft.demos_per_task)
    policy, tok = build_policy(cfg, demos)
    rng = torch.Generator().manual_seed(cfg.train.seed)
    summary: dict = {"config": cfg.model_dump()}
    with EnvPool(cfg.env.n_workers, cfg.env.image_size, cfg.env.max_steps) as pool:
        if not cfg.policy.path and cfg.sft.steps:
            sft(policy, demo_rollouts(demos, policy, tok, cfg.env.max_steps), cfg.sft.steps,
                make_optimizer(policy, cfg.sft.lr, cfg), cfg)
        inits = held_out_inits(cfg)
        summary["before"], _ = evaluate(policy, pool, tok, inits)
        log(f"held-out success before RL: {summary['before']}")
        history = rl_loop(policy, tok, pool, cfg, rng, log)
        summary["after"], _ = evaluate(policy, pool, tok, inits)
        log(f"held-out success after RL: {summary['after']}")
    summary["history"] = history
    policy.save_pretrained(out / "final")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m reasonrl.embodied.train [config.yaml] [section.field=value ...]``."""
    import sys

    from reasonrl.embodied.config import load_vla_config
    from reasonrl.threads import apply_thread_policy

    args = list(sys.argv[1:] if argv is None else argv)
    path = args.pop(0) if args and "=" not in args[0] else None
    apply_thread_policy(None)
    train(load_vla_config(path, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
