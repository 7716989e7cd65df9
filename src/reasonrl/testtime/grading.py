"""Grading one answer text the same way for every test-time arm (greedy, majority, best-of-n, LatentSeek).

Answers are graded by the project's :class:`reasonrl.rewards.Scorer` (the task's verifier on the
extracted ``\\boxed{}``/``<answer>``). ``fallback="last_number"`` grades the last number of a response
that has no extractable answer: small instruct models (SmolLM2-135M) rarely reach ``\\boxed{}`` within
a short token budget, and the lm-eval "flexible extract" convention is the usual remedy. It applies
to all arms alike, so comparisons stay fair.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from reasonrl.rewards import Scorer, extract_answer
from reasonrl.tasks import Task

Fallback = Literal["none", "last_number"]
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def graded_text(text: str, fallback: Fallback = "none") -> str:
    """``text`` itself, or ``\\boxed{last number}`` when the fallback applies (no extractable answer)."""
    if fallback == "last_number" and extract_answer(text) is None:
        nums = _NUMBER.findall(text.replace(",", ""))
        if nums:
            return f"\\boxed{{{nums[-1]}}}"
    elif fallback not in ("none", "last_number"):
        raise ValueError(f"unknown answer fallback {fallback!r}; valid: none, last_number")
    return text


def grade(scorer: Scorer, tasks: Sequence[Task], texts: Sequence[str],
          fallback: Fallback = "none") -> tuple[list[bool], list[str | None]]:
    """``(correct, extracted answer)`` per text, graded against ``tasks[i]``."""
    res = scorer.score(list(tasks), [graded_text(t, fallback) for t in texts])
    return list(res.correct), list(res.extracted)
