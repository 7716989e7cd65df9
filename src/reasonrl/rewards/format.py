"""Format reward: did the response end with exactly one boxed answer?

1.0 iff the response contains exactly one ``\\boxed`` and it is a balanced ``\\boxed{...}`` with a
non-empty answer, followed only by closing decoration: whitespace, ``$``, ``\\]``, ``\\)``, ``.``,
``</answer>`` and end-of-sequence markers (``<|...|>``, ``</s>``, ``<eos>``, ``<end_of_turn>``).
Otherwise 0.0. Several boxes score 0 so that hedging (``\\boxed{3} or \\boxed{4}``) never earns
format credit; text after the box scores 0 because the answer must be the final word.
"""

from __future__ import annotations

import re

from reasonrl.rewards.extract import find_boxes

__all__ = ["format_reward", "boxed_format_reward"]

_TRAILER_RE = re.compile(r"(?:\s|\$|\\\]|\\\)|\.|</answer>|<\|[^|<>\s]{1,40}\|>|</s>|<eos>|<end_of_turn>)*")
_BRACED_RE = re.compile(r"\\boxed\s*\{")


def format_reward(response: str) -> float:
    """1.0 for one final, non-empty, balanced ``\\boxed{...}``; 0.0 otherwise (see module doc)."""
    if not response or response.count("\\boxed") != 1:
        return 0.0
    boxes = find_boxes(response)
    if len(boxes) != 1:
        return 0.0
    start, end, content = boxes[0]
    if not content or not _BRACED_RE.match(response, start):  # "\boxed 5" is not the braced form
        return 0.0
    return 1.0 if _TRAILER_RE.fullmatch(response, end) else 0.0


def boxed_format_reward(prompt: str, response: str, answer: str, meta: dict) -> float:
    """:func:`format_reward` as a user reward function, so it can be weighted next to others:
    ``reward.functions=[reasonrl.rewards.format:boxed_format_reward=0.2]`` (same as ``reward.format=0.2``)."""
    return format_reward(response)
