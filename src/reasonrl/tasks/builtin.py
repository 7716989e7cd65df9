"""Built-in procedurally generated task suite: ``arith``, ``countdown``, ``linear``.

Each family is an infinite deterministic *stream*: item ``j`` is drawn from an RNG seeded by
``(family, seed, split, difficulty, j)``, so ``generate(f, n, start=k)`` is items ``k..k+n-1`` of the
same stream and a trainer resumes from a data cursor without storing tasks.

Train and test are disjoint by construction: a problem's split is a stable hash of its canonical
string (md5 first byte % 10 == 0 -> test), and each generator keeps drawing until it produces a
problem of the requested split. No seed or difficulty can move a problem across the boundary.

Solutions are deliberately compact (a tiny model trained from scratch learns from them; every
character costs) and always end in ``\\boxed{answer}``.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Callable

from reasonrl.tasks.base import Task
from reasonrl.tasks.code import DESCRIPTION as _CODE_DESCRIPTION, TINY_MODEL_SPEC as _CODE_TINY, make_code as _make_code
from reasonrl.tasks.knowledge import TINY_MODEL_SPEC as _KNOWLEDGE_TINY, make_knowledge as _make_knowledge

SPLITS = ("train", "test")
MIX = "mix"
MIX_ORDER = ("arith", "countdown", "linear")

_MAX_SPLIT_TRIES = 10_000  # draws per stream item before concluding a split is empty at this difficulty
_MAX_DUP_RUN = 2_000  # consecutive duplicate items before concluding a unique stream is exhausted


@dataclass(frozen=True)
class _Problem:
    canonical: str
    prompt: str
    answer: str
    solution: str
    verifier: str
    extra: dict


@dataclass(frozen=True)
class FamilySpec:
    """One generator family: its difficulty knob (default and valid range), a one-line description, and
    the ``TinySpec`` fields its ``builtin:tiny-<family>`` model overrides (see ``models.tiny.variant_spec``)."""

    default_difficulty: int
    min_difficulty: int
    max_difficulty: int
    description: str
    make: Callable[[random.Random, int], _Problem]
    tiny_model: dict = field(default_factory=dict)


def split_of(canonical: str) -> str:
    """The split a canonical problem string belongs to; stable across runs, seeds and Python versions."""
    return "test" if hashlib.md5(canonical.encode()).digest()[0] % 10 == 0 else "train"


def _rng(*parts) -> random.Random:
    # blake2b of the repr, not hash(): Python's str hash is salted per process.
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _minus(b: int) -> str:
    """Text for subtracting ``b`` (``-5`` or ``+5`` when b is negative), avoiding ``--``."""
    return f"-{b}" if b >= 0 else f"+{-b}"


def _plus(b: int) -> str:
    return f"+{b}" if b >= 0 else f"-{-b}"


def _xterm(coef: int) -> str:
    return "x" if coef == 1 else f"{coef}*x"


# --------------------------------------------------------------------------- arith
ARITH_RULE = "Evaluate strictly from left to right, ignoring the usual operator precedence (2+3*4 = 20)."


def _make_arith(rng: random.Random, k: int) -> _Problem:
    """k operations evaluated strictly left to right; +/- operands 1..99, * operands 2..9, every
    intermediate in 0..9999 so the worked steps stay short."""
    v = rng.randint(1, 99)
    expr, steps = str(v), []
    for _ in range(k):
        ops = []
        if v <= 9998:
            ops.append("+")
        if v >= 1:
            ops.append("-")
        if 2 * v <= 9999:
            ops.append("*")
        op = rng.choice(ops)
        if op == "+":
            b = rng.randint(1, min(99, 9999 - v))
            w = v + b
        elif op == "-":
            b = rng.randint(1, min(99, v))
            w = v - b
        else:
            b = rng.randint(2, min(9, 9999 // v) if v else 9)
            w = v * b
        steps.append(f"{v}{op}{b}={w}.")
        expr += f"{op}{b}"
        v = w
    return _Problem(
        canonical=f"arith:{expr}",
        prompt=f"Compute {expr}.",
        answer=str(v),
        solution=" ".join(steps) + f" \\boxed{{{v}}}",
        verifier="math",
        extra={"ops": k, "instruction": ARITH_RULE},
    )


def slipped_arith_solution(prompt: str, rate: float, key: str) -> str:
    """The worked solution of an arith prompt as written by an *imperfect teacher* who forgets the carry
    of an addition (units digits summing to 10 or more) and the borrow of a subtraction (units digit of
    the first operand smaller) with probability ``rate`` per such step; later steps and the boxed answer
    follow the slip, as a real teacher's would. Deterministic in ``key`` (e.g. the task uid).

    Used for the demo's demonstration pool: extra SFT on these demonstrations cannot remove the slips,
    an outcome reward on the true answer can."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"slip rate must be in [0, 1], got {rate}")
    expr = prompt.removeprefix("Compute ").removesuffix(".")
    toks = re.findall(r"\d+|[-+*]", expr)
    rng = _rng("slip", key)
    v = int(toks[0])
    steps = []
    for op, b in zip(toks[1::2], map(int, toks[2::2])):
        if op == "+":
            w = v + b
            if (v % 10 + b % 10) >= 10 and rng.random() < rate:
                w -= 10
        elif op == "-":
            w = v - b
            if v % 10 < b % 10 and rng.random() < rate:
                w += 10
        else:
            w = v * b
        steps.append(f"{v}{op}{b}={w}.")
        v = w
    return " ".join(steps) + f" \\boxed{{{v}}}"


def direct_solution(task: Task, rate: float) -> str:
    """The solution a *correct teacher who skips its working* writes: with probability ``rate`` (deterministic
    in the task uid) only the boxed true answer, otherwise the task's worked solution.

    A stronger teacher can answer in one step; a student that imitates the bare answers has to produce a
    multi-step result in one token and mostly cannot. Further SFT on these demonstrations keeps copying the
    shortcut; an outcome reward finds that, for this student, writing the steps out pays."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"direct rate must be in [0, 1], got {rate}")
    if _rng("direct", task.uid).random() < rate:
        return f"\\boxed{{{task.answer}}}"
    return task.solution


# --------------------------------------------------------------------------- countdown
@dataclass(frozen=True)
class _Node:
    expr: str
    value: int
    prec: int  # 1: + -, 2: * /, 3: a number


def _combine(a: _Node, op: str, b: _Node, value: int) -> _Node:
    """Join with the fewest parentheses that keep the same value under standard precedence."""
    p = 1 if op in "+-" else 2
    left = a.expr if a.prec >= p else f"({a.expr})"
    right = b.expr if b.prec > p or (b.prec == p and op in "+*") else f"({b.expr})"
    return _Node(f"{left}{op}{right}", value, p)


def _make_countdown(rng: random.Random, count: int) -> _Problem:
    """Random construction: pick numbers, fold them pairwise with random feasible ops (positive,
    integer intermediates), keep the result if it is a target in 1..999."""
    for _ in range(1000):
        numbers = [rng.randint(1, 25) for _ in range(count)]
        nodes = [_Node(str(x), x, 3) for x in numbers]
        steps = []
        while len(nodes) > 1:
            i, j = rng.sample(range(len(nodes)), 2)
            a, b = nodes[i], nodes[j]
            ops = ["+", "*"]
            if a.value > b.value:
                ops.append("-")
            if b.value > 1 and a.value % b.value == 0:
                ops.append("/")
            op = rng.choice(ops)
            value = {"+": a.value + b.value, "-": a.value - b.value,
                     "*": a.value * b.value, "/": a.value // max(b.value, 1)}[op]
            steps.append(f"{a.value}{op}{b.value}={value}.")
            nodes = [n for idx, n in enumerate(nodes) if idx not in (i, j)] + [_combine(a, op, b, value)]
        target = nodes[0].value
        if 1 <= target <= 999:
            shown = " ".join(map(str, sorted(numbers)))
            return _Problem(
                canonical=f"countdown:{shown}={target}",
                prompt=f"Use {shown} to make {target}.",
                answer=nodes[0].expr,
                solution=" ".join(steps) + f" \\boxed{{{nodes[0].expr}}}",
                verifier="countdown",
                extra={"numbers": sorted(numbers), "target": target},
            )
    raise RuntimeError("countdown generator found no target in 1..999 after 1000 tries")  # pragma: no cover


# --------------------------------------------------------------------------- linear
def _make_linear(rng: random.Random, level: int) -> _Problem:
    """Level 1: ``a*x+b=c``; 2: ``a*x+b=d*x+c`` (collect x terms); 3: ``a*(x+b)=d*x+c`` (expand
    first). Each level adds one worked step; the solution x is an integer in -20..20."""
    x = rng.randint(-20, 20)
    if level == 1:
        a, b = rng.randint(2, 9), rng.choice([i for i in range(-30, 31) if i])
        c = a * x + b
        equation = f"{a}*x{_plus(b)}={c}"
        steps = [f"{a}*x={c}{_minus(b)}={c - b}.", f"x={c - b}/{a}={x}."]
    else:
        a = rng.randint(2, 9)
        d = rng.randint(1, a - 1)
        k = a - d
        if level == 2:
            b = rng.choice([i for i in range(-30, 31) if i])
            lhs, steps = f"{a}*x{_plus(b)}", []
        else:
            m = rng.choice([i for i in range(-9, 10) if i])
            b = a * m
            lhs = f"{a}*(x{_plus(m)})"
        c = k * x + b
        rhs = _xterm(d) + (_plus(c) if c else "")
        equation = f"{lhs}={rhs}"
        steps = [f"{a}*x{_plus(b)}={rhs}."] if level == 3 else []
        steps.append(f"{a}*x-{_xterm(d)}={c}{_minus(b)}.")
        steps.append(f"x={c - b}." if k == 1 else f"{k}*x={c - b}. x={c - b}/{k}={x}.")
    return _Problem(
        canonical=f"linear:{equation}",
        prompt=f"Solve {equation} for x.",
        answer=str(x),
        solution=" ".join(steps) + f" \\boxed{{{x}}}",
        verifier="math",
        extra={},
    )


FAMILIES: dict[str, FamilySpec] = {
    "arith": FamilySpec(3, 1, 20, "left-to-right integer arithmetic with k operations (difficulty = k)",
                        _make_arith),
    "countdown": FamilySpec(3, 2, 6, "reach a target using each given number once with + - * / "
                                     "(difficulty = how many numbers)", _make_countdown),
    "linear": FamilySpec(1, 1, 3, "solve a linear equation for integer x (difficulty 1: a*x+b=c, "
                                  "2: x on both sides, 3: with brackets)", _make_linear),
    "code": FamilySpec(2, 1, 3, _CODE_DESCRIPTION, _make_code, _CODE_TINY),
    "knowledge": FamilySpec(3, 1, 3, "QA over a synthetic world for SSRL (difficulty 1: single hop, 2: two hops, 3: both)",
                              _make_knowledge, _KNOWLEDGE_TINY),
}


def _task(family: str, difficulty: int, split: str, index: int, p: _Problem) -> Task:
    uid = f"{family}-{hashlib.md5(p.canonical.encode()).hexdigest()[:12]}"
    meta = {"family": family, "difficulty": difficulty, "split": split, "index": index, **p.extra}
    return Task(uid=uid, prompt=p.prompt, answer=p.answer, solution=p.solution, verifier=p.verifier, meta=meta)


def _item(family: str, seed: int, split: str, difficulty: int, j: int) -> _Problem:
    rng = _rng(family, seed, split, difficulty, j)
    make = FAMILIES[family].make
    for _ in range(_MAX_SPLIT_TRIES):
        p = make(rng, difficulty)
        if split_of(p.canonical) == split:
            return p
    raise ValueError(f"{family} at difficulty {difficulty} produced no {split!r} problem in "
                     f"{_MAX_SPLIT_TRIES} draws; the problem space is too small, raise the difficulty")


def _check_args(family: str, n: int, split: str, seed: int, start: int) -> None:
    if family not in FAMILIES and family != MIX:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join([*FAMILIES, MIX])}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    for name, v in (("n", n), ("start", start), ("seed", seed)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{name} must be an int, got {type(v).__name__}")
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")


def _resolve_difficulty(family: str, difficulty: int | None) -> int:
    spec = FAMILIES[family]
    if difficulty is None:
        return spec.default_difficulty
    if not isinstance(difficulty, int) or not spec.min_difficulty <= difficulty <= spec.max_difficulty:
        raise ValueError(f"difficulty for {family!r} must be an int in {spec.min_difficulty}.."
                         f"{spec.max_difficulty}, got {difficulty!r}")
    return difficulty


def _family_stream(family: str, n: int, split: str, seed: int, difficulty: int, start: int,
                   unique: bool) -> list[Task]:
    if not unique:
        return [_task(family, difficulty, split, j, _item(family, seed, split, difficulty, j))
                for j in range(start, start + n)]
    # A unique stream is the raw stream with repeats dropped, always counted from item 0, so that
    # ``start`` means the same position in every call.
    seen: set[str] = set()
    kept: list[_Problem] = []
    j = run = 0
    while len(kept) < start + n:
        p = _item(family, seed, split, difficulty, j)
        j += 1
        if p.canonical in seen:
            run += 1
            if run >= _MAX_DUP_RUN:
                raise ValueError(f"{family} at difficulty {difficulty} has only about {len(kept)} unique "
                                 f"{split!r} problems, fewer than the {start + n} requested; lower n or "
                                 f"raise the difficulty")
            continue
        run = 0
        seen.add(p.canonical)
        kept.append(p)
    return [_task(family, difficulty, split, start + i, p) for i, p in enumerate(kept[start:])]


def generate(family: str, n: int, split: str = "train", seed: int = 0, difficulty: int | None = None,
             start: int = 0, unique: bool | None = None) -> list[Task]:
    """Items ``start..start+n-1`` of the deterministic stream for ``(family, split, seed, difficulty)``.

    ``family`` is one of ``FAMILIES`` or ``"mix"`` (round-robin arith, countdown, linear; item ``k``
    is item ``k // 3`` of family ``k % 3``; ``difficulty`` then applies to each family).
    ``unique`` (default: True for test, False for train) drops repeats; the train stream samples
    with replacement so that resuming at a large ``start`` costs O(n), not O(start).
    """
    _check_args(family, n, split, seed, start)
    if unique is None:
        unique = split == "test"
    if family == MIX:
        per = {f: [k for k in range(start, start + n) if k % 3 == i] for i, f in enumerate(MIX_ORDER)}
        streams = {}
        for f, ks in per.items():
            if ks:
                d = _resolve_difficulty(f, difficulty)
                streams[f] = iter(_family_stream(f, len(ks), split, seed, d, ks[0] // 3, unique))
        return [next(streams[MIX_ORDER[k % 3]]) for k in range(start, start + n)]
    d = _resolve_difficulty(family, difficulty)
    return _family_stream(family, n, split, seed, d, start, unique)
