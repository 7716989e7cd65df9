"""SSRL's training reward (algorithms.md §5.2): ``R = em_weight * EM + format_weight * Format``.

- ``exact_match``: the last ``<answer>...</answer>`` span (DOTALL) against every gold answer after
  SQuAD-style normalisation (lowercase, drop punctuation, drop the articles a/an/the, collapse
  whitespace); no answer span = 0. ``f1`` (token overlap, best over golds) is logged only.
- ``format_score``: the spec's table (numbered rules in :func:`format_score`); think-only-then-answer
  scores 0.5, one search round 1.0, anything malformed 0.

Formulas restated from the SSRL paper/code as summarised in the spec; no code was copied.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from reasonrl.rewards.result import RewardResult

if TYPE_CHECKING:
    from reasonrl.tasks.base import Task

__all__ = ["normalize_answer", "last_answer", "exact_match", "f1_score", "format_score", "SSRLScorer", "golds"]

ALLOWED_TAGS = ("think", "search", "information", "answer")
PLACEHOLDERS = ("your query", "your thoughts", "your answer", "your information")
MAX_THINK = 8
_TAG_RE = re.compile(r"<(/?)([^<>]*)>")
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_PAIR_RE = re.compile(r"<(think|search|information|answer)>(.*?)</\1>", re.DOTALL)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(s: str) -> str:
    s = s.lower().translate(_PUNCT)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def last_answer(response: str) -> str | None:
    """Content of the last complete ``<answer>...</answer>`` (may span lines); ``None`` if there is none."""
    found = _ANSWER_RE.findall(response or "")
    return found[-1] if found else None


def exact_match(response: str, gold: str | Sequence[str]) -> float:
    pred = last_answer(response)
    if pred is None:
        return 0.0
    golds_ = [gold] if isinstance(gold, str) else list(gold)
    p = normalize_answer(pred)
    return 1.0 if any(p == normalize_answer(g) for g in golds_) else 0.0


def f1_score(response: str, gold: str | Sequence[str]) -> float:
    pred = last_answer(response)
    if pred is None:
        return 0.0
    best = 0.0
    pt = normalize_answer(pred).split()
    for g in [gold] if isinstance(gold, str) else gold:
        gt = normalize_answer(g).split()
        common = sum((Counter(pt) & Counter(gt)).values())
        if common:
            prec, rec = common / len(pt), common / len(gt)
            best = max(best, 2 * prec * rec / (prec + rec))
    return best


def format_score(response: str) -> float:
    """The spec's format score (§5.2). 0 unless all of:

    1. every ``<...>`` tag is think/search/information/answer (open or close);
    2. the stripped text starts with ``<think>`` and ends with ``</answer>``;
    3. at least 4 tags, the first two ``think, /think``, the last two ``answer, /answer``;
    4. no empty tag content, ``<search>`` content on one line, no template placeholder text;
    5. between the first two and last two tags every ``search`` is followed immediately by
       ``/search, information, /information``, and ``#<search> == #<information>``.

    Then ``min(n_think / 2, 1) * ratio`` with ``ratio = 1`` if ``n_think == n_search + 1`` else
    ``min(n_think, n_search + 1) / max(n_think, n_search + 1)``, and 0 if ``n_think > 8``.
    """
    text = (response or "").strip()
    tags = [("/" if close else "") + name for close, name in _TAG_RE.findall(text)]
    if any(t.lstrip("/") not in ALLOWED_TAGS for t in tags):
        return 0.0
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return 0.0
    if len(tags) < 4 or tags[:2] != ["think", "/think"] or tags[-2:] != ["answer", "/answer"]:
        return 0.0
    for name, content in _PAIR_RE.findall(text):
        if not content.strip() or (name == "search" and "\n" in content.strip()):
            return 0.0
    low = text.lower()
    if any(p in low for p in PLACEHOLDERS):
        return 0.0
    middle = tags[2:-2]
    for i, t in enumerate(middle):
        if t == "search" and middle[i + 1: i + 4] != ["/search", "information", "/information"]:
            return 0.0
    n_search, n_info, n_think = tags.count("search"), tags.count("information"), tags.count("think")
    if n_search != n_info or n_think > MAX_THINK:
        return 0.0
    a, b = n_think, n_search + 1
    ratio = 1.0 if a == b else min(a, b) / max(a, b)
    return min(n_think / 2, 1.0) * ratio


def golds(task: Task) -> list[str]:
    """Gold answers of a task: ``answer`` plus ``meta["aliases"]``."""
    aliases = task.meta.get("aliases") or []
    if isinstance(aliases, str) or not all(isinstance(a, str) for a in aliases):
        raise ValueError(f"task {task.uid!r}: meta['aliases'] must be a list of strings, got {aliases!r}")
    return [task.answer, *aliases]


class SSRLScorer:
    """Drop-in for :class:`reasonrl.rewards.Scorer` when ``ssrl.reward`` is on: same ``score`` contract."""

    def __init__(self, em_weight: float = 0.9, format_weight: float = 0.1):
        self.em_weight, self.format_weight = float(em_weight), float(format_weight)
        self.last_metrics: dict[str, float] = {}

    def score(self, tasks: Sequence[Task], responses: Sequence[str]) -> RewardResult:
        if len(tasks) != len(responses):
            raise ValueError(f"score() got {len(tasks)} tasks but {len(responses)} responses")
        gs = [golds(t) for t in tasks]
        em = [exact_match(r, g) for r, g in zip(responses, gs)]
        fmt = [format_score(r) for r in responses]
        f1 = [f1_score(r, g) for r, g in zip(responses, gs)]
        extracted = [last_answer(r) for r in responses]
        correct = [e == 1.0 for e in em]
        n_correct = sum(correct)
        no_answer = sum(x is None for x in extracted)
        k = max(len(em), 1)
        self.last_metrics = {"reward/em_mean": sum(em) / k, "reward/format_mean": sum(fmt) / k, "reward/f1_mean": sum(f1) / k}
        return RewardResult(
            scores=[self.em_weight * e + self.format_weight * f for e, f in zip(em, fmt)], correct=correct,
            components={"em": em, "format": fmt, "f1": f1},
            counts={"correct": n_correct, "wrong": len(em) - n_correct, "timeout": 0, "error": 0, "no_answer": no_answer},
            extracted=extracted, verdicts=["correct" if c else "wrong" for c in correct], valid=[True] * len(em))
