"""The reward stage: tasks and responses in, weighted scores out (docs/rewards.md).

``score = correctness_weight * correctness + format_weight * format + sum(w_i * user_fn_i)``.
Correctness is dispatched on ``Task.verifier``. Infrastructure failures (a crashed math worker, a
gold answer that does not parse) are verdict ``error``: they score 0 but are marked
``valid=False`` and counted, so the trainer can drop them instead of learning from a fake 0; a
batch where most math samples failed that way raises :class:`RewardInfrastructureError`.
User reward functions are validated when the scorer is built, so a typo in a config fails before
the first rollout rather than at step 1,000.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from reasonrl.rewards.countdown import countdown_score
from reasonrl.rewards.extract import extract_answer
from reasonrl.rewards.format import format_reward
from reasonrl.rewards.kinds import exact_match, length_penalty, qa_golds, tag_format_reward, token_f1
from reasonrl.rewards.math_verify_worker import MathVerifier, Verdict, get_default_verifier
from reasonrl.rewards.sandbox import CodeExecutor, CodeJob, SandboxConfig
from reasonrl.tasks.base import Task
from reasonrl.tasks.code import extract_code

__all__ = ["batch_reward", "VERIFIERS", "USER_FN_SIGNATURE", "RewardFunctionError", "RewardInfrastructureError",
           "RewardResult", "RewardSpec", "Scorer", "load_reward_function"]

VERIFIERS = ("math", "countdown", "exact", "reasoning_gym", "code", "qa", "qa_f1")
USER_FN_SIGNATURE = ("fn(prompt: str, response: str, answer: str, meta: dict) -> float, or, decorated with "
                     "@reasonrl.rewards.batch_reward, fn(tasks: list[Task], responses: list[str]) -> list[float]")
_CLIP = 200


class RewardFunctionError(Exception):
    """A user reward function could not be loaded, has the wrong signature, or failed on a sample."""


class RewardInfrastructureError(RuntimeError):
    """Too many samples could not be graded for reasons that are not the model's fault."""


def batch_reward(fn: Callable) -> Callable:
    """Mark ``fn(tasks, responses) -> list[float]`` as a batch reward function: called once per batch
    with the :class:`Task` records (prompt, answer, solution, verifier, meta) and the responses,
    it returns one finite score per response, in order."""
    fn.reasonrl_batch = True
    return fn


def _clip(s: str, n: int = _CLIP) -> str:
    return repr(s) if len(s) <= n else repr(s[:n]) + f"...(+{len(s) - n} chars)"


@dataclass
class RewardResult:
    """Per-sample outputs of :meth:`Scorer.score`, all lists aligned with the input batch.

    ``counts`` holds the verdict tally (``correct + wrong + timeout + error == len(batch)``) and
    ``no_answer``: samples with nothing extracted, a subset of ``wrong``. ``valid`` is False
    exactly where the verdict is ``error``.
    """

    scores: list[float]
    correct: list[bool]
    components: dict[str, list[float]]
    counts: dict[str, int]
    extracted: list[str | None]
    verdicts: list[str] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)


class RewardSpec(BaseModel):
    """Validated reward configuration; ``build()`` makes the :class:`Scorer`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    correctness_weight: float = 1.0
    format_weight: float = 0.0
    user_fns: list[tuple[str, float]] = Field(default_factory=list, description=(
        f"('pkg.mod:fn', weight) pairs; signature {USER_FN_SIGNATURE}"))
    math_timeout_s: float = Field(5.0, gt=0, description="Hard wall-clock limit per math-verify call.")

    def build(self) -> "Scorer":
        return Scorer(self.correctness_weight, self.format_weight, self.user_fns, self.math_timeout_s)


def _bad_fn(msg: str) -> RewardFunctionError:
    return RewardFunctionError(f"{msg}; expected an import path 'pkg.mod:fn' to {USER_FN_SIGNATURE}")


def load_reward_function(path: str) -> Callable[[str, str, str, dict], float]:
    """Import ``"pkg.mod:fn"`` and check it can be called as ``fn(prompt, response, answer, meta)``."""
    module_name, sep, attr = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not sep or not module_name or not attr:
        raise _bad_fn(f"reward function path {path!r} must look like 'pkg.mod:fn'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:
        raise _bad_fn(f"cannot import module {module_name!r} for reward function {path!r}: "
                      f"{type(e).__name__}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise _bad_fn(f"reward function {path!r}: module {module_name!r} has no attribute {attr!r}") from e
    if not callable(obj):
        raise _bad_fn(f"reward function {path!r} is a {type(obj).__name__}, not callable")
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError) as e:
        raise _bad_fn(f"cannot read the signature of reward function {path!r}") from e
    if getattr(obj, "reasonrl_batch", False):
        try:
            sig.bind([], [])
        except TypeError as e:
            raise _bad_fn(f"batch reward function {path!r} has signature {attr}{sig} but must accept (tasks, "
                          f"responses) ({e})") from e
        return obj
    try:
        sig.bind("prompt", "response", "answer", {})
    except TypeError as e:
        raise _bad_fn(f"reward function {path!r} has signature {attr}{sig} but must accept four positional "
                      f"arguments ({e})") from e
    return obj


@dataclass(frozen=True)
class _UserFn:
    path: str
    weight: float
    fn: Callable[[str, str, str, dict], Any]


def _finite_weight(name: str, w: Any) -> float:
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
        raise ValueError(f"{name} must be a finite number, got {w!r}")
    return float(w)


class Scorer:
    """Grades a batch: correctness by ``task.verifier``, optional format reward, user functions.

    ``user_fns`` are ``(import path, weight)`` pairs (a bare path means weight 1.0). The math
    verifier is the shared process-wide one for ``math_timeout_s`` unless ``verifier`` is given.
    ``max_error_fraction``: raise :class:`RewardInfrastructureError` when more than this share of
    a batch's math samples, or of its code samples, end in ``error`` (1.0 never raises).
    Code tasks (``verifier="code"``) run in the sandbox of ``sandbox`` (a :class:`SandboxConfig`;
    the executor is started on the first code batch, or pass ``executor``); a sandbox
    ``infra_error`` is verdict ``error`` (invalid, never a wrong answer), ``timeout`` and
    ``memory_limit`` are ``timeout``, everything else that did not pass is ``wrong``. With
    ``code_partial_credit`` the correctness component of a code sample that did not pass is the
    share of its test cases that passed (the verdict stays ``wrong``/``timeout``).
    """

    def __init__(self, correctness_weight: float = 1.0, format_weight: float = 0.0,
                 user_fns: Iterable[tuple[str, float] | str] = (), math_timeout_s: float = 5.0, *,
                 verifier: MathVerifier | None = None, max_error_fraction: float = 0.5,
                 sandbox: SandboxConfig | None = None, executor: CodeExecutor | None = None,
                 tag_format_weight: float = 0.0, length_penalty_weight: float = 0.0, length_target_chars: int = 0,
                 code_partial_credit: bool = False):
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
        self.user_fns: list[_UserFn] = []
        for entry in user_fns:
            path, weight = (entry, 1.0) if isinstance(entry, str) else tuple(entry)
            w = _finite_weight(f"weight of reward function {path!r}", weight)
            self.user_fns.append(_UserFn(path, w, load_reward_function(path)))
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
        for t in tasks:
            if t.verifier not in VERIFIERS:
                raise ValueError(f"task {t.uid!r} has unknown verifier {t.verifier!r}; valid verifiers: "
                                 f"{', '.join(VERIFIERS)}")
            if t.verifier == "countdown" and not ("numbers" in t.meta and "target" in t.meta):
                raise ValueError(f"countdown task {t.uid!r} needs meta['numbers'] and meta['target']")
            if t.verifier == "code" and not isinstance(t.meta.get("code"), dict):
                raise ValueError(f"code task {t.uid!r} needs meta['code'] (mode, cases, expected); load code "
                                 f"tasks through reasonrl.tasks (see docs/code_rewards.md)")
        n = len(tasks)
        extracted = [extract_code(r) if t.verifier == "code" else extract_answer(r)
                     for t, r in zip(tasks, responses)]
        verdicts: list[Verdict | None] = [None] * n
        correctness = [0.0] * n

        math_idx = [i for i, t in enumerate(tasks) if t.verifier == "math"]
        if math_idx:
            for i, v in zip(math_idx, self.verifier.verify_many((tasks[i].answer, extracted[i]) for i in math_idx)):
                verdicts[i] = v
        code_idx = [i for i, t in enumerate(tasks) if t.verifier == "code"]
        code_status: dict[str, int] = {}
        code_partial: dict[int, float] = {}
        if code_idx:
            run_idx = [i for i in code_idx if extracted[i]]
            spec = [tasks[i].meta["code"] for i in run_idx]
            results = self.executor.run_many([CodeJob.from_spec(extracted[i], s) for i, s in zip(run_idx, spec)])
            by_i = dict(zip(run_idx, results))
            for i in code_idx:
                st = by_i[i].status if i in by_i else "no_code"
                if self.code_partial_credit and i in by_i and st not in ("infra_error", "passed"):
                    code_partial[i] = by_i[i].passed / max(1, by_i[i].total)
                code_status[st] = code_status.get(st, 0) + 1
                verdicts[i] = (Verdict.CORRECT if st == "passed" else Verdict.ERROR if st == "infra_error"
                               else Verdict.TIMEOUT if st in ("timeout", "memory_limit") else Verdict.WRONG)
        rg_fn = None
        for i, t in enumerate(tasks):
            if t.verifier == "countdown":
                verdicts[i] = Verdict.CORRECT if countdown_score(
                    extracted[i], t.meta["numbers"], t.meta["target"]) else Verdict.WRONG
            elif t.verifier == "exact":
                got = extracted[i] if extracted[i] is not None else responses[i]
                verdicts[i] = Verdict.CORRECT if got.strip() == t.answer.strip() else Verdict.WRONG
            elif t.verifier == "code":
                if i in code_partial:  # share of test cases passed (reward.code_partial_credit)
                    correctness[i] = code_partial[i]
                    continue
            elif t.verifier in ("qa", "qa_f1"):
                got = extracted[i] if extracted[i] is not None else responses[i]
                golds = qa_golds(t.answer, t.meta)
                em = exact_match(got, golds)
                verdicts[i] = Verdict.CORRECT if em == 1.0 else Verdict.WRONG
                correctness[i] = token_f1(got, golds) if t.verifier == "qa_f1" else em
                continue
            elif t.verifier == "reasoning_gym":
                rg_fn = rg_fn or _reasoning_gym_scorer()
                got = extracted[i] if extracted[i] is not None else responses[i]
                try:
                    s = float(rg_fn(t, got))
                except Exception as e:
                    e.add_note(f"while scoring task {t.uid!r} with the reasoning_gym verifier")
                    raise
                if not math.isfinite(s):
                    raise ValueError(f"reasoning_gym scorer returned {s} for task {t.uid!r}")
                correctness[i] = s
                verdicts[i] = Verdict.CORRECT if s >= 1.0 else Verdict.WRONG
                continue
            correctness[i] = 1.0 if verdicts[i] is Verdict.CORRECT else 0.0

        counts = {k: 0 for k in ("correct", "wrong", "timeout", "error", "no_answer")}
        for v, x in zip(verdicts, extracted):
            counts[v.value] += 1
            if v is Verdict.WRONG and not x:
                counts["no_answer"] += 1
        for st, k in code_status.items():
            counts[f"code_{st}"] = k
        n_code_err = code_status.get("infra_error", 0)
        if code_idx and n_code_err / len(code_idx) > self.max_error_fraction:
            raise RewardInfrastructureError(
                f"{n_code_err}/{len(code_idx)} code samples could not be run (sandbox infra_error after "
                f"{self.sandbox.retries} retries each); the sandbox is failing, not the model. Check that "
                f"bubblewrap works (`bwrap --unshare-all --ro-bind /usr /usr /usr/bin/true`) and that the "
                f"machine is not out of processes or memory")
        n_math_err = sum(verdicts[i] is Verdict.ERROR for i in math_idx)
        if math_idx and n_math_err / len(math_idx) > self.max_error_fraction:
            raise RewardInfrastructureError(
                f"{n_math_err}/{len(math_idx)} math samples could not be graded (verdict 'error'); last "
                f"error: {self.verifier.last_error}")

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
            components[u.path] = (self._call_batch(u, tasks, responses) if getattr(u.fn, "reasonrl_batch", False)
                                  else [self._call_user(u, t, r) for t, r in zip(tasks, responses)])
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

    @staticmethod
    def _call_batch(u: _UserFn, tasks: Sequence[Task], responses: Sequence[str]) -> list[float]:
        try:
            values = u.fn(list(tasks), list(responses))
        except Exception as e:
            raise RewardFunctionError(f"batch reward function {u.path!r} raised {type(e).__name__}: {e} on a batch "
                                      f"of {len(tasks)} (first task {tasks[0].uid!r}); expected "
                                      f"{USER_FN_SIGNATURE}") from e
        try:
            values = list(values)
        except TypeError:
            raise RewardFunctionError(f"batch reward function {u.path!r} returned {type(values).__name__}, not a "
                                      f"list of {len(tasks)} numbers") from None
        if len(values) != len(tasks):
            raise RewardFunctionError(f"batch reward function {u.path!r} returned {len(values)} scores for "
                                      f"{len(tasks)} responses")
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise RewardFunctionError(f"batch reward function {u.path!r} returned {repr(v)[:80]} for sample {i} "
                                          f"(task {tasks[i].uid!r}, response {_clip(responses[i])}), not a finite number")
        return [float(v) for v in values]

    @staticmethod
    def _call_user(u: _UserFn, task: Task, response: str) -> float:
        where = (f"on task {task.uid!r} (prompt {_clip(task.prompt)}, response {_clip(response)}); "
                 f"expected {USER_FN_SIGNATURE}")
        try:
            value = u.fn(task.prompt, response, task.answer, dict(task.meta))
        except Exception as e:
            raise RewardFunctionError(f"reward function {u.path!r} raised {type(e).__name__}: {e} {where}") from e
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise RewardFunctionError(f"reward function {u.path!r} returned {repr(value)[:80]} "
                                      f"({type(value).__name__}), not a finite number, {where}")
        return float(value)


def _reasoning_gym_scorer() -> Callable[[Task, str], float]:
    try:
        from reasonrl.tasks.reasoning_gym_source import score_reasoning_gym
    except ImportError as e:
        raise ImportError(
            "verifier 'reasoning_gym' needs reasonrl.tasks.reasoning_gym_source.score_reasoning_gym "
            f"(and the optional reasoning-gym package: pip install 'reasonrl[gym]'): {e}") from e
    return score_reasoning_gym
