"""Configurable answer extraction (``reward.extract``): which part of a response is the graded answer.

The default, ``boxed``, is the project's rule since the start (the last ``\\boxed{}``, else the last
``<answer>`` tag; see :mod:`reasonrl.rewards.extract`), so results stay comparable. The other modes
give a pretrained instruct model that rarely boxes (SmolLM2-135M-Instruct) a learning signal:

- ``answer_tag``: only the last ``<answer>...</answer>``;
- ``last_number``: only the last number of the response;
- ``lenient``: the last box if there is a complete one, else the last ``<answer>`` tag, else the
  number after the last "answer is X" / "Answer: X", else the last number (the lm-eval "flexible
  extract" convention, widened by the answer phrase).

Numbers: an optional minus sign (not when it follows a digit, letter or bracket: ``10-5`` ends in
``5``, not ``-5``), digits with optional thousands commas (``1,234`` -> ``1234``) and an optional
decimal part (``2.5``; a sentence-ending ``7.`` is ``7``).
"""

from __future__ import annotations

import re
from typing import Callable, Literal, get_args

from reasonrl.rewards.extract import extract_answer, extract_answer_tag, extract_boxed

__all__ = ["ExtractMode", "EXTRACT_MODES", "extract_by_mode", "extract_last_number", "extract_answer_phrase",
           "extract_lenient", "check_extract_mode"]

ExtractMode = Literal["boxed", "answer_tag", "last_number", "lenient"]
EXTRACT_MODES: tuple[str, ...] = get_args(ExtractMode)

_NUMBER_RE = re.compile(r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)")
_PHRASE_RE = re.compile(r"answer\s*(?:is\s*[:=]?|[:=])", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")  # "12. Check: 12-2=10": the check is not the answer
_PHRASE_WINDOW = 40  # characters after the phrase searched for its number ("The answer is: $\mathbf{12}$")


def _numbers(text: str) -> list[str]:
    return [m.group(0).replace(",", "") for m in _NUMBER_RE.finditer(text)]


def extract_last_number(text: str) -> str | None:
    """The last number of ``text`` (commas removed), else ``None``."""
    nums = _numbers(text) if text else []
    return nums[-1] if nums else None


def extract_answer_phrase(text: str) -> str | None:
    """The first number within a short window after the LAST "answer is" / "answer:" phrase (up to the end
    of its sentence; after its last ``=`` when it states an equation), else ``None``."""
    if not text:
        return None
    last = None
    for m in _PHRASE_RE.finditer(text):
        last = m
    if last is None:
        return None
    window = _SENTENCE_END_RE.split(text[last.end(): last.end() + _PHRASE_WINDOW].split("\n", 1)[0], 1)[0]
    if "=" in window:  # "the answer is: 9-4 = 11" answers with the right-hand side, not the 9
        window = window.rsplit("=", 1)[1]
    nums = _numbers(window)
    return nums[0] if nums else None


def extract_lenient(text: str) -> str | None:
    """Box, else ``<answer>`` tag, else answer phrase, else last number (module docstring)."""
    for f in (extract_boxed, extract_answer_tag, extract_answer_phrase, extract_last_number):
        x = f(text)
        if x:
            return x
    return None


_BY_MODE: dict[str, Callable[[str], str | None]] = {
    "boxed": extract_answer,
    "answer_tag": extract_answer_tag,
    "last_number": extract_last_number,
    "lenient": extract_lenient,
}


def check_extract_mode(mode: str) -> str:
    """``mode`` itself, or a ``ValueError`` naming the valid modes."""
    if mode not in _BY_MODE:
        raise ValueError(f"unknown answer extraction mode {mode!r}; valid: {', '.join(EXTRACT_MODES)} "
                         f"(reward.extract)")
    return mode


def extract_by_mode(text: str, mode: str = "boxed") -> str | None:
    """The graded answer of ``text`` under extraction ``mode`` (one of ``EXTRACT_MODES``)."""
    return _BY_MODE[check_extract_mode(mode)](text or "")
