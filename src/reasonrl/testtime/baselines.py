"""Sampling baselines for test-time methods: majority vote and oracle best-of-n at a fixed budget.

Both use ``n`` sampled generations per problem from the unchanged model (``HFEngine``), the budget
LatentSeek may spend at most (1 + iterations solver generations). Majority vote is deployable;
oracle best-of-n ("any of the n samples is correct", i.e. realised pass@n) uses the gold answer and
is the fair counterpart of LatentSeek with the oracle reward, which also stops on the gold answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reasonrl.eval.metrics import maj_at_k
from reasonrl.rewards import Scorer
from reasonrl.rollout.hf_engine import HFEngine
from reasonrl.rollout.sampling import SamplingParams
from reasonrl.tasks import Task
from reasonrl.testtime.grading import Fallback, grade


@dataclass
class SampledBaseline:
    """One problem's ``n`` samples: majority-vote and oracle best-of-n verdicts."""

    answers: list[str | None]
    correct: list[bool]

    @property
    def majority_correct(self) -> bool:
        return maj_at_k([self.answers], [self.correct], len(self.answers)) == 1.0

    @property
    def best_of_n_correct(self) -> bool:
        return any(self.correct)

    @property
    def first_correct(self) -> int | None:
        """1-based index of the first correct sample: generations a stop-on-gold search would use."""
        return next((i + 1 for i, c in enumerate(self.correct) if c), None)


def sample_baselines(engine: HFEngine, scorer: Scorer, tasks: Sequence[Task], prompts: Sequence[str], *, n: int,
                     temperature: float, max_new_tokens: int, seed: int, fallback: Fallback = "none",
                     chunk: int = 32) -> list[SampledBaseline]:
    """``n`` samples per prompt (``chunk`` prompts per engine call), graded with ``grade``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out: list[SampledBaseline] = []
    for s in range(0, len(prompts), chunk):
        ps = list(prompts[s:s + chunk])
        roll = engine.generate(ps, SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens,
                                                  seed=seed + s))
        correct, answers = grade(scorer, [tasks[s + i] for i in roll.task_index], roll.response_text, fallback)
        for p in range(len(ps)):
            out.append(SampledBaseline(answers=answers[p * n:(p + 1) * n], correct=correct[p * n:(p + 1) * n]))
    return out
