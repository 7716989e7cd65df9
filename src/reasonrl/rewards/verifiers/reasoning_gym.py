"""``reasoning_gym``: each reasoning-gym dataset's own ``score_answer`` (0..1; correct at 1.0) on the
extracted answer, or the whole response when nothing is extracted. Tasks come from
:func:`reasonrl.tasks.reasoning_gym_source.load_reasoning_gym`, which stores the dataset name, options
and entry in ``meta``. Needs the optional package: ``pip install 'reasonrl[gym]'``."""

from __future__ import annotations

import functools
import json
import math

from reasonrl.rewards.extract import extract_answer
from reasonrl.rewards.verifiers.base import Graded, Verdict, Verifier


def _rg():
    try:
        import reasoning_gym
    except ImportError as e:
        raise ImportError(f"verifier 'reasoning_gym' needs the optional reasoning-gym package "
                          f"(pip install 'reasonrl[gym]'): {e}") from e
    return reasoning_gym


@functools.lru_cache(maxsize=64)
def _dataset(name: str, config_key: str):
    return _rg().create_dataset(name, seed=0, size=1, **json.loads(config_key))


def score_reasoning_gym(task, response_answer: str | None) -> float:
    """The dataset's own ``score_answer`` for an extracted response answer (0.0..1.0).

    Exceptions from the scorer propagate: they signal a broken grader, not a wrong answer.
    """
    name = task.meta.get("rg_dataset")
    entry = task.meta.get("rg_entry")
    if not name or entry is None:
        raise ValueError(f"task {task.uid} has no meta['rg_dataset']/meta['rg_entry']; it did not come "
                         f"from load_reasoning_gym")
    ds = _dataset(name, json.dumps(task.meta.get("rg_config") or {}, sort_keys=True))
    return float(ds.score_answer(response_answer, entry))


def grade(ctx, tasks, responses) -> Graded:
    _rg()  # a missing package is one clear error for the batch, before any task
    extracted = [extract_answer(r) for r in responses]
    verdicts, correctness = [], []
    for t, r, x in zip(tasks, responses, extracted):
        try:
            s = float(score_reasoning_gym(t, r if x is None else x))
        except Exception as e:
            e.add_note(f"while scoring task {t.uid!r} with the reasoning_gym verifier")
            raise
        if not math.isfinite(s):
            raise ValueError(f"reasoning_gym scorer returned {s} for task {t.uid!r}")
        verdicts.append(Verdict.CORRECT if s >= 1.0 else Verdict.WRONG)
        correctness.append(s)
    return Graded(verdicts, extracted, correctness)


VERIFIER = Verifier("reasoning_gym", grade, doc="the reasoning-gym dataset's own scorer")
