"""Step-verified (process) rewards for the built-in arithmetic family.

A worked arith solution is a chain of steps ``a op b = c.``; each step can be checked on its own. The
outcome reward says only whether the final answer is right; a step reward says *which* step went wrong, a
denser signal for a small model (e.g. one that learned to forget carries from an imperfect teacher).

Use as a user reward function next to the outcome reward, e.g.
``reward.functions=[reasonrl.rewards.process:arith_step_reward=0.5]``.
"""

from __future__ import annotations

import re

_STEP = re.compile(r"(-?\d+)\s*([-+*])\s*(\d+)\s*=\s*(-?\d+)")


def check_steps(response: str) -> list[bool]:
    """Whether each ``a op b = c`` step in ``response`` is arithmetically right, in order."""
    out = []
    for a, op, b, c in _STEP.findall(response):
        a, b, c = int(a), int(b), int(c)
        out.append(c == (a + b if op == "+" else a - b if op == "-" else a * b))
    return out


def arith_step_reward(prompt: str, response: str, answer: str, meta: dict) -> float:
    """Fraction of correct steps, 0 for a response with no step. Only for arith tasks (0 otherwise): the
    other families' steps are not ``a op b = c`` chains of this form."""
    if meta.get("family") != "arith":
        return 0.0
    steps = check_steps(response)
    return sum(steps) / len(steps) if steps else 0.0
