"""Code tasks: the built-in ``code`` family and the loader for user code-task rows.

A code task has ``verifier="code"`` and ``meta["code"] = {"mode", "cases", "expected"}``:

- ``mode="call"``: each case is ``{"call": fn_name, "args": [...]}`` or ``{"expr": "f(1, 2)"}``; the
  program's return value is compared type-strictly with the encoded expected value;
- ``mode="stdio"``: each case is ``{"stdin": text}``; the program's stdout is compared with the
  expected text (trailing whitespace ignored).

Expected values live only in ``expected``, which the sandbox never receives (rewards/sandbox.py).
They are encoded once, at load time, with the same type-keeping encoding the sandbox uses for the
program's outputs, so a row whose expected value cannot be compared fails the load, naming the row.

The built-in family (``builtin:code``) asks for a one-line Python function ``f`` composed of
``difficulty`` operations on an integer, a string or a list, e.g. "Write f(xs): the sum of xs, then
times 3." with the demonstration ``def f(xs):\\n    return sum(xs)*3``. Four test inputs per task
are drawn with the problem; the expected outputs are computed by evaluating the reference
expression here, in the trusted process.
"""

from __future__ import annotations

import ast
import json
import keyword
import random
from typing import Any


DESCRIPTION = ("write a one-line Python function f composed of k operations on an int, a string or a "
               "list (difficulty = k); graded by running 4 test calls in the sandbox")
FORMATS_HINT = (
    "code rows need 'prompt' and one of: 'fn_name' + 'tests' [{'args': [...], 'expected': ...}] (function "
    "calls); 'tests' [{'input': stdin text, 'output': stdout text}] (a program reading stdin); 'tests' "
    "['assert f(1) == 2', ...] (single assert statements that call the program's functions); APPS-style "
    "'input_output' {'inputs': [...], 'outputs': [...], 'fn_name'?}; or HumanEval-style 'test' (source "
    "defining check(candidate)) + 'entry_point'")

# ------------------------------------------------------------------------------ built-in family
# Each op: (input type, output type, phrase, template, precedence of the result, needs a constant).
# Precedence: 1 additive, 2 multiplicative, 3 power, 4 atom (name, call, subscript, method call).
_OPS = [
    ("int", "int", "{e} plus {a}", "{e}+{a}", 1, True),
    ("int", "int", "{e} minus {a}", "{e}-{a}", 1, True),
    ("int", "int", "{e} times {a}", "{e}*{a}", 2, True),
    ("int", "int", "{e} mod {a}", "{e}%{a}", 2, True),  # a in 2..9
    ("int", "int", "{e} floor-divided by {a}", "{e}//{a}", 2, True),
    ("int", "int", "{e} squared", "{e}**2", 3, False),
    ("list", "int", "the sum of {e}", "sum({e})", 4, False),
    ("list", "int", "the max of {e}", "max({e})", 4, False),
    ("list", "int", "the min of {e}", "min({e})", 4, False),
    ("list", "int", "the length of {e}", "len({e})", 4, False),
    ("list", "int", "the first item of {e}", "{e}[0]", 4, False),
    ("list", "int", "the last item of {e}", "{e}[-1]", 4, False),
    ("list", "list", "{e} sorted", "sorted({e})", 4, False),
    ("list", "list", "{e} reversed", "{e}[::-1]", 4, False),
    ("list", "list", "{e} with each item times {a}", "[v*{a} for v in {e}]", 4, True),
    ("list", "list", "{e} with each item plus {a}", "[v+{a} for v in {e}]", 4, True),
    ("list", "list", "the items of {e} above {a}", "[v for v in {e} if v>{a}]", 4, True),
    ("str", "str", "{e} in upper case", "{e}.upper()", 4, False),
    ("str", "str", "{e} reversed", "{e}[::-1]", 4, False),
    ("str", "str", "{e} repeated {a} times", "{e}*{a}", 2, True),
    ("str", "str", "the first {a} letters of {e}", "{e}[:{a}]", 4, True),
    ("str", "int", "the number of 'a' in {e}", "{e}.count('a')", 4, False),
    ("str", "int", "the length of {e}", "len({e})", 4, False),
]
_PREC_NEED = {"{e}+{a}": 1, "{e}-{a}": 1, "{e}*{a}": 2, "{e}%{a}": 2, "{e}//{a}": 2}


def _needs(tmpl: str) -> int:
    """Lowest precedence the operand may have in ``tmpl`` without brackets."""
    if tmpl in _PREC_NEED:
        return _PREC_NEED[tmpl]
    return 4 if tmpl.startswith("{e}") else 0  # postfix (x[0], s.upper(), x**2) needs an atom
_VAR = {"int": "x", "list": "xs", "str": "s"}


def _inputs(rng: random.Random, typ: str) -> list:
    if typ == "int":
        return rng.sample(range(-20, 21), 4)
    if typ == "list":
        return [[rng.randint(0, 9) for _ in range(rng.randint(3, 6))] for _ in range(4)]
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice("aab" + letters) for _ in range(rng.randint(3, 7))) for _ in range(4)]


def make_code(rng: random.Random, k: int):
    """A ``difficulty``-k problem: k chained operations starting from an int, a str or a list.

    Redraws when the reference fails on a drawn input (``max`` of an empty filtered list) or gives
    the same output for all four inputs (a constant would pass such tests)."""
    from reasonrl.tasks.builtin import _Problem  # here, not at import time: builtin imports this module

    for _ in range(1000):
        p = _draw(rng, k)
        if p is not None:
            return _Problem(**p)
    raise RuntimeError("code generator found no valid problem in 1000 draws")  # pragma: no cover


def _draw(rng: random.Random, k: int) -> dict | None:
    from reasonrl.rewards.sandbox_runner import encode  # lazy: reasonrl.rewards imports this module
    typ = rng.choice(["int", "list", "str"])
    var = _VAR[typ]
    expr, prec, cur = var, 4, typ
    phrases = []
    for step in range(k):
        ops = [o for o in _OPS if o[0] == cur]
        src, dst, phrase, tmpl, out_prec, has_const = rng.choice(ops)
        a = rng.randint(2, 9)
        e = expr if prec >= _needs(tmpl) else f"({expr})"
        expr = tmpl.format(e=e, a=a)
        prec, cur = out_prec, dst
        if step == 0:
            phrases.append(phrase.format(e=var, a=a))
        else:
            rest = phrase.replace(" of {e}", "").replace(" in {e}", "").replace("{e} ", "")
            phrases.append("then " + rest.format(a=a))
    prompt = f"Write f({var}): " + ", ".join(phrases) + "."
    solution = f"def f({var}):\n    return {expr}"
    args = _inputs(rng, typ)
    fn = eval(f"lambda {var}: {expr}", {})  # our own generated expression, in the trusted process
    try:
        expected = [encode(fn(v)) for v in args]
    except (IndexError, ValueError, ZeroDivisionError):
        return None
    if all(e == expected[0] for e in expected):
        return None
    return dict(
        canonical=f"code:{prompt}",
        prompt=prompt,
        answer=solution,
        solution=solution,
        verifier="code",
        extra={"code": {"mode": "call", "cases": [{"call": "f", "args": [v]} for v in args], "expected": expected}},
    )


# The tiny model for this family (``builtin:tiny-code``) stops SFT at 250 steps, where it partly
# solves difficulty 2 (val pass@1 0.175). Measured: the default 1400-step build solves 99.5% of
# held-out difficulty-2 problems (nothing left for RL) and 10.5% of difficulty 3 with pass@4 equal
# to pass@1 (it only ever writes two operations, so RL has nothing to reinforce).
TINY_MODEL_SPEC = {"sft_steps": 250, "eval_every": 50}


# ------------------------------------------------------------------------------ user rows
class CodeRowError(ValueError):
    pass


def _literal(node: ast.AST, src: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise CodeRowError(f"expected value {ast.get_source_segment(src, node)!r} is not a Python literal") from e


def parse_assert(src: str):
    """Split one assert test for the sandbox and the trusted parent (reasonrl.rewards.sandbox_asserts):
    returns ``(case, expected)``; only the program's values leave the sandbox, the verdict is decided here."""
    from reasonrl.rewards.sandbox_asserts import split_assert
    from reasonrl.rewards.sandbox_runner import encode

    try:
        spec = split_assert(src)
    except SyntaxError as e:
        raise CodeRowError(f"test {src!r:.80} is not valid Python ({e.msg})") from None
    except ValueError as e:
        raise CodeRowError(f"test {src!r:.80} {e}") from None
    return spec.case, (spec.expected if spec.form == "parent" else encode(spec.expected))


def _fn_name(name: Any) -> str:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise CodeRowError(f"fn_name must be a Python identifier, got {name!r:.60}")
    return name


def check_spec(prompt: Any, test: Any, entry_point: Any) -> dict:
    """``meta["code"]`` for a HumanEval-style row: ``test`` defines ``check(candidate)`` and the
    program is ``prompt`` + the response. Graded in check mode (rewards/sandbox.py): the dataset's
    prompt and test run in a checker sandbox that never runs the program; every ``candidate(...)``
    call is answered by the program's own sandbox with a type-strictly encoded value."""
    ep = _fn_name(entry_point)
    if not isinstance(prompt, str) or not isinstance(test, str):
        raise CodeRowError("HumanEval-style rows need string 'prompt' and 'test'")
    for name, src in (("prompt", prompt), ("test", test)):
        try:
            tree = ast.parse(src)
        except SyntaxError as e:
            raise CodeRowError(f"{name} is not valid Python ({e.msg}, line {e.lineno})") from None
        if name == "test" and not any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body):
            raise CodeRowError("'test' must define check(candidate) (HumanEval format)")
    return {"mode": "check", "cases": [{"setup": prompt, "test": test, "entry_point": ep}], "expected": [True]}


def code_spec_from_row(row: dict) -> dict:
    """``meta["code"]`` for a user row in any supported format (see ``FORMATS_HINT``)."""
    from reasonrl.rewards.sandbox_runner import Unencodable, encode
    if "entry_point" in row and isinstance(row.get("test"), str):
        return check_spec(row.get("prompt"), row["test"], row["entry_point"])
    tests = row.get("tests", row.get("test_list"))
    io = row.get("input_output")
    if isinstance(io, str):
        try:
            io = json.loads(io)
        except ValueError as e:
            raise CodeRowError(f"input_output is not valid JSON ({e})") from None
    if io is not None:
        if not isinstance(io, dict) or not isinstance(io.get("inputs"), list) or not isinstance(io.get("outputs"), list):
            raise CodeRowError("input_output must hold lists 'inputs' and 'outputs'")
        fn = io.get("fn_name") or row.get("fn_name")
        if fn:
            tests = [{"args": i, "expected": o} for i, o in zip(io["inputs"], io["outputs"])]
            row = {**row, "fn_name": fn}
        else:
            tests = [{"input": i, "output": o} for i, o in zip(io["inputs"], io["outputs"])]
        if len(io["inputs"]) != len(io["outputs"]):
            raise CodeRowError(f"input_output has {len(io['inputs'])} inputs but {len(io['outputs'])} outputs")
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except ValueError:
            tests = [t for t in tests.splitlines() if t.strip()]
    if not isinstance(tests, list) or not tests:
        raise CodeRowError(f"no test cases; {FORMATS_HINT}")
    cases, expected = [], []
    try:
        if all(isinstance(t, str) for t in tests):
            mode = "call"
            for t in tests:
                case, want = parse_assert(t)
                cases.append(case)
                expected.append(want)
        elif all(isinstance(t, dict) and "input" in t and "output" in t for t in tests):
            mode = "stdio"
            for t in tests:
                if not isinstance(t["input"], str) or not isinstance(t["output"], str):
                    raise CodeRowError("stdin/stdout tests need string 'input' and 'output'")
                cases.append({"stdin": t["input"]})
                expected.append(t["output"])
        elif all(isinstance(t, dict) and "expected" in t for t in tests):
            mode = "call"
            name = _fn_name(row.get("fn_name"))
            for t in tests:
                args = t.get("args", t.get("input", []))
                if not isinstance(args, list):
                    raise CodeRowError(f"'args' must be a list of positional arguments, got {type(args).__name__}")
                json.dumps(args)
                cases.append({"call": name, "args": args})
                expected.append(encode(t["expected"]))
        else:
            raise CodeRowError(f"unrecognised test format; {FORMATS_HINT}")
    except (Unencodable, TypeError) as e:
        raise CodeRowError(f"a test value cannot be compared: {e}") from None
    return {"mode": mode, "cases": cases, "expected": expected}
