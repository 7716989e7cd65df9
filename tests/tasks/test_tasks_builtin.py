"""Built-in suite: determinism, split disjointness, stream offsets, and worked solutions that check out."""

import ast
import re
from collections import Counter
from fractions import Fraction

import pytest

from reasonrl.tasks import FAMILIES, generate

FAMS = ["arith", "countdown", "linear"]
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def _eval(text: str, x=None) -> Fraction:
    """Exact evaluation of + - * / over integers (and x), standard precedence; independent of the package."""

    def ev(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.Name) and node.id == "x" and x is not None:
            return Fraction(x)
        raise AssertionError(f"unexpected syntax in {text!r}")

    return ev(ast.parse(text, mode="eval").body)


def _leaves(text: str) -> list[int]:
    return [n.value for n in ast.walk(ast.parse(text, mode="eval")) if isinstance(n, ast.Constant)]


def _steps(task) -> list[str]:
    body, boxed = task.solution.rsplit(" \\boxed{", 1)
    assert boxed == task.answer + "}"
    assert body.endswith(".")
    return body[:-1].split(". ")


@pytest.fixture(scope="module")
def streams():
    """Per family: the train stream's first 5000 and a 500-item test set (built once, reused)."""
    return {f: (generate(f, 5000, "train", seed=3), generate(f, 500, "test", seed=3)) for f in FAMS}


def test_deterministic_and_seed_sensitive():
    for f in [*FAMS, "mix"]:
        a, b = generate(f, 30, seed=7), generate(f, 30, seed=7)
        assert [(t.uid, t.prompt, t.solution, t.meta) for t in a] == [(t.uid, t.prompt, t.solution, t.meta) for t in b]
        assert [t.prompt for t in generate(f, 30, seed=8)] != [t.prompt for t in a]


def test_splits_disjoint_and_labelled(streams):
    for f, (train, test) in streams.items():
        assert not {t.prompt for t in train} & {t.prompt for t in test}, f
        assert all(t.meta["split"] == "train" for t in train) and all(t.meta["split"] == "test" for t in test)
        assert len({t.prompt for t in test}) == 500, f"{f}: test set must be unique"
        # membership is a property of the problem, not of the seed
        assert not {t.prompt for t in generate(f, 2000, "train", seed=4)} & {t.prompt for t in test}, f


def test_start_offsets_match_one_big_call():
    for f in [*FAMS, "mix"]:
        for split in ("train", "test"):
            whole = generate(f, 40, split, seed=1)
            parts = generate(f, 13, split, seed=1) + generate(f, 20, split, seed=1, start=13) \
                + generate(f, 7, split, seed=1, start=33)
            assert [t.prompt for t in parts] == [t.prompt for t in whole], (f, split)
    assert generate("arith", 5, start=10)[0].meta["index"] == 10


def test_arith_steps_are_left_to_right_and_correct(streams):
    for t in streams["arith"][0][:1000] + streams["arith"][1]:
        expr = re.fullmatch(r"Compute (.+)\.", t.prompt).group(1)
        tokens = re.findall(r"\d+|[-+*]", expr)
        value = int(tokens[0])
        steps = _steps(t)
        assert len(steps) == (len(tokens) - 1) // 2 == t.meta["difficulty"]
        for i, step in enumerate(steps):
            m = re.fullmatch(r"(\d+)([-+*])(\d+)=(\d+)", step)
            assert m, step
            a, op, b, v = int(m[1]), m[2], int(m[3]), int(m[4])
            assert (a, op, b) == (value, tokens[2 * i + 1], int(tokens[2 * i + 2]))
            assert v == _eval(f"{a}{op}{b}") and 0 <= v <= 9999
            assert (op == "*" and 2 <= b <= 9) or (op != "*" and 1 <= b <= 99)
            value = v
        assert str(value) == t.answer and t.verifier == "math"


def test_countdown_gold_expression_uses_each_number_once(streams):
    for t in streams["countdown"][0][:1000] + streams["countdown"][1]:
        nums, target = t.meta["numbers"], t.meta["target"]
        assert t.prompt == f"Use {' '.join(map(str, nums))} to make {target}."
        assert 1 <= target <= 999 and t.verifier == "countdown"
        assert _eval(t.answer) == target
        assert Counter(_leaves(t.answer)) == Counter(nums)
        assert t.solution.endswith(f"\\boxed{{{t.answer}}}")
        for step in _steps(t):
            lhs, rhs = step.split("=")
            assert _eval(lhs) == int(rhs) > 0, step


def test_linear_steps_hold_at_the_answer(streams):
    tasks = streams["linear"][0][:300] + streams["linear"][1]
    for d in (2, 3):
        tasks += generate("linear", 300, seed=2, difficulty=d) + generate("linear", 100, "test", difficulty=d)
    for t in tasks:
        x = int(t.answer)
        eq = re.fullmatch(r"Solve (.+) for x\.", t.prompt).group(1)
        lhs, rhs = eq.split("=")
        assert _eval(lhs, x) == _eval(rhs, x), t.prompt
        steps = _steps(t)
        assert len(steps) >= t.meta["difficulty"]
        for step in steps:
            sides = [_eval(s, x) for s in step.split("=")]
            assert len(set(sides)) == 1, (t.prompt, step)
        assert steps[-1].startswith("x=") and steps[-1].endswith(f"={x}")


def test_difficulty_changes_problems():
    for k in (1, 5):
        assert all(len(re.findall(r"[-+*]", t.prompt)) == k for t in generate("arith", 50, difficulty=k))
    assert all(len(t.meta["numbers"]) == 4 for t in generate("countdown", 50, difficulty=4))
    assert all("(" in t.prompt for t in generate("linear", 50, difficulty=3))
    assert all(t.prompt[:-len(" for x.")].count("x") == 2 for t in generate("linear", 50, difficulty=2))
    for f, spec in FAMILIES.items():
        assert generate(f, 1)[0].meta["difficulty"] == spec.default_difficulty and spec.description


def test_mix_round_robin():
    tasks = generate("mix", 9, seed=4)
    assert [t.meta["family"] for t in tasks] == FAMS * 3
    assert [t.prompt for t in tasks[1::3]] == [t.prompt for t in generate("countdown", 3, seed=4)]


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="arith, countdown, linear, code, knowledge, mix"):
        generate("algebra", 3)
    with pytest.raises(ValueError, match="train, test"):
        generate("arith", 3, split="dev")
    with pytest.raises(ValueError, match="difficulty"):
        generate("linear", 3, difficulty=9)
    with pytest.raises(ValueError, match="n and start"):
        generate("arith", -1)
    assert generate("arith", 0) == []


def test_exhausted_unique_space_fails_instead_of_looping():
    # one +-* operation on numbers < 100: only ~1.5k test problems exist
    with pytest.raises(ValueError, match="unique"):
        generate("arith", 5000, split="test", difficulty=1)


def test_slipped_solution_forgets_carries_and_borrows_and_the_answer_follows():
    from reasonrl.tasks.builtin import slipped_arith_solution

    # rate 1: every carry (18+25) and borrow (43-7) is forgotten; multiplication is never touched
    assert slipped_arith_solution("Compute 18+25-7*2.", 1.0, "k") == "18+25=33. 33-7=36. 36*2=72. \\boxed{72}"
    assert slipped_arith_solution("Compute 18+25-7*2.", 0.0, "k") == "18+25=43. 43-7=36. 36*2=72. \\boxed{72}"
    # no carry, no borrow: always right
    assert slipped_arith_solution("Compute 12+13-4.", 1.0, "k") == "12+13=25. 25-4=21. \\boxed{21}"
    # the same key gives the same slips; rate 0.5 slips on roughly half of the eligible steps
    from reasonrl.tasks import generate

    tasks = generate("arith", 300, seed=3)
    sols = [slipped_arith_solution(t.prompt, 0.5, t.uid) for t in tasks]
    assert sols == [slipped_arith_solution(t.prompt, 0.5, t.uid) for t in tasks]
    assert all(s == t.solution for s, t in zip([slipped_arith_solution(t.prompt, 0.0, t.uid) for t in tasks], tasks))
    wrong = sum(not s.endswith("{" + t.answer + "}") for s, t in zip(sols, tasks)) / len(tasks)
    assert 0.2 < wrong < 0.5
