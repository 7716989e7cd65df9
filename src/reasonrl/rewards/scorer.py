"""The reward stage: tasks and responses in, weighted scores out (docs/rewards.md).

``score = correctness_weight * correctness + format_weight * format + sum(w_i * user_fn_i)``.
Correctness comes from the batch verifier that ``Task.verifier`` names (:mod:`reasonrl.rewards.verifiers`).
Infrastructure failures (a crashed math worker, a gold answer that does not parse, a sandbox that
cannot start) are verdict ``error``: they score 0 but are marked ``valid=False`` and counted, so the
trainer can drop them instead of learning from a fake 0; a batch where most samples of one verifier
failed that way raises :class:`RewardInfrastructureError`. User reward functions are validated when
the scorer is built, so a typo in a config fails before the first rollout rather than at step 1,000.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from reasonrl.rewards.answer_modes import ExtractMode, check_extract_mode
from reasonrl.rewards.format import format_reward
from reasonrl.rewards.kinds import length_penalty, tag_format_reward
from reasonrl.rewards.math_verify_worker import MathVerifier, Verdict, get_default_verifier
from reasonrl.rewards.result import RewardInfrastructureError, RewardResult
from reasonrl.rewards.sandbox import CodeExecutor, SandboxConfig
from reasonrl.rewards.user import (USER_FN_SIGNATURE, RewardFunctionError, UserFn, batch_reward,
                                   load_reward_function)
from reasonrl.rewards.verifiers import REGISTRY as VERIFIERS
from reasonrl.rewards.verifiers import get_verifier, verdict_correctness

if TYPE_CHECKING:
    from reasonrl.tasks.base import Task

__all__ = ["batch_reward", "VERIFIERS", "USER_FN_SIGNATURE", "RewardFunctionError", "RewardInfrastructureError",
           "RewardResult", "RewardSpec", "Scorer", "load_reward_function"]


class RewardSpec(BaseModel):
    """Validated reward configuration; ``build()`` makes the :class:`Scorer`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    correctness_weight: float = 1.0
    format_weight: float = 0.0
    user_fns: list[tuple[str, float]] = Field(default_factory=list, description=(
        f"('pkg.mod:fn', weight) pairs; signature {USER_FN_SIGNATURE}"))
    math_timeout_s: float = Field(5.0, gt=0, description="Hard wall-clock limit per math-verify call.")
    extract: ExtractMode = Field("boxed", description="Answer extraction mode (reasonrl.rewards.answer_modes).")

    def build(self) -> "Scorer":
        return Scorer(self.correctness_weight, self.format_weight, self.user_fns, self.math_timeout_s,
                      extract=self.extract)


def _finite_weight(name: str, w: Any) -> float:
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
        raise ValueError(f"{name} must be a finite number, got {w!r}")
    return float(w)


class Scorer:
    """Grades a batch: correctness by ``task.verifier`` (a registered batch verifier), optional format
    reward, user functions.

    ``user_fns`` are ``(import path, weight)`` pairs (a bare path means weight 1.0). The math
    verifier is the shared process-wide one for ``math_timeout_s`` unless ``verifier`` is given.
    ``max_error_fraction``: raise :class:`RewardInfrastructureError` when more than this share of
    a batch's samples of one verifier (math, code, ...) end in ``error`` (1.0 never raises).
    Code tasks (``verifier="code"``) run in the sandbox of ``sandbox`` (a :class:`SandboxConfig`;
    the executor is started on the first code batch, or pass ``executor``); a sandbox
    ``infra_error`` is verdict ``error`` (invalid, never a wrong answer), ``timeout`` and
    ``memory_limit`` are ``timeout``, everything else that did not pass is ``wrong``. With
    ``code_partial_credit`` the correctness component of a code sample that did not pass is the
    share of its test cases that passed (the verdict stays ``wrong``/``timeout``). ``extract`` picks
    how the ``math`` and ``exact`` verifiers find the answer (:mod:`reasonrl.rewards.answer_modes`).
    """

    def __init__(self, correctness_weight: float = 1.0, format_weight: float = 0.0,
                 user_fns: Iterable[tuple[str, float] | str] = (), math_timeout_s: float = 5.0, *,
                 verifier: MathVerifier | None = None, max_error_fraction: float = 0.5,
                 sandbox: SandboxConfig | None = None, executor: CodeExecutor | None = None,
                 tag_format_weight: float = 0.0, length_penalty_weight: float = 0.0, length_target_chars: int = 0,
                 code_partial_credit: bool = False, extract: str = "boxed"):
        self.extract = check_extract_mode(extract)
        self.correctness_weight = _finite_weight("correctness_weight", correctness_weight)
        self.format_weight = _finite_weight("format_weight", format_weight)
        self.math_timeout_s = _finite_weight("math_timeout_s", math_timeout_s)
        if self.math_timeout_s <= 0:
            raise ValueError(f"math_timeout_s must be > 0, got {math_timeout_s!r}")
        self.max_error_fraction = float(max_error_fraction)
        self.tag_format_weight = _finite_weight("tag_format_weight", tag_format_weight)
        self.length_penalty_weight = _finite_weight("length_penalty_weight", length_penalty_weight)
        self.length_target_chars = int(length_target_chars)
        self.code_partial_credit = bool(code_partial_credit)
        if self.length_penalty_weight and self.length_target_chars <= 0:
            raise ValueError("a length penalty needs length_target_chars > 0 (reward.length_target_chars)")
        self.user_fns: list[UserFn] = []
        for entry in user_fns:
            path, weight = (entry, 1.0) if isinstance(entry, str) else tuple(entry)
            w = _finite_weight(f"weight of reward function {path!r}", weight)
            self.user_fns.append(UserFn(path, w, load_reward_function(path)))
        names = [u.path for u in self.user_fns]
        dup = {n for n in names if names.count(n) > 1 or n in ("correctness", "format")}
        if dup:
            raise ValueError(f"reward function listed twice or shadowing a built-in component: {sorted(dup)}")
        self._verifier = verifier
        self.sandbox = sandbox or SandboxConfig()
        self._executor = executor

    @classmethod
    def from_spec(cls, spec: RewardSpec) -> "Scorer":
        return spec.build()

    def metrics(self) -> dict[str, float]:
        """Cumulative counters of the graders that ran so far, for the run's metrics: math-verify
        verdicts and cost paths (timeouts, worker kills and respawns, fast-path/prefilter/cache
        fallbacks, errors) and sandbox statuses. A rising timeout rate is itself a reward-hacking
        signal (reliability.md §4). Never starts a worker."""
        out: dict[str, float] = {}
        if self._verifier is not None:
            out.update({f"reward/math_{k}": float(v) for k, v in self._verifier.counts.items()})
        if self._executor is not None:
            out.update({f"reward/code_{k}": float(v) for k, v in self._executor.counts.items()})
        return out

    @property
    def executor(self) -> CodeExecutor:
        if self._executor is None:
            self._executor = CodeExecutor(self.sandbox)
        return self._executor

    @property
    def verifier(self) -> MathVerifier:
        if self._verifier is None:
            self._verifier = get_default_verifier(self.math_timeout_s)
        return self._verifier

    # ------------------------------------------------------------------------------------
    def score(self, tasks: Sequence[Task], responses: Sequence[str]) -> RewardResult:
        """Score ``responses[i]`` against ``tasks[i]``; raises before any work on a malformed batch."""
        if len(tasks) != len(responses):
            raise ValueError(f"score() got {len(tasks)} tasks but {len(responses)} responses")
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(tasks):
            v = get_verifier(t.verifier)
            if v is None:
                raise ValueError(f"task {t.uid!r} has unknown verifier {t.verifier!r}; valid verifiers: "
                                 f"{', '.join(VERIFIERS)}, or an import path 'pkg.mod:fn'")
            if v.check is not None:
                v.check(t)
            groups.setdefault(t.verifier, []).append(i)
        n = len(tasks)
        verdicts: list[Verdict] = [Verdict.ERROR] * n
        extracted: list[str | None] = [None] * n
        correctness = [0.0] * n
        counts = {k: 0 for k in ("correct", "wrong", "timeout", "error", "no_answer")}
        extra: dict[str, int] = {}
        for name, idx in groups.items():
            g = get_verifier(name).grade(self, [tasks[i] for i in idx], [responses[i] for i in idx])
            if not len(g.verdicts) == len(g.extracted) == len(idx):
                raise RuntimeError(f"verifier {name!r} graded {len(g.verdicts)} of {len(idx)} samples")
            corr = verdict_correctness(g.verdicts) if g.correctness is None else g.correctness
            for j, i in enumerate(idx):
                verdicts[i], extracted[i], correctness[i] = g.verdicts[j], g.extracted[j], float(corr[j])
            for k, c in g.counts.items():
                extra[k] = extra.get(k, 0) + c
        for v, x in zip(verdicts, extracted):
            counts[v.value] += 1
            if v is Verdict.WRONG and not x:
                counts["no_answer"] += 1
        counts.update(extra)
        for name, idx in groups.items():
            n_err = sum(verdicts[i] is Verdict.ERROR for i in idx)
            if n_err / len(idx) > self.max_error_fraction:
                v = get_verifier(name)
                raise RewardInfrastructureError(
                    v.infra_error(self, n_err, len(idx)) if v.infra_error is not None else
                    f"{n_err}/{len(idx)} samples of verifier {name!r} could not be graded (verdict 'error')")

        components: dict[str, list[float]] = {"correctness": correctness,
                                              "format": [format_reward(r) for r in responses]}
        extra_w: dict[str, float] = {}
        if self.tag_format_weight:
            components["tag_format"] = [tag_format_reward(r) for r in responses]
            extra_w["tag_format"] = self.tag_format_weight
        if self.length_penalty_weight:
            components["length_penalty"] = [length_penalty(r, self.length_target_chars) for r in responses]
            extra_w["length_penalty"] = self.length_penalty_weight
        for u in self.user_fns:
            components[u.path] = u(tasks, responses)
        scores = []
        for i in range(n):
            s = self.correctness_weight * correctness[i] + self.format_weight * components["format"][i]
            for name, w in extra_w.items():
                s += w * components[name][i]
            for u in self.user_fns:
                s += u.weight * components[u.path][i]
            scores.append(s)
        return RewardResult(scores=scores, correct=[v is Verdict.CORRECT for v in verdicts],
                            components=components, counts=counts, extracted=extracted,
                            verdicts=[v.value for v in verdicts], valid=[v is not Verdict.ERROR for v in verdicts])
