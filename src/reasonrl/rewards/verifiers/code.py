"""``code``: the program in the response (last fenced block, else the whole response) runs against
``meta['code']`` (mode, cases, expected) in the sandbox of :mod:`reasonrl.rewards.sandbox`; a thin
adapter from sandbox statuses to verdicts.

``passed`` is correct; ``infra_error`` (the sandbox failed, after its retries) is ``error``, never a
wrong answer; ``timeout`` and ``memory_limit`` are ``timeout``; every other status is ``wrong``. With
``reward.code_partial_credit`` a sample that ran but did not pass scores the share of its cases that
passed. Each status is counted as ``code_<status>`` (``code_no_code``: nothing to run)."""

from __future__ import annotations

from reasonrl.rewards.extract import extract_code
from reasonrl.rewards.sandbox import CodeJob
from reasonrl.rewards.verifiers.base import Graded, Verdict, Verifier

_VERDICT = {"passed": Verdict.CORRECT, "infra_error": Verdict.ERROR, "timeout": Verdict.TIMEOUT,
            "memory_limit": Verdict.TIMEOUT}


def check(task) -> None:
    if not isinstance(task.meta.get("code"), dict):
        raise ValueError(f"code task {task.uid!r} needs meta['code'] (mode, cases, expected); load code "
                         f"tasks through reasonrl.tasks (see docs/code_rewards.md)")


def grade(ctx, tasks, responses) -> Graded:
    extracted = [extract_code(r) for r in responses]
    run = [i for i, x in enumerate(extracted) if x]
    specs = [tasks[i].meta["code"] for i in run]
    results = dict(zip(run, ctx.executor.run_many([CodeJob.from_spec(extracted[i], s)
                                                   for i, s in zip(run, specs)])))
    verdicts, correctness, counts = [], [], {}
    for i in range(len(tasks)):
        res = results.get(i)
        status = res.status if res is not None else "no_code"
        counts[f"code_{status}"] = counts.get(f"code_{status}", 0) + 1
        v = _VERDICT.get(status, Verdict.WRONG)
        verdicts.append(v)
        partial = ctx.code_partial_credit and res is not None and status not in ("infra_error", "passed")
        correctness.append(res.passed / max(1, res.total) if partial else float(v is Verdict.CORRECT))
    return Graded(verdicts, extracted, correctness, counts)


def infra_error(ctx, n_error: int, n: int) -> str:
    return (f"{n_error}/{n} code samples could not be run (sandbox infra_error after {ctx.sandbox.retries} "
            f"retries each); the sandbox is failing, not the model. Check that bubblewrap works (`bwrap "
            f"--unshare-all --ro-bind /usr /usr /usr/bin/true`) and that the machine is not out of processes "
            f"or memory")


VERIFIER = Verifier("code", grade, check=check, infra_error=infra_error, doc="programs run in the sandbox")
