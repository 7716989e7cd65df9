"""One-step-off-policy rollout: the next batches are generated while the learner trains.

A producer thread generates batch ``j`` (the batch the learner trains on at step ``j``) with the
weights of policy version ``max(0, j - s)``, where version ``v`` means "after ``v`` updates" and
``s = async_rollout.max_staleness``. So with ``s = 1`` batch ``k+1`` is sampled with the weights of
step ``k`` while the learner trains on batch ``k`` (the one-step-off-policy schedule of veRL's
``one_step_off_policy`` recipe and of AReaL), the learner never trains on data more than ``s``
versions old, and the schedule is deterministic: each batch's version is fixed by its index, not by
thread timing, so a run is reproducible and resumable. ``s = 0`` is the synchronous schedule.

Weight sync is explicit: after each update the learner publishes a snapshot of its weights (a
CPU copy, timed, bytes counted); the producer loads the snapshot its next batch needs into its own
rollout stage (built like the trainer's on a separate copy of the policy, or over the Ray rollout
workers). The producer has its own
random generator (sampling seeds) and owns the data cursor; its pending batches and generator are
part of the checkpoint, so resuming reproduces the uninterrupted run.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch


class AsyncRollout:
    """``sampler``: the ``BatchSampler`` over the producer's own rollout stage (``trainer/scale.py``);
    ``start``: the first step whose batch it makes."""

    def __init__(self, sampler, start: int, max_staleness: int, steps: int, seed: int):
        self.sampler, self.s, self.steps = sampler, max_staleness, steps
        self.rng = torch.Generator().manual_seed(seed)
        self._cond = threading.Condition()
        self._snapshots: dict[int, Any] = {}
        self._ready: dict[int, tuple] = {}
        self._next_j = start
        self._busy = False
        self._stop = False
        self._error: BaseException | None = None
        self._engine_version: int | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- learner side
    def publish(self, version: int, weights: Any) -> None:
        """Make ``weights`` (policy version ``version``) available to the producer."""
        with self._cond:
            self._snapshots[version] = weights
            self._cond.notify_all()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, name="reasonrl-rollout", daemon=True)
            self._thread.start()

    def get(self, j: int) -> tuple[Any, list, dict[str, float], int]:
        """Batch ``j`` as ``(batch, tasks, metrics, policy_version)``; blocks until it is ready."""
        self.start()
        with self._cond:
            while j not in self._ready:
                if self._error is not None:
                    raise RuntimeError(f"rollout producer failed: {self._error!r}") from self._error
                if self._next_j > j:
                    raise RuntimeError(f"batch {j} was already consumed")
                self._cond.wait(timeout=1.0)
            return self._ready.pop(j)

    def needed_version(self, j: int) -> int:
        return max(0, j - self.s)

    def _pick(self, need: int) -> int | None:
        """The snapshot to use for version ``need``: itself, or -- when it is gone because a run was
        resumed with more steps than it was started with -- the oldest newer one (less stale)."""
        if need in self._snapshots:
            return need
        if self._snapshots and min(self._snapshots) > need:
            return min(self._snapshots)
        return None

    def quiesce(self) -> None:
        """Wait until the producer has made every batch the published versions allow (for checkpoints)."""
        self.start()
        with self._cond:
            while self._error is None and (self._busy or (
                    self._next_j < self.steps and self._pick(self.needed_version(self._next_j)) is not None)):
                self._cond.wait(timeout=1.0)
            if self._error is not None:
                raise RuntimeError(f"rollout producer failed: {self._error!r}") from self._error

    def state_dict(self) -> dict[str, Any]:
        self.quiesce()
        with self._cond:
            return {"ready": dict(self._ready), "next_j": self._next_j, "rng": self.rng.get_state()}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        if self._thread is not None:
            raise RuntimeError("load the async rollout state before the producer starts")
        self._ready, self._next_j = dict(st["ready"]), int(st["next_j"])
        self.rng.set_state(st["rng"])

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if callable(getattr(self.sampler, "close", None)):  # a ProcessSampler's child process
            self.sampler.close()

    # ---------------------------------------------------------------- producer thread
    def _produce(self) -> None:
        try:
            while True:
                with self._cond:
                    j = self._next_j
                    need = self.needed_version(j)
                    while not self._stop and j < self.steps and self._pick(need) is None:
                        self._cond.wait()
                    if self._stop or j >= self.steps:
                        return
                    need = self._pick(need)
                    weights = self._snapshots[need]
                    for v in [v for v in self._snapshots if v < need]:
                        del self._snapshots[v]
                    self._busy = True
                load_s = 0.0
                if self._engine_version != need:
                    t0 = time.perf_counter()
                    self.sampler.stage.load_weights(weights)
                    load_s = time.perf_counter() - t0
                    self._engine_version = need
                got = self.sampler.collect(self.rng)
                got.metrics["sync/engine_load_s"] = load_s
                with self._cond:
                    self._ready[j] = (got.batch, got.tasks, got.metrics, need)
                    self._next_j = j + 1
                    self._busy = False
                    self._cond.notify_all()
        except BaseException as e:  # surfaced to the learner by get()/quiesce()
            with self._cond:
                self._error = e
                self._busy = False
                self._cond.notify_all()


def snapshot(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], float, int]:
    """A detached CPU copy of the weights (a LoRA policy's adapters only), its wall time and its size in bytes."""
    from reasonrl.models.lora import sync_state_dict

    t0 = time.perf_counter()
    sd = {k: v.detach().to("cpu", copy=True) for k, v in sync_state_dict(model).items()}
    return sd, time.perf_counter() - t0, sum(v.numel() * v.element_size() for v in sd.values())


class ProcessSampler:
    """The producer's ``BatchSampler`` in its own process (``async_rollout.process``).

    The thread producer shares the learner's interpreter, so its many small decode ops and the
    learner's Python fight over the GIL (measured: async at 0.5x sync on 2 cores). Here the rollout
    stage lives in a spawned child with its own torch threads (``threads``); the producer thread of
    ``AsyncRollout`` only forwards calls over a pipe and waits without holding the GIL. The schedule
    is unchanged: ``AsyncRollout`` still decides which weights each batch uses, and the sampling
    generator's state travels with every ``collect``, so the parent's generator (checkpointed) stays
    the one source of sampling seeds. The child builds its own scorer and rollout stage from the
    config, exactly as the thread producer does on its copy of the policy.
    """

    def __init__(self, cfg, model: torch.nn.Module, tokenizer, threads: int):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # fork would copy the parent's OpenMP/thread state
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_sampler_main, name="reasonrl-rollout",
                                 args=(child, cfg.model_dump(mode="json"), model, tokenizer, threads), daemon=True)
        self._proc.start()
        child.close()
        self.parent_threads = 0  # this process's torch threads before the split (process_sampler)
        self.stage = self  # AsyncRollout calls sampler.stage.load_weights(...), checkpoints sampler.stage.state_dict()
        self.last_load_s = 0.0
        self.invalid_groups_total = self.groups_total = 0  # mirrored from the child after each collect
        self._lock = threading.Lock()  # the producer thread and checkpointing share the pipe

    def _call(self, cmd: str, arg: Any) -> Any:
        with self._lock:
            self._conn.send((cmd, arg))
            try:
                status, out = self._conn.recv()
            except EOFError:
                raise RuntimeError(f"the rollout process died (exit code {self._proc.exitcode})") from None
        if status != "ok":
            raise RuntimeError(f"rollout process failed:\n{out}")
        return out

    def load_weights(self, weights: Any) -> None:
        self.last_load_s = self._call("load", weights)

    def collect(self, rng: torch.Generator):
        got, state, counters = self._call("collect", (rng.get_state(), (self.invalid_groups_total, self.groups_total)))
        rng.set_state(state)
        self.invalid_groups_total, self.groups_total = counters
        return got

    def state_dict(self) -> dict[str, Any]:
        """The child stage's state (its task cursor), for the trainer's checkpoint."""
        return self._call("state", None)

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self._call("load_state", st)

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("stop", None))
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(timeout=30)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout=10)
        self._conn.close()
        if self.parent_threads:
            torch.set_num_threads(self.parent_threads)
            self.parent_threads = 0


def _sampler_main(conn, cfg_data: dict, model: torch.nn.Module, tokenizer, threads: int) -> None:
    """The rollout process: build scorer + stage + sampler, then serve load/collect until stop."""
    import traceback

    from reasonrl.threads import apply_thread_policy

    apply_thread_policy(threads)
    try:
        from reasonrl.algorithms.recipes import make_recipe
        from reasonrl.config import Config
        from reasonrl.modes import make_rollout_stage
        from reasonrl.trainer.build import make_scorer
        from reasonrl.trainer.sampler import BatchSampler

        cfg = Config.model_validate(cfg_data)
        stage = make_rollout_stage(cfg, model.eval().requires_grad_(False), tokenizer, make_scorer(cfg))
        sampler = BatchSampler(stage, make_recipe(cfg.algorithm), cfg, tokenizer.pad_token_id)
    except BaseException:
        conn.recv()
        conn.send(("err", traceback.format_exc()))
        return
    while True:
        cmd, arg = conn.recv()
        if cmd == "stop":
            return
        try:
            if cmd == "load":
                t0 = time.perf_counter()
                stage.load_weights(arg)
                conn.send(("ok", time.perf_counter() - t0))
            elif cmd == "collect":
                rng = torch.Generator()
                rng.set_state(arg[0])
                sampler.invalid_groups_total, sampler.groups_total = arg[1]
                c0 = time.process_time()
                got = sampler.collect(rng)
                # CPU seconds this process got for the batch: next to time/gen_s (wall) it says whether the
                # rollout had a core to itself (cpu ~ wall x threads) or waited for one (shared machine)
                got.metrics["async/rollout_cpu_s"] = time.process_time() - c0
                conn.send(("ok", (got, rng.get_state(), (sampler.invalid_groups_total, sampler.groups_total))))
            elif cmd == "state":
                conn.send(("ok", stage.state_dict() if hasattr(stage, "state_dict") else None))
            elif cmd == "load_state":
                stage.load_state_dict(arg)
                conn.send(("ok", None))
            else:
                conn.send(("err", f"unknown command {cmd!r}"))
        except BaseException:
            conn.send(("err", traceback.format_exc()))


def process_sampler(cfg, model: torch.nn.Module, tokenizer) -> ProcessSampler:
    """A ``ProcessSampler`` on a copy of ``model``, the threads split: the rollout process gets
    ``async_rollout.rollout_threads`` (0 = half), this process keeps the rest of ``run.threads``."""
    import copy

    total = torch.get_num_threads()
    roll = cfg.async_rollout.rollout_threads or max(1, total // 2)
    sampler = ProcessSampler(cfg, copy.deepcopy(model).eval().requires_grad_(False), copy.deepcopy(tokenizer), roll)
    sampler.parent_threads = total  # restored by close(): the learner's share only while the child runs
    torch.set_num_threads(max(1, total - roll))
    return sampler
