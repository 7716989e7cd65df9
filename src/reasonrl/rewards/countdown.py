"""Countdown: combine the given numbers with + - * / to reach the target.

The expression is model output, so it is never ``eval``-ed: it is parsed with ``ast`` and only
integer literals, the four binary operators and parentheses are accepted. Decisions:

- every given number is used exactly once (multiset equality of the literals with ``numbers``);
- no unary minus or plus (``-3 + 5``): the game combines the given numbers, it does not negate
  them, and allowing it would let ``a - b`` be rewritten freely;
- no ``**``, no names, calls, floats or other syntax;
- arithmetic is exact (``fractions.Fraction``) and non-integer intermediates are allowed
  (``(7 / 2) * 4 == 14``), matching the common RL setup rather than the TV show; division by zero
  makes the expression wrong;
- a few LaTeX/Unicode spellings are accepted (``\\times``, ``\\cdot``, ``×``, ``·`` → ``*``;
  ``\\div``, ``÷`` → ``/``; ``−`` → ``-``; ``\\left``/``\\right`` dropped; surrounding ``$``),
  because the answer usually comes out of a ``\\boxed{}``. An ``=`` anywhere is rejected.
"""

from __future__ import annotations

import ast
from collections import Counter
from fractions import Fraction

__all__ = ["countdown_score"]

MAX_EXPRESSION_CHARS = 512
_REPLACE = (("\\times", "*"), ("\\cdot", "*"), ("×", "*"), ("·", "*"), ("\\div", "/"), ("÷", "/"),
            ("−", "-"), ("\\left", ""), ("\\right", ""))
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def _normalize(expression: str) -> str:
    s = expression.strip()
    while len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s[1:-1].strip()
    for old, new in _REPLACE:
        s = s.replace(old, new)
    return s


def _literals(node: ast.AST, out: list[int]) -> bool:
    """Collect the integer literals; ``False`` as soon as a disallowed node appears."""
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _literals(node.left, out) and _literals(node.right, out)
    if isinstance(node, ast.Constant) and type(node.value) is int:  # bool is an int subclass: excluded
        out.append(node.value)
        return True
    return False


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    return _OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))


def countdown_score(expression: str | None, numbers: list[int], target: int) -> bool:
    """True iff ``expression`` uses each of ``numbers`` exactly once and evaluates to ``target``."""
    if not isinstance(expression, str) or not expression.strip() or len(expression) > MAX_EXPRESSION_CHARS:
        return False
    s = _normalize(expression)
    try:
        tree = ast.parse(s, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    found: list[int] = []
    if not _literals(tree.body, found):
        return False
    if Counter(found) != Counter(int(n) for n in numbers):
        return False
    try:
        return _evaluate(tree.body) == target
    except (ZeroDivisionError, RecursionError):
        return False
