"""User reward functions for the Scorer tests (imported by path, like a user's module)."""

import math

NOT_CALLABLE = 3


def brevity(prompt, response, answer, meta):
    return 1.0 if len(response) < 40 else 0.0


def uses_meta(prompt: str, response: str, answer: str, meta: dict) -> float:
    return float(meta.get("bonus", 0))


def two_args(prompt, response):
    return 1.0


def keyword_only(*, prompt, response, answer, meta):
    return 1.0


def raises(prompt, response, answer, meta):
    raise RuntimeError("boom from user code")


def returns_nan(prompt, response, answer, meta):
    return math.nan


def returns_str(prompt, response, answer, meta):
    return "1.0"


def returns_bool(prompt, response, answer, meta):
    return answer in response


from reasonrl.rewards import batch_reward  # noqa: E402


@batch_reward
def batch_len(tasks, responses):
    """Batch signature: one score per response, with access to the task records."""
    return [len(r) / 10 + (1.0 if t.answer in r else 0.0) for t, r in zip(tasks, responses)]


@batch_reward
def batch_wrong_length(tasks, responses):
    return [0.0]


@batch_reward
def batch_bad_signature(tasks):
    return []
