"""More reward kinds: QA exact match and token F1, a tagged-output format reward, a length penalty.

QA normalisation follows the SQuAD evaluation convention (lower case, drop punctuation and the
articles a/an/the, collapse whitespace); F1 is over the multiset of normalised tokens, and both take
the best score over the gold answer and its aliases (``meta["aliases"]``). Pure functions on strings.
"""

from __future__ import annotations

import re
import string
from collections import Counter

__all__ = ["normalize_answer", "exact_match", "token_f1", "qa_golds", "tag_format_reward", "length_penalty"]

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    s = "".join(c for c in s.lower() if c not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def qa_golds(answer: str, meta: dict) -> list[str]:
    """The gold answer plus any ``meta["aliases"]`` (a list of strings)."""
    aliases = meta.get("aliases") or []
    if isinstance(aliases, str):
        aliases = [aliases]
    return [answer, *[a for a in aliases if isinstance(a, str)]]


def exact_match(pred: str | None, golds: list[str]) -> float:
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(g) for g in golds))


def token_f1(pred: str | None, golds: list[str]) -> float:
    """Best token-level F1 against any gold; two empty token lists count as a match."""
    if pred is None:
        return 0.0
    p = normalize_answer(pred).split()
    best = 0.0
    for g in golds:
        gt = normalize_answer(g).split()
        if not p or not gt:
            best = max(best, float(p == gt))
            continue
        common = sum((Counter(p) & Counter(gt)).values())
        if common:
            prec, rec = common / len(p), common / len(gt)
            best = max(best, 2 * prec * rec / (prec + rec))
    return best


def tag_format_reward(response: str, tags: tuple[str, ...] = ("think", "answer")) -> float:
    """1.0 iff the response is exactly the given tags in order, each once, non-empty, with only
    whitespace between and around them (``<think>..</think> <answer>..</answer>``); else 0.0."""
    pattern = r"\s*" + r"\s*".join(rf"<{t}>(?:(?!<{t}>|</{t}>).)*?\S(?:(?!<{t}>|</{t}>).)*?</{t}>" for t in tags) + r"\s*"
    if not re.fullmatch(pattern, response, flags=re.S):
        return 0.0
    return 1.0 if all(response.count(f"<{t}>") == 1 and response.count(f"</{t}>") == 1 for t in tags) else 0.0


def length_penalty(response: str, target_chars: int) -> float:
    """0 up to ``target_chars`` characters, then falling linearly to -1 at twice the target (and
    staying there): a soft cap on verbosity measured in characters, so it needs no tokenizer."""
    if target_chars <= 0:
        raise ValueError(f"target_chars must be > 0, got {target_chars}")
    over = len(response) - target_chars
    return 0.0 if over <= 0 else -min(1.0, over / target_chars)
