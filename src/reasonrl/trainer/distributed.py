"""Data-parallel learner hooks: how one rank takes its share of a mini-batch (torch.distributed).

``Trainer.update`` runs the same recipe code on every rank; only these hooks differ. Each rank
receives the whole step batch (so the recipe's ``prepare`` -- advantages, filters, HPT's demo rows --
is computed identically everywhere), then forwards and backwards only its contiguous share of each
mini-batch's active rows. Loss normalisers (``Norm``) are those of the whole mini-batch, so the
ranks' losses sum to the single-process loss; DDP and FSDP2 *average* gradients, hence each rank's
loss is scaled by the world size. Every rank runs the same number of forward/backward passes (a
rank with fewer rows runs a zero-weighted pass), because both wrappers issue collectives per pass.

:class:`LocalLearner` is the single-process default (no torch.distributed); :class:`DataParallelLearner`
wraps the policy in DDP or FSDP2 (``torch.distributed.fsdp.fully_shard``).
"""

from __future__ import annotations

import contextlib
import datetime
import math
from collections.abc import Iterator

import torch


class LocalLearner:
    """One process: micro-batches in order, no collectives (the trainer's original behaviour)."""

    world_size = 1
    rank = 0

    def __init__(self, model: torch.nn.Module):
        self.module = model

    def micro_batches(self, act: torch.Tensor, micro: int) -> Iterator[tuple[torch.Tensor, float, bool]]:
        """``(rows, loss_scale, last)``; loss_scale 0 marks a padding pass whose loss is not counted."""
        starts = list(range(0, len(act), micro))
        for i, ms in enumerate(starts):
            yield act[ms: ms + micro], 1.0, i == len(starts) - 1

    def grad_sync(self, last: bool):
        return contextlib.nullcontext()

    def all_sum(self, x: float) -> float:
        return x

    def reduce_module_grads(self, modules: torch.nn.Module) -> None:
        pass

    def clip_grad_norm(self, params: list[torch.nn.Parameter], clip: float) -> float:
        if clip:
            return float(torch.nn.utils.clip_grad_norm_(params, clip))
        return float(torch.norm(torch.stack([p.grad.norm() for p in params])))

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def init_process_group(backend: str, rank: int, world_size: int, addr: str, port: int, timeout_s: float) -> None:
    """TCP rendezvous at ``addr:port`` (rank 0's host). NCCL without CUDA fails with a clear message."""
    import torch.distributed as dist

    if backend == "nccl" and not torch.cuda.is_available():
        raise RuntimeError("distributed.backend=nccl needs CUDA GPUs on every learner rank, but "
                           "torch.cuda.is_available() is False here; use distributed.backend=gloo on CPU")
    if backend == "nccl":
        torch.cuda.set_device(0)  # Ray sets CUDA_VISIBLE_DEVICES to the actor's own GPU
    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))


class DataParallelLearner(LocalLearner):
    """A rank of a DDP or FSDP2 learner (the process group must already be initialised)."""

    def __init__(self, model: torch.nn.Module, strategy: str):
        import torch.distributed as dist

        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.strategy = strategy
        self.model = model
        if strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            dev = next(model.parameters()).device
            self.module = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        elif strategy == "fsdp2":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            dev = next(model.parameters()).device
            mesh = init_device_mesh(dev.type, (self.world_size,))
            # one FSDP unit per decoder layer (parameters gathered layer by layer), then the rest
            for layer in _decoder_layers(model):
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            self.module = model
        else:
            raise ValueError(f"distributed.strategy={strategy!r}: use 'ddp' or 'fsdp2'")

    def micro_batches(self, act: torch.Tensor, micro: int) -> Iterator[tuple[torch.Tensor, float, bool]]:
        if len(act) == 0:
            return
        mine = act.tensor_split(self.world_size)[self.rank]
        passes = math.ceil(math.ceil(len(act) / self.world_size) / micro)  # the largest share's count
        for i in range(passes):
            rows = mine[i * micro: (i + 1) * micro]
            if len(rows):
                yield rows, float(self.world_size), i == passes - 1
            else:  # keep collectives in lock-step: a real row, weighted 0
                yield act[:1], 0.0, i == passes - 1

    def grad_sync(self, last: bool):
        if self.strategy == "ddp":
            return contextlib.nullcontext() if last else self.module.no_sync()
        self.module.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def all_sum(self, x: float) -> float:
        import torch.distributed as dist

        t = torch.tensor([x], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return float(t)

    def reduce_module_grads(self, modules: torch.nn.Module) -> None:
        """Recipe modules (value head, log Z) sit outside DDP/FSDP: average their grads by hand."""
        import torch.distributed as dist

        for p in modules.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.AVG if dist.get_backend() == "nccl" else dist.ReduceOp.SUM)
                if dist.get_backend() != "nccl":  # gloo has no AVG
                    p.grad /= self.world_size

    def clip_grad_norm(self, params: list[torch.nn.Parameter], clip: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """Rank 0 gets the full, unsharded CPU state dict; other ranks None (collective for FSDP2)."""
        if self.strategy == "fsdp2":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            return sd if self.rank == 0 else None
        return super().full_state_dict(model) if self.rank == 0 else None

    def full_grads(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Every parameter's full gradient on every rank (for tests and debugging)."""
        out = {}
        for name, p in model.named_parameters():
            if p.grad is not None:
                g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
                out[name] = g.detach().cpu().clone()
        return out


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    return list(layers) if layers is not None else []


def _collective_device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
