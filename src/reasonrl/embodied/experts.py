"""Scripted experts for the Fetch tasks: the demonstrations behind the few-demo SFT warm start.

Each expert maps the state vector (``envs.state_vector``) to one action, closed loop per step.
Demonstrations are recorded in the policy's own format: the observation at every chunk start plus
the chunk of actions that followed it, exactly what a rollout stores, so SFT and RL rows share one
layout. Only successful episodes are kept as demonstrations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reasonrl.embodied.envs import FetchEpisode, Obs


def _toward(grip: np.ndarray, target: np.ndarray, gain: float = 12.0) -> np.ndarray:
    return np.clip(gain * (target - grip), -1.0, 1.0)


def expert_action(task: str, s: np.ndarray) -> np.ndarray:
    grip, obj, width, goal = s[0:3], s[3:6], s[9] + s[10], s[25:28]
    a = np.zeros(4, dtype=np.float32)
    if task == "reach":  # a smooth, human-paced reach (~7 steps from 15 cm), not a 2-step jump
        a[:3] = _toward(grip, goal, gain=5.0)
        return a
    if task == "push":
        d = goal[:2] - obj[:2]
        d = d / (np.linalg.norm(d) + 1e-6)
        rel = obj[:2] - grip[:2]
        along, lateral = float(rel @ d), float(abs(rel[0] * d[1] - rel[1] * d[0]))
        low = grip[2] < obj[2] + 0.02
        if low and 0.0 < along < 0.09 and lateral < 0.02:  # behind the block and aligned: push
            tgt = np.array([goal[0] - 0.04 * d[0], goal[1] - 0.04 * d[1], obj[2]])
            a[:3] = _toward(grip, tgt, gain=8.0)
        else:
            behind = np.array([obj[0] - 0.06 * d[0], obj[1] - 0.06 * d[1], obj[2]])
            if np.linalg.norm(grip[:2] - behind[:2]) > 0.015:  # travel above the block's height
                a[:3] = _toward(grip, behind + np.array([0, 0, 0.06]))
            else:
                a[:3] = _toward(grip, behind)
        a[3] = -1.0
        return a
    if task == "pick_place":
        held = np.linalg.norm(grip - obj) < 0.02 and width < 0.06
        if held:
            a[:3] = _toward(grip, goal)
            a[3] = -1.0
        elif np.linalg.norm(grip[:2] - obj[:2]) > 0.01:
            a[:3] = _toward(grip, obj + np.array([0, 0, 0.05]))
            a[3] = 1.0
        elif np.linalg.norm(grip - obj) > 0.01:
            a[:3] = _toward(grip, obj)
            a[3] = 1.0
        else:
            a[3] = -1.0
        return a
    raise ValueError(f"no scripted expert for task {task!r}; valid: reach, push, pick_place")


@dataclass
class Demo:
    task: str
    seed: int
    states: np.ndarray  # (C, STATE_DIM): observation at each chunk start
    images: np.ndarray | None  # (C, H, W, 3) uint8
    actions: np.ndarray  # (C, chunk_len, ACTION_DIM); steps after the last executed one are zeros
    finish_step: int
    success: bool


def record_demo(task: str, seed: int, chunk_len: int, max_steps: int, image_size: int = 0,
                env: FetchEpisode | None = None) -> Demo:
    """Run the expert from initial state ``(task, seed)``, stepping one action at a time."""
    own = env is None
    env = env or FetchEpisode(task, image_size, max_steps)
    try:
        obs: Obs = env.reset(seed)
        states, images, chunks = [], [], []
        done, success = False, False
        while not done:
            states.append(obs.state)
            images.append(obs.image)
            chunk = np.zeros((chunk_len, 4), dtype=np.float32)
            for j in range(chunk_len):
                chunk[j] = expert_action(task, obs.state)
                r = env.run_chunk(chunk[j: j + 1])
                obs, done, success = r.obs, r.done, r.success
                if done:
                    break
            chunks.append(chunk)
        return Demo(task, seed, np.stack(states), np.stack(images) if image_size else None, np.stack(chunks),
                    env.steps, success)
    finally:
        if own:
            env.close()


def collect_demos(task: str, n: int, seeds, chunk_len: int, max_steps: int, image_size: int = 0) -> list[Demo]:
    """The first ``n`` successful expert episodes over ``seeds`` (an iterable of initial-state seeds)."""
    env = FetchEpisode(task, image_size, max_steps)
    out: list[Demo] = []
    tried = 0
    try:
        for seed in seeds:
            if len(out) >= n:
                break
            tried += 1
            d = record_demo(task, int(seed), chunk_len, max_steps, image_size, env)
            if d.success:
                out.append(d)
    finally:
        env.close()
    if len(out) < n:
        raise RuntimeError(f"the {task} expert succeeded on only {len(out)} of {tried} initial states; "
                           f"need {n} demonstrations (offer more seeds)")
    return out
