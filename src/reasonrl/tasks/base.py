"""The task record every source yields (built-in generators, reasoning-gym, user files)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    """One verifiable problem.

    ``verifier`` names the reward that can grade it (``"math"`` for a numeric/LaTeX answer,
    ``"countdown"``, ``"reasoning_gym"``, ``"exact"``); ``meta`` carries what that verifier needs
    (Countdown numbers and target, the reasoning-gym entry) plus ``family`` and ``difficulty``.
    ``solution`` is an optional worked demonstration that ends in ``\\boxed{answer}``.
    """

    uid: str
    prompt: str
    answer: str
    solution: str | None = None
    verifier: str = "math"
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
