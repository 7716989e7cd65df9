"""Ray roles: rollout workers (engines) and learner ranks (torch.distributed) as actors.

Imported only when ``distributed.mode=ray`` (the default single-process path never imports Ray).

- :class:`RolloutWorker` holds the configured engine with its wrappers (``rollout.engine``, tool
  loop, SSRL masking: ``rollout.factory.make_rollout_engine``, as in a single process) on its own
  copy of the policy; :class:`RayEngine` implements the ``Engine`` interface over several of them (a
  step's prompts split contiguously, rows re-numbered so the batch is laid out as one engine would
  lay it out); the driver puts it into the mode's rollout stage.
- :class:`LearnerRank` runs a ``Learner``'s ``update`` (``trainer/learner.py``) on one rank of a
  gloo/NCCL process group with DDP or FSDP2 hooks (``trainer/distributed.py``).
- Test hooks (``reasonrl._testing``) switched on in the driver are passed to every actor explicitly.
- Placement (``distributed.placement``): *colocated* puts learner rank i and rollout worker i in one
  placement-group bundle (on GPUs they split the device, ``num_gpus=1/k`` each, and take turns);
  *disaggregated* gives every actor its own bundle, so rollout and learning use disjoint resources.
- Every actor runs with ``max_concurrency=2`` so that ``dump_stacks()`` answers even while another
  method is stuck: that is what the hang watchdog collects.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from typing import Any

import ray
import torch
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from reasonrl import _testing
from reasonrl.batch import Rollouts, concat
from reasonrl.rollout.engine import Engine
from reasonrl.rollout.sampling import SamplingParams

_ENV_PREFIXES = ("REASONRL_", "OMP_", "PYTHONPATH", "MKL_", "HF_")


def start_ray(dcfg, actors: int) -> None:
    """Start a light local Ray (no dashboard) or join ``distributed.address``; env reaches the actors."""
    if ray.is_initialized():
        return
    env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    kw: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": True, "logging_level": "WARNING"}
    if dcfg.address:
        ray.init(address=dcfg.address, **kw)
    else:
        ray.init(num_cpus=dcfg.num_cpus or actors, include_dashboard=False, **kw)


def _get(refs: list) -> list:
    """``ray.get`` that returns to Python every second, so the watchdog's signal can interrupt a hang."""
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
    return ray.get(list(refs))


def _stacks(title: str) -> str:
    from reasonrl.trainer.watchdog import local_stacks

    return local_stacks(title)


def _setup_process(hooks: dict[str, Any]) -> None:
    import faulthandler

    from reasonrl.threads import apply_thread_policy

    apply_thread_policy(None)
    faulthandler.enable()
    _testing.enable(**hooks)


@ray.remote
class RolloutWorker:
    def __init__(self, cfg_dict: dict[str, Any], index: int, hooks: dict[str, Any]):
        _setup_process(hooks)
        from reasonrl.config import Config
        from reasonrl.rollout.factory import make_rollout_engine
        from reasonrl.trainer.build import load_model

        cfg = Config.model_validate(cfg_dict)
        model, tok, model_dir = load_model(cfg, print)
        if torch.cuda.is_available():
            model = model.cuda()
        self.index = index
        self.engine = make_rollout_engine(cfg, model, tok, model_dir=str(model_dir))

    def generate(self, prompts: list[str], params: SamplingParams,
                 task_index: list[int]) -> tuple[Rollouts, dict[str, float]]:
        ro = self.engine.generate(prompts, params, task_index)
        return ro, dict(getattr(self.engine, "last_metrics", {}))

    def load_weights(self, weights: dict[str, torch.Tensor]) -> float:
        self.engine.load_weights(weights)
        return getattr(self.engine, "last_load_s", 0.0)

    def engine_chain(self) -> list[str]:
        """Class names from the outermost wrapper to the engine (what this worker was configured to run)."""
        out, e = [], self.engine
        while e is not None:
            out.append(type(e).__name__)
            e = getattr(e, "base", None)
        return out

    def dump_stacks(self) -> str:
        return _stacks(f"rollout worker {self.index}")


@ray.remote
class LearnerRank:
    def __init__(self, cfg_dict: dict[str, Any], rank: int, world_size: int, hooks: dict[str, Any]):
        _setup_process(hooks)
        self.cfg_dict, self.rank, self.world_size = cfg_dict, rank, world_size
        self.learner = None

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0's address and a free port for the TCP store."""
        ip = ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind(("", 0))
            return ip, s.getsockname()[1]

    def setup(self, addr: str, port: int, timeout_s: float) -> int:
        from reasonrl.config import Config
        from reasonrl.trainer.build import build_learner
        from reasonrl.trainer.distributed import DataParallelLearner, init_process_group

        cfg = Config.model_validate(self.cfg_dict)
        d = cfg.distributed
        init_process_group(d.backend, self.rank, self.world_size, addr, port, timeout_s)
        # this rank's learner is the single-process one (same seed, same initialisation); only its hooks change
        lr, _ = build_learner(cfg, log=lambda *a: None)
        if d.backend == "nccl":
            lr.model.cuda()
            lr.modules.cuda()
        lr.dist = DataParallelLearner(lr.model, d.strategy)
        if d.strategy == "fsdp2":  # sharding replaced the parameters: rebuild the optimizer over them
            lr.opt = _rebuild_optimizer(lr.opt, list(lr.model.parameters()) + list(lr.modules.parameters()))
        self.learner = lr
        return os.getpid()

    def update(self, batch: Rollouts, tasks: list, step: int) -> dict[str, float]:
        _testing.injected_hang("learner", step)
        return self.learner.update(batch, tasks, step)

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        return self.learner.dist.full_state_dict(self.learner.model)

    def full_grads(self) -> dict[str, torch.Tensor]:
        return self.learner.dist.full_grads(self.learner.model)

    def dump_stacks(self) -> str:
        return _stacks(f"learner rank {self.rank}")

    def shutdown(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _rebuild_optimizer(old: torch.optim.Optimizer, params: list) -> torch.optim.Optimizer:
    import inspect

    ok = inspect.signature(type(old).__init__).parameters
    return type(old)(params, **{k: v for k, v in old.defaults.items() if k in ok})


def plan_placement(dcfg) -> tuple[list[dict[str, float]], list[tuple[int, dict]], list[tuple[int, dict]]]:
    """Bundles, and (bundle index, actor resources) for each learner rank and each rollout worker."""
    nl, nr = dcfg.learner_ranks, dcfg.rollout_workers
    gpu = 1.0 if dcfg.backend == "nccl" else 0.0
    if dcfg.placement == "disaggregated":
        bundles = [{"CPU": 1.0, **({"GPU": gpu} if gpu else {})} for _ in range(nl + nr)]
        res = {"num_cpus": 1, "num_gpus": gpu}
        return bundles, [(i, dict(res)) for i in range(nl)], [(nl + j, dict(res)) for j in range(nr)]
    nb = max(nl, nr)
    members = [int(b < nl) + sum(1 for j in range(nr) if j % nb == b) for b in range(nb)]
    bundles = [{"CPU": float(members[b]), **({"GPU": gpu} if gpu else {})} for b in range(nb)]

    def res(b: int) -> dict:
        return {"num_cpus": 1, "num_gpus": gpu / members[b]}

    return bundles, [(i, res(i)) for i in range(nl)], [(j % nb, res(j % nb)) for j in range(nr)]


class RayEngine(Engine):
    """The ``Engine`` interface over rollout-worker actors (contiguous split of the prompts)."""

    def __init__(self, workers: list, tokenizer: Any):
        self.workers, self._tok = workers, tokenizer
        self.weight_version = 0
        self.last_load_s = 0.0
        self.last_load_bytes = 0
        self.last_metrics: dict[str, float] = {}

    @property
    def tokenizer(self) -> Any:
        return self._tok

    def generate(self, prompts: list[str], params: SamplingParams, task_index: list[int] | None = None) -> Rollouts:
        self.expand_rows(prompts, params.n, task_index)  # validates
        task_index = list(range(len(prompts))) if task_index is None else list(task_index)
        k = min(len(self.workers), max(len(prompts), 1))
        bounds = torch.arange(len(prompts)).tensor_split(k)
        futs, starts = [], []
        for i, idx in enumerate(bounds):
            if not len(idx):
                continue
            a, b = int(idx[0]), int(idx[-1]) + 1
            p = dataclasses.replace(params, seed=None if params.seed is None else params.seed + i)
            futs.append(self.workers[i].generate.remote(prompts[a:b], p, task_index[a:b]))
            starts.append(a)
        results = _get(futs)
        parts = [ro for ro, _ in results]
        for part, a in zip(parts, starts):
            part.group_ids = part.group_ids + a  # worker-local prompt numbers -> the step's
        # the wrappers' metrics (tool calls, masked fraction), weighted by each worker's rows
        keys = {k for _, m in results for k in m}
        self.last_metrics = {k: sum(m.get(k, 0.0) * len(ro) for ro, m in results) / max(sum(map(len, parts)), 1)
                             for k in keys}
        pad = getattr(self._tok, "pad_token_id", None) or 0
        return concat(parts, pad) if len(parts) > 1 else parts[0]

    def load_weights(self, weights) -> None:
        t0 = time.perf_counter()
        if isinstance(weights, torch.nn.Module):
            weights = weights.state_dict()
        self.last_load_bytes = sum(v.numel() * v.element_size() for v in weights.values())
        ref = ray.put(weights)
        _get([w.load_weights.remote(ref) for w in self.workers])
        self.weight_version += 1
        self.last_load_s = time.perf_counter() - t0


class RayRoles:
    """Everything a ``distributed.mode=ray`` run starts: Ray, a placement group, workers, learners."""

    def __init__(self, cfg, tokenizer: Any, log=print):
        d = cfg.distributed
        start_ray(d, d.learner_ranks + d.rollout_workers)
        cfg_dict = cfg.model_dump(mode="json")
        bundles, lres, wres = plan_placement(d)
        self.pg = placement_group(bundles, strategy="PACK")
        try:
            ray.get(self.pg.ready(), timeout=120)
        except Exception as e:
            raise RuntimeError(f"Ray could not place {len(bundles)} bundles {bundles} (distributed.placement="
                               f"{d.placement}); the cluster has {ray.cluster_resources()}: lower "
                               f"distributed.learner_ranks/rollout_workers or add resources") from e

        def opts(bundle: int, res: dict) -> dict:
            return {"scheduling_strategy": PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=bundle),
                    "max_concurrency": 2, **res}

        t0 = time.perf_counter()
        hooks = _testing.active()
        self.workers = [RolloutWorker.options(**opts(b, r)).remote(cfg_dict, j, hooks) for j, (b, r) in enumerate(wres)]
        self.learners = [LearnerRank.options(**opts(b, r)).remote(cfg_dict, i, d.learner_ranks, hooks)
                         for i, (b, r) in enumerate(lres)]
        addr, port = ray.get(self.learners[0].rendezvous.remote())
        _get([a.setup.remote(addr, port, max(d.watchdog_s * 2, 300.0)) for a in self.learners])
        self.engine = RayEngine(self.workers, tokenizer)
        log(f"ray: {d.rollout_workers} rollout workers, {d.learner_ranks} learner ranks ({d.strategy}, {d.backend}, "
            f"{d.placement}) ready in {time.perf_counter() - t0:.1f}s")

    def update(self, batch: Rollouts, tasks: list, step: int) -> dict[str, float]:
        ref_b, ref_t = ray.put(batch), ray.put(tasks)
        return _get([a.update.remote(ref_b, ref_t, step) for a in self.learners])[0]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _get([a.full_state_dict.remote() for a in self.learners])[0]

    def full_grads(self) -> dict[str, torch.Tensor]:
        return _get([a.full_grads.remote() for a in self.learners])[0]

    def dump_stacks(self, timeout_s: float = 20.0) -> dict[str, str]:
        named = [(f"learner {i}", a) for i, a in enumerate(self.learners)] + \
                [(f"rollout {j}", w) for j, w in enumerate(self.workers)]
        refs = {name: a.dump_stacks.remote() for name, a in named}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        out = {}
        for name, r in refs.items():
            out[name] = ray.get(r) if r in ready else f"(no answer within {timeout_s:g}s)"
        return out

    def close(self, graceful: bool = True) -> None:
        for a in self.learners if graceful else []:
            try:
                ray.get(a.shutdown.remote(), timeout=10)
            except Exception:  # a hung or dead rank is killed below anyway
                pass
        for a in self.learners + self.workers:
            ray.kill(a)
        remove_placement_group(self.pg)
