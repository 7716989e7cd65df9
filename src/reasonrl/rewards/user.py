"""User reward functions by import path ``pkg.mod:fn``: loading with signature checks, and calling
them with errors that name the function and the sample (docs/rewards.md)."""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from reasonrl.tasks.base import Task

__all__ = ["USER_FN_SIGNATURE", "RewardFunctionError", "UserFn", "batch_reward", "call_batch", "call_user",
           "import_object", "load_reward_function"]

USER_FN_SIGNATURE = ("fn(prompt: str, response: str, answer: str, meta: dict) -> float, or, decorated with "
                     "@reasonrl.rewards.batch_reward, fn(tasks: list[Task], responses: list[str]) -> list[float]")
_CLIP = 200


class RewardFunctionError(Exception):
    """A user reward function could not be loaded, has the wrong signature, or failed on a sample."""


def batch_reward(fn: Callable) -> Callable:
    """Mark ``fn(tasks, responses) -> list[float]`` as a batch reward function: called once per batch
    with the :class:`Task` records (prompt, answer, solution, verifier, meta) and the responses,
    it returns one finite score per response, in order."""
    fn.reasonrl_batch = True
    return fn


def _clip(s: str, n: int = _CLIP) -> str:
    return repr(s) if len(s) <= n else repr(s[:n]) + f"...(+{len(s) - n} chars)"


def _bad_fn(msg: str) -> RewardFunctionError:
    return RewardFunctionError(f"{msg}; expected an import path 'pkg.mod:fn' to {USER_FN_SIGNATURE}")


def import_object(path: str) -> Any:
    """The object named by ``"pkg.mod:attr"`` (``attr`` may be dotted)."""
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
    return obj


def load_reward_function(path: str) -> Callable[[str, str, str, dict], float]:
    """Import ``"pkg.mod:fn"`` and check it can be called as ``fn(prompt, response, answer, meta)``
    (or, for a :func:`batch_reward`, as ``fn(tasks, responses)``)."""
    obj = import_object(path)
    attr = path.partition(":")[2]
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
class UserFn:
    path: str
    weight: float
    fn: Callable[..., Any]

    @property
    def is_batch(self) -> bool:
        return bool(getattr(self.fn, "reasonrl_batch", False))

    def __call__(self, tasks: Sequence[Task], responses: Sequence[str]) -> list[float]:
        """One finite score per response, whichever of the two signatures the function has."""
        if self.is_batch:
            return call_batch(self, tasks, responses)
        return [call_user(self, t, r) for t, r in zip(tasks, responses)]


def call_batch(u: UserFn, tasks: Sequence[Task], responses: Sequence[str]) -> list[float]:
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


def call_user(u: UserFn, task: Task, response: str) -> float:
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
