"""Test hooks: behaviour only tests switch on, explicitly, through this one seam.

Production code asks ``get(name)``; nothing here reads the environment, so a hook can never be
switched on by a stray variable in a user's shell. A test enables hooks in its own process
(``with hooks(save_delay_s=0.2): ...``); a subprocess the test launches enables them itself, through
a harness that calls :func:`enable` before running the CLI (``tests/trainer/_hooked_cli.py``); Ray actors get the
driver's :func:`active` hooks passed in explicitly (``trainer/ray_roles.py``).

Hooks:
- ``forget_rng`` (bool): resume without restoring the global RNGs (the resume test's negative control);
- ``save_delay_s`` (float): each checkpoint also writes a file after sleeping this long, so SIGKILLs land mid-save;
- ``hang`` (str ``"<role>:<step>"``, role ``driver`` or ``learner``): that role sleeps an hour at that step;
- ``step_trace`` (path): append every optimizer step's loss and grad norm as exact float hex.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

HOOKS: dict[str, type] = {"forget_rng": bool, "save_delay_s": float, "hang": str, "step_trace": str}
_active: dict[str, Any] = {}


def enable(**hooks: Any) -> None:
    """Switch hooks on (names and types in ``HOOKS``); ``None`` switches one off."""
    for name, value in hooks.items():
        if name not in HOOKS:
            raise ValueError(f"unknown test hook {name!r}; known: {', '.join(HOOKS)}")
        if value is None:
            _active.pop(name, None)
        else:
            _active[name] = HOOKS[name](value)


def get(name: str, default: Any = None) -> Any:
    if name not in HOOKS:
        raise ValueError(f"unknown test hook {name!r}; known: {', '.join(HOOKS)}")
    return _active.get(name, default)


def active() -> dict[str, Any]:
    """The hooks switched on in this process (to pass on to worker processes)."""
    return dict(_active)


@contextlib.contextmanager
def hooks(**kw: Any) -> Iterator[None]:
    """``with hooks(...)``: switch hooks on for the block, then restore the previous set."""
    before = dict(_active)
    enable(**kw)
    try:
        yield
    finally:
        _active.clear()
        _active.update(before)


def injected_hang(role: str, step: int) -> None:
    """The ``hang`` hook: sleep an hour when this role reaches that step (the watchdog must catch it)."""
    if get("hang") == f"{role}:{step}":
        time.sleep(3600)


def trace_step(step: int, opt_step: int, loss: float, grad_norm: float) -> None:
    """The ``step_trace`` hook: exact float hex per optimizer step, never truncated on resume, so
    replayed steps can be compared bit for bit."""
    path = get("step_trace")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"step": step, "opt_step": opt_step, "loss": float(loss).hex(),
                            "grad_norm": float(grad_norm).hex()}) + "\n")
        f.flush()
        os.fsync(f.fileno())
