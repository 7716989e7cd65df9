"""Batch verifiers by name: ``Task.verifier`` picks one, and it grades every sample of a batch that
names it in one call (docs/rewards.md). Adding a verifier: a module here defining
``VERIFIER = Verifier(name, grade, check=..., infra_error=...)`` plus one ``register`` line below; or,
from user code, :func:`register_verifier`, or a task whose ``verifier`` is an import path
``pkg.mod:obj`` (see :mod:`.user`)."""

from __future__ import annotations

from reasonrl.rewards.verifiers import code, countdown, exact, math, qa, reasoning_gym, ssrl, user
from reasonrl.rewards.verifiers.base import Graded, GradingContext, Verdict, Verifier, verdict_correctness

__all__ = ["REGISTRY", "Graded", "GradingContext", "Verdict", "Verifier", "get_verifier", "register_verifier",
           "verdict_correctness"]

REGISTRY: dict[str, Verifier] = {}
_BY_PATH: dict[str, Verifier] = {}


def register_verifier(v: Verifier) -> Verifier:
    """Add (or replace) the verifier ``v.name``; returns it."""
    if not isinstance(v, Verifier):
        raise TypeError(f"register_verifier expects a Verifier, got {type(v).__name__}")
    REGISTRY[v.name] = v
    return v


def get_verifier(name: str) -> Verifier | None:
    """The registered verifier ``name``, the one an import path ``pkg.mod:obj`` names (loaded once), or
    None for an unknown plain name."""
    if name in REGISTRY:
        return REGISTRY[name]
    if isinstance(name, str) and ":" in name:
        if name not in _BY_PATH:
            _BY_PATH[name] = user.from_import_path(name)
        return _BY_PATH[name]
    return None


# The built-in verifiers, one line each (this order is the order error messages list them in).
register_verifier(math.VERIFIER)
register_verifier(countdown.VERIFIER)
register_verifier(exact.VERIFIER)
register_verifier(reasoning_gym.VERIFIER)
register_verifier(code.VERIFIER)
register_verifier(qa.EXACT)
register_verifier(qa.F1)
register_verifier(ssrl.VERIFIER)
