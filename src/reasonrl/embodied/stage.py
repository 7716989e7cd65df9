"""The embodied rollout stage: ``collect(n_groups, rng) -> Collected`` over Fetch environments.

Plugs into the trainer through the rollout-stage seam (no branch in the trainer loop): each group is
``rollout.n`` trajectories from one stored initial state, dynamic sampling keeps groups whose success
rate lies in ``[accuracy_low, accuracy_high]`` and samples new initial states until ``n_groups``
groups are kept or ``max_rounds`` rounds ran (then it returns what it has and says so in metrics).
"""

from __future__ import annotations

import time

import torch

from reasonrl.batch import Rollouts, concat
from reasonrl.embodied.actions import ActionTokenizer
from reasonrl.embodied.config import VLARunConfig
from reasonrl.embodied.envs import EnvPool
from reasonrl.embodied.rollout import run_episodes, success_rate_filter, to_rollouts

from reasonrl.rollout.stage import Collected
from reasonrl.tasks.base import Task


def init_task(task: str, seed: int) -> Task:
    """An initial state as the trainer's ``Task`` (uid, instruction as prompt; the verifier is the env)."""
    from reasonrl.embodied.envs import TASKS

    return Task(uid=f"{task}:{seed}", prompt=TASKS[task].instruction, answer="success", verifier="env",
                meta={"task": task, "seed": int(seed)})


class VLARolloutStage:
    def __init__(self, policy, pool: EnvPool, tokenizer: ActionTokenizer, cfg: VLARunConfig):
        self.policy, self.pool, self.tok, self.cfg = policy, pool, tokenizer, cfg

    def load_weights(self, model) -> None:
        self.policy = model

    def sample_inits(self, n_groups: int, rng: torch.Generator | None) -> list[tuple[str, int]]:
        """Training initial states: a random task and a seed below the held-out range, per group."""
        tasks = self.cfg.env.tasks
        t = torch.randint(0, len(tasks), (n_groups,), generator=rng).tolist()
        s = torch.randint(0, self.cfg.eval.seed_base, (n_groups,), generator=rng).tolist()
        return [(tasks[i], int(seed)) for i, seed in zip(t, s)]

    def collect(self, n_groups: int, rng: torch.Generator | None = None) -> Collected:
        r = self.cfg.rollout
        kept: list[Rollouts] = []
        tasks: list[Task] = []
        have, rounds = 0, 0
        stats = {"success": [], "zero_var": 0.0, "groups": 0, "env_steps": 0}
        timing = {"env_wall_s": 0.0, "env_step_s": 0.0, "render_s": 0.0, "policy_s": 0.0}
        t0 = time.perf_counter()
        while have < n_groups and rounds < r.max_rounds:
            rounds += 1
            inits = self.sample_inits(n_groups, rng)
            episodes = [init for init in inits for _ in range(r.n)]
            traj = run_episodes(self.policy, self.pool, episodes, self.tok, temperature=r.temperature, generator=rng)
            gids = torch.arange(len(tasks), len(tasks) + n_groups).repeat_interleave(r.n)
            ro = to_rollouts(traj, self.policy, gids, self.pool.max_steps)
            stats["success"] += traj.success.float().tolist()
            rate = traj.success.float().view(n_groups, r.n).mean(1)
            stats["zero_var"] += float(((rate == 0) | (rate == 1)).sum())
            stats["groups"] += n_groups
            stats["env_steps"] += traj.env_steps
            for k in timing:
                timing[k] += traj.timing[k]
            tasks.extend(init_task(t, s) for t, s in inits)
            ro = ro.select(success_rate_filter(ro.rewards, ro.group_ids, r.accuracy_low, r.accuracy_high))
            room = (n_groups - have) * r.n
            ro = ro.select(list(range(min(len(ro), room))))
            have += len(ro) // r.n
            kept.append(ro)
        batch = concat(kept, 0) if kept else None
        wall = time.perf_counter() - t0
        acc = sum(stats["success"]) / max(1, len(stats["success"]))
        metrics = {"reward/accuracy": acc, "reward/mean": acc,
                   "response/length_mean": float(batch.response_valid.sum(1).float().mean()) if batch is not None else 0.0,
                   "batch/zero_var_frac": stats["zero_var"] / max(1, stats["groups"]), "batch/gen_rounds": rounds,
                   "batch/kept_groups": have, "env/steps": stats["env_steps"],
                   "perf/env_steps_per_s": stats["env_steps"] / max(wall, 1e-9),
                   "time/rollout_s": wall, **{f"time/{k}": v for k, v in timing.items()}}
        return Collected(batch=batch, tasks=tasks, metrics=metrics)


    # ---------------------------------------------------------------- the trainer's optional stage hooks
    def heldout_tasks(self) -> list[Task]:
        """The fixed held-out initial states, as tasks (the trainer hashes them into its evaluation key)."""
        from reasonrl.embodied.train import held_out_inits

        return [init_task(t, s) for t, s in held_out_inits(self.cfg)]

    def evaluate(self, model) -> tuple[dict[str, float], list[bool]]:
        """Greedy success on the held-out initial states: ``pass@1`` (all tasks) and ``success/<task>``,
        plus per-state correctness for the trainer's paired before/after test. Deterministic (greedy),
        so it draws nothing from the training RNG streams."""
        from reasonrl.embodied.train import evaluate, held_out_inits

        inits = held_out_inits(self.cfg)
        ev, traj = evaluate(model, self.pool, self.tok, inits)
        out = {"pass@1": ev.pop("all"), **{f"success/{k}": v for k, v in ev.items()},
               "env_steps_mean": float(traj.finish_step.float().mean())}
        self.write_strip(model, inits)
        return out, traj.success.tolist()

    def write_strip(self, model, inits: list[tuple[str, int]]) -> None:
        """``<out>/episodes/before.png`` at the first evaluation of a run, ``after.png`` at every later one
        (the last is the final policy), each with a GIF; ``report.html`` shows them."""
        from pathlib import Path

        from reasonrl.embodied.episodes import record_episodes, save_strip

        e = self.cfg.eval
        if not e.strip_episodes:
            return
        d = Path(self.cfg.out) / "episodes"
        name = "after" if (d / "before.png").exists() else "before"
        k = max(1, e.strip_episodes // len(self.cfg.env.tasks))  # the first states of each task
        by_task = [x for t in self.cfg.env.tasks for x in [i for i in inits if i[0] == t][:k]]
        save_strip(record_episodes(model, self.tok, by_task, self.cfg.env.max_steps, e.strip_size), d / f"{name}.png")

    def close(self) -> None:
        self.pool.close()


def make_vla_stage(cfg, model, tokenizer, scorer) -> VLARolloutStage:
    """Mode factory ``(cfg, model, tokenizer, scorer) -> RolloutStage`` for the trainer's mode registry.

    ``cfg`` is a trainer ``Config`` (its ``embodied:`` section plus rollout/trainer/algorithm,
    ``config.from_trainer_config``), a ``VLARunConfig`` or its dict; ``tokenizer`` is the action tokenizer (the
    policy carries its instruction vocabulary); the environment's success flag is the scorer.
    """
    from reasonrl.embodied.config import from_trainer_config

    if isinstance(cfg, dict):
        cfg = VLARunConfig.model_validate(cfg)
    run_cfg = cfg if isinstance(cfg, VLARunConfig) else from_trainer_config(cfg)
    if not isinstance(tokenizer, ActionTokenizer):
        c = model.config
        tokenizer = ActionTokenizer(c.action_low, c.action_high, c.n_bins)
    pool = EnvPool(run_cfg.env.n_workers, run_cfg.env.image_size, run_cfg.env.max_steps)
    return VLARolloutStage(model, pool, tokenizer, run_cfg)


def build_vla_model(cfg, log=print, warm_start: bool = True):
    """Mode ``vla``'s policy builder (``reasonrl.modes``): a fresh policy (or ``embodied.policy.path``) and
    its action tokenizer, warm-started by behaviour cloning on ``embodied.sft.demos_per_task`` scripted
    demonstrations per task. ``warm_start=False`` (the trainer passes it when the run will resume from a committed
    checkpoint, whose weights replace the policy right after) skips the behaviour cloning: the fresh policy only
    fixes the architecture."""
    from reasonrl.embodied import train as T
    from reasonrl.embodied.config import from_trainer_config

    run_cfg = from_trainer_config(cfg)
    demos = T.sft_demos(run_cfg, run_cfg.sft.demos_per_task)
    policy, tok = T.build_policy(run_cfg, demos)
    if not warm_start:
        log("vla: resuming from a committed checkpoint; behaviour-cloning warm start skipped")
    elif not run_cfg.policy.path and run_cfg.sft.steps:
        rows = T.demo_rollouts(demos, policy, tok, run_cfg.env.max_steps)
        losses = T.sft(policy, rows, run_cfg.sft.steps, T.make_optimizer(policy, run_cfg.sft.lr, run_cfg), run_cfg)
        log(f"vla: behaviour cloning on {len(demos)} demonstration(s), {run_cfg.sft.steps} steps, loss {losses[-1]:.3f}")
    return policy, tok

