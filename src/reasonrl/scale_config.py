"""Cross-field checks of the ``distributed`` and ``async_rollout`` config sections.

Kept free of heavy imports: it runs on every config load (``reasonrl config show`` too), and torch
is imported only when the NCCL backend is asked for.
"""

from __future__ import annotations

import importlib.util


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def validate_scale_config(cfg) -> None:
    """Cross-field checks of ``distributed``/``async_rollout`` (raised as ValueError at config load)."""
    d = cfg.distributed
    if d.mode == "local" and (d.learner_ranks > 1 or d.rollout_workers > 1):
        raise ValueError(f"distributed.learner_ranks={d.learner_ranks} / distributed.rollout_workers="
                         f"{d.rollout_workers} need distributed.mode=ray; set it, or keep both at 1")
    if d.backend == "nccl" and d.address is None and not _cuda_available():
        raise ValueError("distributed.backend=nccl needs CUDA GPUs, but torch.cuda.is_available() is False; "
                         "use distributed.backend=gloo on CPU")
    if d.mode == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ValueError("distributed.mode=ray needs Ray: pip install 'reasonrl[distributed]' "
                             "(or set distributed.mode=local)")
        t = cfg.trainer
        if t.save_every or t.resume:
            raise ValueError("trainer.save_every / trainer.resume are not supported with distributed.mode=ray yet "
                             "(the optimizer state lives on the learner ranks); set trainer.save_every=0 and "
                             "trainer.resume=false, or use distributed.mode=local")
