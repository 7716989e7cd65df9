"""Environment layer: Fetch manipulation tasks behind the gymnasium API, N worker processes.

An *initial state* is ``(task, seed)``: gymnasium-robotics' ``reset(seed=...)`` is deterministic, so
the pair names one stored start (robot pose, object and goal placement) and held-out evaluation uses
a fixed list of them. Episodes run in *chunks*: the policy emits ``chunk_len`` actions, the
environment executes them one by one and stops early on success (SimpleVLA-RL's done-on-success) or
at ``max_steps``. Each chunk returns the next observation and per-chunk timings.

This module imports no torch: worker processes only need numpy, gymnasium and MuJoCo. Rendering is
headless (EGL by default, OSMesa if ``MUJOCO_GL=osmesa``); frames are rendered once per chunk (the
observation the policy sees), not per physics step.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field

import numpy as np

STATE_DIM = 31  # Fetch observation padded to 25 (Push/PickAndPlace size) + desired goal (3) + goal - gripper (3)
ACTION_DIM = 4  # dx, dy, dz (scaled by 0.05 m inside the env), gripper


@dataclass(frozen=True)
class TaskSpec:
    env_id: str
    instruction: str


TASKS: dict[str, TaskSpec] = {
    "reach": TaskSpec("FetchReach-v4", "move the gripper to the red target"),
    "push": TaskSpec("FetchPush-v4", "push the block to the red target"),
    "pick_place": TaskSpec("FetchPickAndPlace-v4", "pick up the block and put it on the red target"),
}


def setup_headless() -> None:
    """Pick a headless OpenGL backend before MuJoCo loads (EGL works with the base image's Mesa)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def require_fetch() -> None:
    """One clear error when the simulator is missing, naming the fix."""
    try:
        import gymnasium_robotics  # noqa: F401
        import mujoco  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"embodied tasks need MuJoCo and gymnasium-robotics ({e}); install them with "
            "`pip install -e '.[embodied]'` (pins mujoco==3.3.7: newer MuJoCo breaks gymnasium-robotics 1.4)") from None


def state_vector(obs: dict) -> np.ndarray:
    """Fetch dict observation -> fixed-size float32 vector: observation zero-padded to 25, the goal, and
    the goal relative to the gripper (the usual goal-conditioned feature; the object's position relative
    to the gripper is already inside Push/PickAndPlace observations)."""
    o = np.asarray(obs["observation"], dtype=np.float32)
    out = np.zeros(STATE_DIM, dtype=np.float32)
    out[: len(o)] = o
    out[25:28] = obs["desired_goal"]
    out[28:31] = out[25:28] - o[:3]
    return out


@dataclass
class Obs:
    state: np.ndarray  # (STATE_DIM,)
    image: np.ndarray | None  # (H, W, 3) uint8 when rendering


@dataclass
class ChunkResult:
    obs: Obs  # observation after the chunk (what the next policy call sees)
    executed: int  # actions of the chunk actually executed (early stop on success / step limit)
    success: bool
    done: bool  # success or step limit reached
    step_s: float  # physics time of this chunk
    render_s: float
    frames: list[np.ndarray] = field(default_factory=list)  # one per executed step when recording


class FetchEpisode:
    """One environment instance plus the running episode's counters."""

    def __init__(self, task: str, image_size: int, max_steps: int):
        setup_headless()
        import gymnasium as gym
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
        kw = {"render_mode": "rgb_array", "width": image_size, "height": image_size} if image_size else {}
        self.env = gym.make(TASKS[task].env_id, max_episode_steps=max_steps, **kw)
        self.task, self.image_size, self.max_steps = task, image_size, max_steps
        self.steps = 0

    def _obs(self, raw: dict) -> tuple[Obs, float]:
        t0 = time.perf_counter()
        img = self.env.render() if self.image_size else None
        return Obs(state_vector(raw), img), time.perf_counter() - t0

    def reset(self, seed: int) -> Obs:
        raw, _ = self.env.reset(seed=int(seed))
        self.steps = 0
        return self._obs(raw)[0]

    def run_chunk(self, actions: np.ndarray, record: bool = False) -> ChunkResult:
        step_s, success, executed, frames, raw = 0.0, False, 0, [], None
        for a in np.asarray(actions, dtype=np.float32):
            t0 = time.perf_counter()
            raw, _, _, _, info = self.env.step(np.clip(a, -1.0, 1.0))
            step_s += time.perf_counter() - t0
            executed += 1
            self.steps += 1
            if record:
                frames.append(self.env.render() if self.image_size else None)
            success = bool(info.get("is_success", 0.0))
            if success or self.steps >= self.max_steps:
                break
        obs, render_s = self._obs(raw)
        return ChunkResult(obs, executed, success, success or self.steps >= self.max_steps, step_s, render_s, frames)

    def close(self) -> None:
        self.env.close()


class _Slots:
    """The environments one process owns: slot -> episode, with idle envs reused per task."""

    def __init__(self, image_size: int, max_steps: int):
        self.image_size, self.max_steps = image_size, max_steps
        self.active: dict[int, FetchEpisode] = {}
        self.idle: dict[str, list[FetchEpisode]] = {}

    def reset(self, inits: dict[int, tuple[str, int]]) -> dict[int, Obs]:
        for ep in self.active.values():
            self.idle.setdefault(ep.task, []).append(ep)
        self.active = {}
        out = {}
        for slot, (task, seed) in inits.items():
            pool = self.idle.get(task) or []
            ep = pool.pop() if pool else FetchEpisode(task, self.image_size, self.max_steps)
            self.active[slot] = ep
            out[slot] = ep.reset(seed)
        return out

    def step(self, chunks: dict[int, np.ndarray], record: bool) -> dict[int, ChunkResult]:
        return {slot: self.active[slot].run_chunk(a, record) for slot, a in chunks.items()}

    def close(self) -> None:
        for ep in list(self.active.values()) + [e for v in self.idle.values() for e in v]:
            ep.close()
        self.active, self.idle = {}, {}


def _worker(conn, image_size: int, max_steps: int) -> None:
    serve_slots(conn, _Slots(image_size, max_steps))


def serve_slots(conn, slots) -> None:
    """A worker process's loop: answer ``reset``/``step`` commands from the pool with ``slots`` until ``close``
    (shared by every environment kind built on ``EnvPool``)."""
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "reset":
                conn.send(slots.reset(arg))
            elif cmd == "step":
                conn.send(slots.step(*arg))
            elif cmd == "close":
                break
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        slots.close()
        conn.close()


class EnvPool:
    """Episodes spread over ``n_workers`` processes (0 = step in this process, the reference path).

    ``reset`` assigns slot i to worker ``i % n_workers``; ``step`` sends each worker its slots' chunks
    at once and gathers the results, so all workers simulate in parallel while the policy waits.
    Results are keyed by slot and do not depend on the number of workers.
    """

    def __init__(self, n_workers: int = 0, image_size: int = 0, max_steps: int = 50):
        require_fetch()
        self.n_workers, self.image_size, self.max_steps = n_workers, image_size, max_steps
        self._local = _Slots(image_size, max_steps) if n_workers == 0 else None
        self._procs, self._conns = [], []
        if n_workers:
            ctx = mp.get_context("spawn")  # no inherited torch threads or GL contexts
            setup_headless()
            for _ in range(n_workers):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker, args=(child, image_size, max_steps), daemon=True)
                p.start()
                child.close()
                self._procs.append(p)
                self._conns.append(parent)

    def _scatter(self, items: dict[int, object]) -> list[dict[int, object]]:
        parts: list[dict[int, object]] = [{} for _ in range(max(1, self.n_workers))]
        for slot, v in items.items():
            parts[slot % len(parts)][slot] = v
        return parts

    def _call(self, cmd: str, parts: list[dict[int, object]], extra: tuple = ()) -> dict[int, object]:
        if self._local is not None:
            fn = self._local.reset if cmd == "reset" else self._local.step
            return fn(parts[0], *extra)
        if not self._conns:
            raise RuntimeError("this EnvPool is closed (its run ended and its worker processes exited); "
                               "build a new pool or stage to step environments again")
        busy = [(c, p) for c, p in zip(self._conns, parts) if p]
        for c, p in busy:
            c.send((cmd, p if cmd == "reset" else (p, *extra)))
        out: dict[int, object] = {}
        for c, _ in busy:
            out.update(c.recv())
        return out

    def reset(self, inits: list[tuple[str, int]]) -> list[Obs]:
        res = self._call("reset", self._scatter(dict(enumerate(inits))))
        return [res[i] for i in range(len(inits))]

    def step(self, chunks: dict[int, np.ndarray], record: bool = False) -> dict[int, ChunkResult]:
        return self._call("step", self._scatter(chunks), (record,))

    @property
    def live_workers(self) -> int:
        """Worker processes still running (0 after ``close``)."""
        return sum(p.is_alive() for p in self._procs)

    def close(self) -> None:
        """Stop the workers (idempotent; the trainer calls it through the stage when a run ends)."""
        if self._local is not None:
            self._local.close()
        for c in self._conns:
            try:
                c.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        self._procs, self._conns = [], []

    def __enter__(self) -> "EnvPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
