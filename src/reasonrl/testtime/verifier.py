"""LatentSeek's self-reward: the policy grades its own answer with four verifier prompts.

Spec: ``specs/embodied_latent_ssm.md`` §1.1. The four checks and their weights follow the reference
code (after "Multi-Agent Verification"): calculation_check 2, answer_correct 1, answer_completeness 2,
understanding_check 1. The prompt wording here is our own short paraphrase (the reference prompts are
long; verifier generation dominates LatentSeek's cost, and the built-in model has a 256-token
context). Each reply is parsed for ``FINAL VERIFICATION ANSWER IS:`` followed by True/False; without
the suffix the reply's first word is read; anything else is unparsable and counts as a failed check.

``r = -(sum of the weights of failed checks [+ format_penalty if the format rule is on and violated])
/ sum of all weights``, so r lies in [-1, 0] without the format rule and r = 0 only when every check
passes. With the default threshold -0.2 a single failed weight-1 check (-1/6) still stops the search,
any failed weight-2 check (-1/3) does not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

SUFFIX = "FINAL VERIFICATION ANSWER IS:"
DEFAULT_WEIGHTS: dict[str, float] = {
    "calculation_check": 2.0,
    "answer_correct": 1.0,
    "answer_completeness": 2.0,
    "understanding_check": 1.0,
}
FORMAT_PENALTY = 2.0

_END = f" End your reply with '{SUFFIX} True' or '{SUFFIX} False'."
PROMPTS: dict[str, str] = {
    "calculation_check": "Check every calculation in this answer.\nQuestion: {question}\nAnswer: {answer}\n"
                         "Are all calculations correct?" + _END,
    "answer_correct": "Question: {question}\nAnswer: {answer}\nIs the final answer correct?" + _END,
    "answer_completeness": "Question: {question}\nAnswer: {answer}\nDoes the answer fully solve the question "
                           "and state one clear final answer?" + _END,
    "understanding_check": "Question: {question}\nAnswer: {answer}\nDid the answer understand the question "
                           "correctly?" + _END,
}

_WORD = re.compile(r"[\s*_`'\"\[\](){}:.,]*([A-Za-z]+)")


def verifier_prompt(check: str, question: str, answer: str) -> str:
    """The raw (untemplated) text of verifier ``check`` for one question/answer pair."""
    if check not in PROMPTS:
        raise ValueError(f"unknown verifier check {check!r}; valid: {', '.join(PROMPTS)}")
    return PROMPTS[check].format(question=question, answer=answer)


def parse_verdict(text: str) -> bool | None:
    """True/False from a verifier reply; ``None`` when unparsable (the caller counts it as failed).

    The text after the LAST ``FINAL VERIFICATION ANSWER IS:`` (case-insensitive) is read; without the
    suffix the reply's first word is. Only the words true/false (any case, markdown or quotes around
    them allowed) parse: "Yes", "correct" or an empty reply do not.
    """
    i = text.upper().rfind(SUFFIX.upper())
    tail = text[i + len(SUFFIX):] if i >= 0 else text
    m = _WORD.match(tail)
    word = m.group(1).lower() if m else ""
    return True if word == "true" else False if word == "false" else None


def self_reward(verdicts: Mapping[str, bool | None], weights: Mapping[str, float] = DEFAULT_WEIGHTS,
                format_ok: bool | None = None, format_penalty: float = FORMAT_PENALTY) -> float:
    """``-(failed weight [+ format_penalty]) / total weight``; ``None`` verdicts count as failed.

    ``format_ok=None`` means the format rule is off; ``False`` adds ``format_penalty`` to the numerator.
    """
    missing = [k for k in weights if k not in verdicts]
    if missing:
        raise ValueError(f"self_reward: no verdict for checks {missing}")
    total = sum(float(w) for w in weights.values())
    if total <= 0:
        raise ValueError(f"self_reward: verifier weights must sum to > 0, got {dict(weights)}")
    failed = sum(float(w) for k, w in weights.items() if verdicts[k] is not True)
    if format_ok is False:
        failed += format_penalty
    return -failed / total
