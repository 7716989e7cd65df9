"""Trajectory rollouts: batched policy calls across environments, chunk execution, early stop.

A trajectory is ONE row of ``Rollouts`` (so GRPO's group statistics are per trajectory, as in
SimpleVLA-RL): its response is the concatenation of every policy call's action tokens, its prompt is
the instruction, and the per-call observations ride along in ``extras`` so the policy's
``sequence_logprobs`` can recompute each call. The reward is the binary success flag; the loss mask
is the finish-step mask (tokens of env steps never executed are 0).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from reasonrl.batch import Rollouts
from reasonrl.embodied.actions import ActionTokenizer, finish_step_mask, unchunk_tokens
from reasonrl.embodied.envs import TASKS, EnvPool


@dataclass
class Trajectories:
    inits: list[tuple[str, int]]
    tokens: torch.Tensor  # (E, C, tokens_per_call) long
    logp: torch.Tensor  # (E, C, tokens_per_call) rollout log-probs (temperature-scaled)
    states: torch.Tensor  # (E, C, STATE_DIM) observation at each call
    images: torch.Tensor | None  # (E, C, H, W, 3) uint8
    n_calls: torch.Tensor  # (E,)
    finish_step: torch.Tensor  # (E,) env steps executed
    success: torch.Tensor  # (E,) bool
    frames: list[list[np.ndarray]] | None = None
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def env_steps(self) -> int:
        return int(self.finish_step.sum())


def run_episodes(policy, pool: EnvPool, inits: list[tuple[str, int]], tok: ActionTokenizer, *, temperature: float = 1.0,
                 greedy: bool = False, generator: torch.Generator | None = None, record: bool = False) -> Trajectories:
    """Run one episode per initial state; every still-running env gets one batched policy call per chunk."""
    cfg = policy.config
    e, tpc, chunk = len(inits), cfg.tokens_per_call, cfg.chunk_len
    n_max = math.ceil(pool.max_steps / chunk)
    tokens = torch.zeros((e, n_max, tpc), dtype=torch.long)
    logp = torch.zeros((e, n_max, tpc))
    states = torch.zeros((e, n_max, cfg.state_dim))
    images = torch.zeros((e, n_max, pool.image_size, pool.image_size, 3), dtype=torch.uint8) if pool.image_size else None
    n_calls = torch.zeros(e, dtype=torch.long)
    finish = torch.zeros(e, dtype=torch.long)
    success = torch.zeros(e, dtype=torch.bool)
    frames: list[list[np.ndarray]] | None = [[] for _ in range(e)] if record else None
    instr, imask = policy.instruction_batch([TASKS[t].instruction for t, _ in inits])
    t_wall = time.perf_counter()
    obs = pool.reset(inits)
    timing = {"env_wall_s": time.perf_counter() - t_wall, "env_step_s": 0.0, "render_s": 0.0, "policy_s": 0.0}
    active = list(range(e))
    was_training = policy.training
    policy.eval()
    try:
        for c in range(n_max):
            if not active:
                break
            idx = torch.tensor(active)
            states[idx, c] = torch.from_numpy(np.stack([obs[i].state for i in active]))
            img = None
            if images is not None:
                images[idx, c] = torch.from_numpy(np.stack([obs[i].image for i in active]))
                img = images[idx, c]
            t0 = time.perf_counter()
            tk, lp = policy.act(instr[idx], imask[idx], states[idx, c], img, temperature, greedy, generator)
            timing["policy_s"] += time.perf_counter() - t0
            tokens[idx, c], logp[idx, c] = tk.cpu(), lp.float().cpu()
            actions = tok.decode(unchunk_tokens(tk.cpu().numpy(), cfg.action_dim))
            t0 = time.perf_counter()
            res = pool.step({i: actions[k] for k, i in enumerate(active)}, record)
            timing["env_wall_s"] += time.perf_counter() - t0
            still = []
            for i in active:
                r = res[i]
                n_calls[i] = c + 1
                finish[i] += r.executed
                success[i] = r.success
                obs[i] = r.obs
                timing["env_step_s"] += r.step_s
                timing["render_s"] += r.render_s
                if record:
                    frames[i].extend(r.frames)
                if not r.done:
                    still.append(i)
            active = still
    finally:
        policy.train(was_training)
    return Trajectories(list(inits), tokens, logp, states, images, n_calls, finish, success, frames, timing)


def to_rollouts(traj: Trajectories, policy, group_ids: torch.Tensor, max_steps: int) -> Rollouts:
    """One row per trajectory, in the text layout the recipes consume (see the module docstring)."""
    e, n_max, tpc = traj.tokens.shape
    width = n_max * tpc
    prompt_ids, prompt_mask = policy.instruction_batch([TASKS[t].instruction for t, _ in traj.inits])
    mask = finish_step_mask(traj.finish_step, policy.config.action_dim, width)
    resp = traj.tokens.view(e, width) * mask.long()
    extras = {"vla_state": traj.states}
    if traj.images is not None:
        extras["vla_image"] = traj.images
    succ = traj.success.tolist()
    return Rollouts(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=resp, loss_mask=mask,
        rollout_logp=traj.logp.view(e, width) * mask, group_ids=group_ids.clone(),
        task_index=group_ids.tolist(),
        response_text=[f"{t} seed={s} success={int(ok)} steps={int(f)}"
                       for (t, s), ok, f in zip(traj.inits, succ, traj.finish_step.tolist())],
        truncated=(~traj.success) & (traj.finish_step >= max_steps),
        rewards=traj.success.float(), extras=extras,
        info={"correct": succ, "task": [t for t, _ in traj.inits], "seed": [s for _, s in traj.inits]})


def success_rate_filter(success: torch.Tensor, group_ids: torch.Tensor, low: float = 0.1,
                        high: float = 0.9) -> torch.Tensor:
    """Row indices of groups whose success rate lies in ``[low, high]`` (SimpleVLA-RL's dynamic
    sampling: with 8 samples and [0.1, 0.9], a group needs at least one success and one failure)."""
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    rate = torch.zeros(len(uniq)).index_add_(0, inv, success.float()) / torch.bincount(inv, minlength=len(uniq)).float()
    keep = (rate >= low - 1e-9) & (rate <= high + 1e-9)
    return keep[inv].nonzero().flatten()
