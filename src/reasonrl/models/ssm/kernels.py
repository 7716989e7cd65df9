"""Optional fused GPU kernels (``mamba-ssm`` + ``causal-conv1d``) behind the pure-PyTorch layer API.

The pure-PyTorch functions in ``ops.py`` are the reference and the CPU path. On CUDA, when *both*
packages import (mamba-ssm's Mamba-2 training path breaks when causal-conv1d is missing, see
docs/ssm.md), the layers' parallel forms call the kernels instead; the recurrent decode step stays in
PyTorch (one token, tiny tensors). ``REASONRL_SSM_KERNELS=0`` forces the reference path.

Tested on CPU only: the selection logic, the fallback, and the layers' glue around the kernels (argument
layouts, returned states) with fake kernel modules that delegate to the reference
(``tests/models/test_ssm_kernels.py``). The real kernels have never run in this repository: no GPU was
available in any session that worked on it, and the packages are not installed.
"""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace

import torch


@functools.lru_cache(maxsize=1)
def _load() -> SimpleNamespace | None:
    if os.environ.get("REASONRL_SSM_KERNELS", "1") == "0":
        return None
    try:
        from causal_conv1d import causal_conv1d_fn
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # ImportError, or a broken CUDA build raising anything at import
        return None
    return SimpleNamespace(conv=causal_conv1d_fn, scan=selective_scan_fn, ssd=mamba_chunk_scan_combined)


def kernels_for(x: torch.Tensor, enabled: bool = True) -> SimpleNamespace | None:
    """The kernel functions when ``enabled``, ``x`` is on CUDA and both packages import; else ``None``
    (the caller then runs the pure-PyTorch reference)."""
    if not enabled or not _on_cuda(x):
        return None
    return _load()


def _on_cuda(x: torch.Tensor) -> bool:
    """The device test, on its own so the CPU tests can stand in for a GPU."""
    return x.device.type == "cuda"


def available() -> bool:
    """Whether the kernels would be used for CUDA tensors in this process."""
    return torch.cuda.is_available() and _load() is not None
