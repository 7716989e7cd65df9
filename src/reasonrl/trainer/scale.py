"""How a step runs: in this process (default), off-policy in a background thread, or on Ray actors.

The trainer's loop calls ``scale.collect()`` and ``scale.update()`` inside ``scale.guard(step)``;
with the default configuration these are exactly ``Trainer.collect()`` and ``Trainer.update()``, no
thread is started and Ray is never imported (``tests/distributed`` checks ``sys.modules``). Rollout
is always the configured mode's stage (``reasonrl.modes.make_rollout_stage``): async mode builds
one on a copy of the policy, Ray mode one over the workers' engines, each composed from
``rollout.engine`` and the tool/masking wrappers exactly as in a single process. The pieces, each
switched on by config (docs/distributed.md):

- ``distributed.mode=ray``: rollout workers and learner ranks as Ray actors (``ray_roles.py``);
  after each update the learner's full weights are gathered and pushed to the engines (timed, bytes
  logged) and to this process's copy of the policy (used for evaluation and the final save).
- ``async_rollout.enabled``: one-step-off-policy rollout (``async_rollout.py``) with a truncated
  importance-sampling correction (``algorithms/offpolicy.py``).
- ``distributed.watchdog_s``: the hang watchdog (``watchdog.py``).
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from typing import Any

import torch

from reasonrl import _testing

class _LockedScorer:
    """The scorer shared by the rollout thread and evaluation: one caller at a time."""

    def __init__(self, scorer):
        self._scorer, self._lock = scorer, threading.Lock()

    def score(self, *a, **kw):
        with self._lock:
            return self._scorer.score(*a, **kw)

    def __getattr__(self, name):
        return getattr(self._scorer, name)


class Scale:
    def __init__(self, trainer):
        from reasonrl.modes import make_rollout_stage
        from reasonrl.trainer import watchdog as wd
        from reasonrl.trainer.sampler import BatchSampler

        self.t = trainer
        c = trainer.cfg
        self.roles = None
        self.async_ = None
        self.watchdog = None
        self.versions: list[tuple[int, int]] = []  # (step, policy version of its batch), for staleness checks
        stage = None  # the stage that feeds training when it is not the trainer's own
        base = trainer.run_parts.scorer
        if c.async_rollout.enabled:  # the producer thread and evaluation share the scorer: one caller at a time
            base = _LockedScorer(base)
            if trainer.stage.scorer is trainer.run_parts.scorer:
                trainer.stage.scorer = base
        if c.distributed.mode == "ray":
            from reasonrl.trainer.ray_roles import RayRoles

            self.roles = RayRoles(c, trainer.tok, log=trainer.log)
            # each worker composed the configured engine and wrappers itself (make_rollout_engine)
            stage = make_rollout_stage(c, trainer.model, trainer.tok, base, engine=self.roles.engine)
        elif c.async_rollout.enabled and c.async_rollout.process:  # the producer's stage in its own process
            from reasonrl.trainer.async_rollout import process_sampler

            trainer.sampler = process_sampler(c, trainer.model, trainer.tok)
        elif c.async_rollout.enabled:  # the producer samples from its own copy of the policy
            stage = make_rollout_stage(c, copy.deepcopy(trainer.model).eval().requires_grad_(False),
                                       copy.deepcopy(trainer.tok), base)
        if stage is not None:
            trainer.sampler = BatchSampler(stage, trainer.recipe, c, trainer.tok.pad_token_id)
        if c.async_rollout.enabled:
            from reasonrl.trainer.async_rollout import AsyncRollout

            self.async_ = AsyncRollout(trainer.sampler, trainer.step, c.async_rollout.max_staleness, c.trainer.steps,
                                       seed=c.run.seed + 104729)
        if c.distributed.watchdog_s:
            self.watchdog = wd.Watchdog(c.distributed.watchdog_s, trainer.run_dir / "hang_stacks.txt",
                                        sources=self.roles.dump_stacks if self.roles else None,
                                        cleanup=self._shutdown_ray, log=trainer.log)

    # ---------------------------------------------------------------- the step
    def guard(self, step: int):
        return self.watchdog.step(step) if self.watchdog else contextlib.nullcontext()

    def collect(self) -> tuple[Any, list, dict[str, float]]:
        t = self.t
        if self.async_ is not None:
            if self.async_._thread is None:
                from reasonrl.trainer.async_rollout import snapshot

                self.async_.publish(t.step, snapshot(t.model)[0])
            t0 = time.perf_counter()
            batch, tasks, m, version = self.async_.get(t.step)
            self.versions.append((t.step, version))
            m.update({"async/wait_s": time.perf_counter() - t0, "async/policy_version": version,
                      "async/staleness": t.step - version})
            return batch, tasks, m
        return t.collect()

    def update(self, batch, tasks) -> dict[str, float]:
        t = self.t
        _testing.injected_hang("driver", t.step)
        m: dict[str, float] = {}
        if self.async_ is not None:
            m.update(self._offpolicy_correction(batch))
        if self.roles is None:
            m.update(t.update(batch, tasks))
            weights = None
        else:
            m.update(self.roles.update(batch, tasks, t.step))
            t.learner.opt_steps += t.learner.updates_per_step
            t0 = time.perf_counter()
            weights = self.roles.state_dict()
            t.model.load_state_dict(weights)
            m["sync/gather_s"] = time.perf_counter() - t0
            m["sync/weights_mb"] = sum(v.numel() * v.element_size() for v in weights.values()) / 2**20
            if self.async_ is None:
                self.roles.engine.load_weights(weights)
                m["sync/broadcast_s"] = self.roles.engine.last_load_s
        if self.async_ is not None:
            from reasonrl.trainer.async_rollout import snapshot

            if weights is None:
                weights, m["sync/snapshot_s"], nbytes = snapshot(t.model)
                m["sync/weights_mb"] = nbytes / 2**20
            self.async_.publish(t.step + 1, weights)
        return m

    @torch.no_grad()
    def _offpolicy_correction(self, batch) -> dict[str, float]:
        """old_logp = the learner's log-probs before this update; per-token truncated IS log-weights."""
        from reasonrl.algorithms.offpolicy import truncated_is_log_weights
        from reasonrl.rollout.logprobs import logprob_options, sequence_logprobs

        c = self.t.cfg
        was = self.t.model.training
        self.t.model.eval()
        try:
            old, _ = sequence_logprobs(self.t.model, batch, temperature=c.rollout.temperature,
                                       micro_batch=c.trainer.micro_batch, **logprob_options(c.perf))
        finally:
            self.t.model.train(was)
        old = old.cpu()
        logw, m = truncated_is_log_weights(old, batch.rollout_logp, batch.loss_mask, c.async_rollout.is_cap)
        batch.old_logp, batch.is_logw = old, logw
        return m

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"async": self.async_.state_dict()} if self.async_ is not None else {}

    def load_state_dict(self, st: dict[str, Any] | None) -> None:
        if self.async_ is not None:
            if not st or "async" not in st:
                raise ValueError("this checkpoint was written without async_rollout; resume it with "
                                 "async_rollout.enabled=false or start a new run")
            self.async_.load_state_dict(st["async"])

    def close(self) -> None:
        if self.async_ is not None:
            self.async_.close()
        if self.watchdog is not None:
            self.watchdog.close()
        if self.roles is not None:
            # after a watchdog firing a rank may be stuck in a collective: kill, do not tear down gracefully
            self.roles.close(graceful=self.watchdog is None or self.watchdog.message is None)
            self._shutdown_ray()

    def _shutdown_ray(self) -> None:
        if self.roles is not None:
            import ray

            ray.shutdown()
