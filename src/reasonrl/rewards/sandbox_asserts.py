"""Assert-style tests decided in the trusted parent (docs/code_rewards.md, issue 11 item 3).

An assert such as ``assert abs(area(2) - 12.566) < 1e-6`` mixes the program's functions with test
logic. Evaluating the whole expression inside the program's process lets the program decide the
verdict: it can rebind ``abs``/``bool``/``math``, mutate the ``builtins`` module, or return an object
whose comparisons always succeed. So the loader splits each assert with ``ast``:

- the *program parts*: the maximal sub-expressions that need a name the program defines (usually
  one call, ``area(2)``). The sandbox evaluates only these, against built-ins captured before the
  program ran, and sends their values out with the type-strict encoding (a custom object cannot be
  encoded and fails the test);
- the *check*: the rest of the assert with the program parts replaced by ``_v0``, ``_v1``, ...,
  evaluated HERE by a small interpreter over plain decoded values (a whitelist of node types,
  built-in helpers, ``math`` functions and pure methods, with size guards), never by ``eval``.

``assert PART == LITERAL`` keeps the older, stricter form: the value is compared type-strictly with
the literal (``1`` != ``1.0`` != ``True``). An assert whose shape the interpreter does not cover
(a comprehension or lambda over program calls, an unknown method on a program value) falls back to
``bool(TEST)`` evaluated in the sandbox against the captured built-ins and modules: that defeats
rebinding names but not a program that walks the stack to the captured objects or returns objects
with rigged comparisons, so it is weaker; :func:`split_assert` reports which form a test got.
"""

from __future__ import annotations

import ast
import builtins
import copy
import math
import operator
import re
from functools import lru_cache
from typing import Any, NamedTuple

__all__ = ["AssertSpec", "split_assert", "evaluate_check", "CheckError", "MODULES"]

# names the check may use, resolved HERE (never the program's bindings of the same names)
_FUNCS: dict[str, Any] = {
    "abs": abs, "round": round, "len": len, "sorted": sorted, "set": set, "frozenset": frozenset, "list": list,
    "tuple": tuple, "sum": lambda *a: _sum(*a), "min": min, "max": max, "int": int, "float": float, "str": str, "bool": bool,
    "isinstance": isinstance, "all": all, "any": any, "type": type, "dict": dict, "reversed": reversed,
    "zip": zip, "enumerate": enumerate, "map": map, "filter": filter, "chr": chr, "ord": ord, "divmod": divmod,
    "range": lambda *a: _range(*a), "True": True, "False": False, "None": None,
}
_MATH = {n: getattr(math, n) for n in (
    "isclose", "fabs", "floor", "ceil", "sqrt", "isnan", "isinf", "isfinite", "trunc", "fsum", "log", "log2",
    "log10", "exp", "pow", "gcd", "inf", "nan", "pi", "e", "tau", "hypot", "sin", "cos", "tan", "atan2")}
# modules a test may name without the program's help: here the parent's own copies; in the fallback the
# sandbox's copies imported before the program runs
MODULES = ("math", "cmath", "re", "string", "collections", "itertools", "functools", "heapq", "bisect",
           "operator", "statistics", "fractions", "decimal", "random")
# side-effect-free methods of plain values (str, list, tuple, dict, set) whose cost is linear in the value
_METHODS = {"lower", "upper", "strip", "lstrip", "rstrip", "split", "startswith", "endswith", "count", "find",
            "index", "isdigit", "isalpha", "isalnum", "isupper", "islower", "isspace", "title", "capitalize",
            "swapcase", "keys", "values", "items", "get", "copy", "issubset", "issuperset", "union",
            "intersection", "difference", "symmetric_difference", "isdisjoint", "real", "imag",
            "is_integer", "conjugate"}
_PLAIN = (type(None), bool, int, float, complex, str, list, tuple, dict, set, frozenset)
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
           ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.BitAnd: operator.and_,
           ast.BitOr: operator.or_, ast.BitXor: operator.xor}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
           ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_UNOPS = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_, ast.Invert: operator.invert}
_MAX_ITEMS = 10_000_000  # a sequence product or a power the check would build (program values are <= 1 MiB)
_MAX_BITS = 1_000_000


class CheckError(ValueError):
    """The check cannot be evaluated (a type error on the program's value, a guard tripped, ...)."""


class _Fallback(Exception):
    pass


class AssertSpec(NamedTuple):
    """How one assert is graded. form 'literal': type-strict ``PART == LITERAL``, ``expected`` is the
    literal (encoded by the loader); 'parent': ``expected`` is ``{"check": source}``, decided here by
    :func:`evaluate_check`; 'fallback': ``bool(TEST)`` evaluated in the sandbox, ``expected`` True."""

    case: dict
    expected: Any
    form: str


_BUILTINS = frozenset(dir(builtins))


_PLACEHOLDER = re.compile(r"_v\d+")


def _parent_name(name: str) -> bool:
    return name in _FUNCS or name == "math" or _PLACEHOLDER.fullmatch(name) is not None


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _is_program_name(name: str) -> bool:
    """A name only the program can supply: not a built-in, not a known module, not a placeholder."""
    return not _parent_name(name) and name not in _BUILTINS and name not in MODULES


def _program_names(node: ast.AST) -> list[str]:
    return sorted(n for n in _names(node) if _is_program_name(n))


def _uses_program(node: ast.AST) -> bool:
    return any(_is_program_name(n) for n in _names(node))


_OPERATOR_NODES = (ast.operator, ast.cmpop, ast.boolop, ast.unaryop, ast.expr_context)
_CONTAINERS = (ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Subscript, ast.Slice, ast.IfExp, ast.List,
               ast.Tuple, ast.Set, ast.Dict)


class _Lifter:
    """Replaces each maximal program part with ``_vK``; raises _Fallback where the remainder is not
    something the parent interprets."""

    def __init__(self, src: str):
        self.src = src
        self.parts: list[str] = []

    def part(self, node: ast.AST) -> ast.AST:
        self.parts.append(ast.get_source_segment(self.src, node))
        return ast.copy_location(ast.Name(id=f"_v{len(self.parts) - 1}", ctx=ast.Load()), node)

    def lift(self, node: ast.AST) -> ast.AST:
        if isinstance(node, (ast.Constant, *_OPERATOR_NODES)):
            return node
        if isinstance(node, ast.Name):
            if _parent_name(node.id):
                return node
            if _is_program_name(node.id):
                return self.part(node)
            raise _Fallback  # a built-in or module the parent does not interpret
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and _is_program_name(f.id):
                return self.part(node)  # the callee's value is what leaves the sandbox
            if isinstance(f, ast.Attribute) and f.attr not in _METHODS and _uses_program(f.value):
                return self.part(node)  # obj.method(...) on a program object: its value leaves
            if any(k.arg is None for k in node.keywords) or any(isinstance(a, ast.Starred) for a in node.args):
                raise _Fallback
            node.func = self.lift(f)
            node.args = [self.lift(a) for a in node.args]
            for k in node.keywords:
                k.value = self.lift(k.value)
            return node
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "math":
                if node.attr not in _MATH:
                    raise _Fallback
                return node
            if node.attr not in _METHODS:
                if _uses_program(node.value):
                    return self.part(node)
                raise _Fallback
            node.value = self.lift(node.value)
            return node
        if isinstance(node, _CONTAINERS):
            for field, value in ast.iter_fields(node):
                if isinstance(value, ast.AST):
                    setattr(node, field, self.lift(value))
                elif isinstance(value, list):
                    setattr(node, field, [self.lift(v) if isinstance(v, ast.AST) else v for v in value])
            return node
        raise _Fallback  # comprehension, lambda, starred, f-string, walrus, ...


def split_assert(src: str) -> AssertSpec:
    """Split one ``assert`` statement (see the module docstring). Raises SyntaxError or ValueError
    for anything else; the caller names the row."""
    text = src.strip()
    tree = ast.parse(text)
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise ValueError("must be a single assert statement")
    test = tree.body[0].test
    if any(_PLACEHOLDER.fullmatch(n) for n in _names(test)):  # would collide with the parts' placeholders
        case = {"expr": f"bool({ast.get_source_segment(text, test)})", "names": sorted(_names(test) - _BUILTINS)}
        return AssertSpec(case, True, "fallback")
    if not _uses_program(test):
        raise ValueError("does not use anything the program defines")
    # PART == LITERAL (either side): the type-strict comparison the function-call format also uses
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
        for side, other in ((test.left, test.comparators[0]), (test.comparators[0], test.left)):
            lifter = _Lifter(text)
            try:
                whole = isinstance(lifter.lift(copy.deepcopy(side)), ast.Name) and len(lifter.parts) == 1
                want = ast.literal_eval(other) if whole else None
            except (_Fallback, ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            if whole:
                return AssertSpec({"expr": lifter.parts[0], "names": _program_names(side)}, want, "literal")
    lifter = _Lifter(text)
    try:
        check = ast.unparse(lifter.lift(copy.deepcopy(test)))
        _compile_check(check)
    except _Fallback:
        case = {"expr": f"bool({ast.get_source_segment(text, test)})", "names": _program_names(test)}
        if _names(test) & set(MODULES):
            case["modules"] = sorted(_names(test) & set(MODULES))
        return AssertSpec(case, True, "fallback")
    parts = [ast.parse(p, mode="eval") for p in lifter.parts]
    case = {"exprs": lifter.parts, "names": sorted({n for p in parts for n in _program_names(p)})}
    mods = sorted({n for p in parts for n in _names(p)} & set(MODULES))
    if mods:
        case["modules"] = mods
    return AssertSpec(case, {"check": check}, "parent")


# ------------------------------------------------------------------------------ the parent interpreter
@lru_cache(maxsize=4096)
def _compile_check(src: str) -> ast.AST:
    node = ast.parse(src, mode="eval").body
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and not _parent_name(n.id):
            raise _Fallback
        if isinstance(n, ast.Attribute) and n.attr.startswith("_"):
            raise _Fallback
    return node


def evaluate_check(src: str, values: list) -> bool:
    """Truth of a check over the decoded program values (plain Python data only)."""
    for v in values:
        _require_plain(v, 0)
    try:
        node = _compile_check(src)
    except _Fallback:
        raise CheckError(f"check {src!r} uses something the parent does not interpret") from None
    env = {f"_v{i}": v for i, v in enumerate(values)}
    try:
        return bool(_Eval(env).ev(node))
    except CheckError:
        raise
    except (ArithmeticError, TypeError, ValueError, IndexError, KeyError, AttributeError, RecursionError,
            MemoryError) as e:
        raise CheckError(f"{type(e).__name__}: {e}"[:200]) from None


def _require_plain(v: Any, depth: int) -> None:
    if type(v) not in _PLAIN or depth > 60:
        raise CheckError(f"value of type {type(v).__name__} is not plain data")
    if isinstance(v, (list, tuple, set, frozenset)):
        for x in v:
            _require_plain(x, depth + 1)
    elif isinstance(v, dict):
        for k, x in v.items():
            _require_plain(k, depth + 1)
            _require_plain(x, depth + 1)


def _sum(items: Any, start: Any = 0) -> Any:
    items = list(items)
    if not isinstance(start, (int, float, complex)) and len(items) > 10_000:  # sum(lists, []) is quadratic
        raise CheckError("sum of too many sequences")
    return sum(items, start)


def _range(*args: int) -> range:
    r = range(*args)
    if len(r) > _MAX_ITEMS:
        raise CheckError("range too large")
    return r


def _size(v: Any) -> int:
    return len(v) if isinstance(v, (str, bytes, list, tuple)) else 1


class _Eval:
    def __init__(self, env: dict):
        self.env = env

    def ev(self, n: ast.AST) -> Any:
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name):
            if n.id in self.env:
                return self.env[n.id]
            return _FUNCS[n.id]
        if isinstance(n, (ast.List, ast.Tuple, ast.Set)):
            items = [self.ev(e) for e in n.elts]
            return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(n)](items)
        if isinstance(n, ast.Dict):
            return {self.ev(k): self.ev(v) for k, v in zip(n.keys, n.values)}
        if isinstance(n, ast.BoolOp):
            val = None
            for e in n.values:
                val = self.ev(e)
                if isinstance(n.op, ast.And) and not val or isinstance(n.op, ast.Or) and val:
                    return val
            return val
        if isinstance(n, ast.UnaryOp):
            return _UNOPS[type(n.op)](self.ev(n.operand))
        if isinstance(n, ast.BinOp):
            a, b = self.ev(n.left), self.ev(n.right)
            _guard_binop(type(n.op), a, b)
            return _BINOPS[type(n.op)](a, b)
        if isinstance(n, ast.Compare):
            left = self.ev(n.left)
            for op, c in zip(n.ops, n.comparators):
                right = self.ev(c)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(n, ast.IfExp):
            return self.ev(n.body) if self.ev(n.test) else self.ev(n.orelse)
        if isinstance(n, ast.Subscript):
            return self.ev(n.value)[self.ev(n.slice)]
        if isinstance(n, ast.Slice):
            return slice(*(self.ev(x) if x is not None else None for x in (n.lower, n.upper, n.step)))
        if isinstance(n, ast.Attribute):
            if isinstance(n.value, ast.Name) and n.value.id == "math":
                return _MATH[n.attr]
            obj = self.ev(n.value)
            if type(obj) not in _PLAIN or n.attr not in _METHODS:
                raise CheckError(f"attribute {n.attr!r} of {type(obj).__name__}")
            return getattr(obj, n.attr)
        if isinstance(n, ast.Call):
            fn = self.ev(n.func)
            args = [self.ev(a) for a in n.args]
            kwargs = {k.arg: self.ev(k.value) for k in n.keywords}
            return fn(*args, **kwargs)
        raise CheckError(f"cannot interpret {type(n).__name__}")


def _guard_binop(op: type, a: Any, b: Any) -> None:
    """Refuse results the trusted parent should not build (a program value times a big count, ...)."""
    if op is ast.Mult:
        for x, y in ((a, b), (b, a)):
            if isinstance(y, int) and not isinstance(x, (int, float, complex)) and _size(x) * max(y, 0) > _MAX_ITEMS:
                raise CheckError("sequence repetition too large")
    if op is ast.Pow and isinstance(a, int) and isinstance(b, int) and b > 0:
        if max(a.bit_length(), 1) * b > _MAX_BITS:
            raise CheckError("power too large")
    if op is ast.LShift and isinstance(b, int) and b > _MAX_BITS:
        raise CheckError("shift too large")
