"""CPU thread policy.

torch's default OpenMP threads busy-wait; on a shared 2-core machine any other busy process makes a
step 30-40x slower (measured on this project's machines). Every entry point calls
``apply_thread_policy`` before torch does real work; tests use one thread.
"""

from __future__ import annotations

import os


def apply_thread_policy(num_threads: int | None = None) -> int:
    """Set passive OpenMP waiting and the intra-op thread count; returns the count in effect.

    ``None`` reads ``REASONRL_THREADS`` (default: all cores up to 2). Must run before the first
    parallel torch op for ``OMP_WAIT_POLICY`` to take effect in this process; it always affects
    child processes.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if num_threads is None:
        num_threads = int(os.environ.get("REASONRL_THREADS", "0")) or min(2, os.cpu_count() or 1)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    import torch

    torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set once in this process; the intra-op count is what matters
    return num_threads
