"""The task record every source yields (built-in generators, reasoning-gym, user files)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence


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


def cycle_tasks(pool: Sequence, n: int, start: int, seed: int) -> list:
    """Stream positions ``start .. start+n-1`` over ``pool`` repeated in epochs, each epoch a fresh seeded
    permutation (a data cursor resumes it exactly): shuffled file datasets (``data.shuffle``) and TTRL's
    train-on-test cycle over the evaluation prompts, without fixed batch compositions."""
    if not pool:
        raise ValueError("cycle_tasks needs a non-empty pool")
    out = []
    perms: dict[int, list[int]] = {}
    for pos in range(start, start + n):
        ep, i = divmod(pos, len(pool))
        if ep not in perms:
            perms[ep] = list(range(len(pool)))
            random.Random(seed * 1_000_003 + ep).shuffle(perms[ep])
        out.append(pool[perms[ep][i]])
    return out
