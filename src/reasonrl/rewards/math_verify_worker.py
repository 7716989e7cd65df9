"""Math answer equivalence with a hard wall-clock limit (reliability.md §4).

Why a separate process: Math-Verify's own timeouts use ``signal.alarm`` (they raise in any
non-main thread), a 17-character answer like ``9^{9^{9}}`` hangs sympy for minutes with them off,
and ``str()`` of a parsed value can hang outside any timeout. So:

- the parent does the cheap work itself: an exact fast path for plain numbers (``136`` vs
  ``136.0``, ``1/2`` vs ``0.5``; microseconds, no process involved) and pre-filters that reject
  exponent towers, huge exponents, factorials of big literals, over-long or prose answers as
  ``wrong`` without parsing;
- everything else goes to ONE worker process running Math-Verify with its internal timeouts off;
  the parent waits ``timeout_s`` and SIGKILLs it if no reply came, then starts a fresh one on the
  next call;
- only JSON primitives cross the pipe (the verdict and a short detail string). Parsed sympy objects
  never leave the worker and are never printed there; worker exceptions report their type only.

The worker is a fresh interpreter (``python -c`` via ``subprocess``), not a ``multiprocessing``
child: it never forks a torch-threaded parent, and unlike the ``spawn``/``forkserver`` contexts it
does not re-run the user's ``__main__`` (an unguarded training script would otherwise start again
inside the verifier, and every respawn would import torch). POSIX only (pipes + ``select``).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import subprocess
import sys
import threading
import weakref
from collections import OrderedDict
from enum import StrEnum
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import Iterable

__all__ = ["Verdict", "MathVerifier", "get_default_verifier"]


class Verdict(StrEnum):
    """Outcome of one comparison. ``error`` is an infrastructure failure, never a wrong answer."""

    CORRECT = "correct"
    WRONG = "wrong"
    TIMEOUT = "timeout"  # a resource limit was hit (wall clock, or memory inside the worker)
    ERROR = "error"


COUNT_KEYS = (
    "correct", "wrong", "timeout", "error",  # verdicts; they sum to the number of verify calls
    "fast_path", "prefiltered", "cached", "worker_calls", "worker_starts", "worker_kills",
)

# ----------------------------------------------------------------------------- normalisation
_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# Math-Verify 0.9 turns \mathrm{e} into a symbol or a truncated parse (#82: 1-1/e == 1+1/e).
_EULER_RE = re.compile(r"\\(?:mathrm|text|textrm|operatorname|mathit)\s*\{\s*e\s*\}|\\mathrm\s+e(?![A-Za-z])")


def _normalize(s: str) -> str:
    s = s.strip()
    changed = True
    while changed and s:
        changed = False
        for left, right in _DELIMS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)].strip()
                changed = True
                break
    if "e" in s and "\\" in s:
        s = _EULER_RE.sub("e", s)
    return s


# ----------------------------------------------------------------------------- fast path
_DEC_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_SLASH_RE = re.compile(r"([+-]?\d+)\s*/\s*([+-]?\d+)")
_TEXFRAC_RE = re.compile(r"([+-]?)\s*\\[dt]?frac\s*\{\s*([+-]?\d+)\s*\}\s*\{\s*([+-]?\d+)\s*\}")


def _as_number(s: str) -> Fraction | None:
    """Exact value of an integer, decimal, ``a/b`` or ``\\frac{a}{b}`` literal; ``None`` otherwise."""
    if len(s) > 100:
        return None
    if _DEC_RE.fullmatch(s):
        return Fraction(s)
    m = _SLASH_RE.fullmatch(s)
    if m:
        num, den = int(m.group(1)), int(m.group(2))
        return Fraction(num, den) if den else None
    m = _TEXFRAC_RE.fullmatch(s)
    if m:
        num, den = int(m.group(2)), int(m.group(3))
        if not den:
            return None
        return -Fraction(num, den) if m.group(1) == "-" else Fraction(num, den)
    return None


# ----------------------------------------------------------------------------- pre-filters
_PAIRS = {"{": "}", "(": ")"}
_NUMERIC_POW_RE = re.compile(r"\d\s*[)}]*\s*\^")
_CMD_RE = re.compile(r"\\[A-Za-z]+")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_FACT_RE = re.compile(r"(?<!\\)!")
PROSE_WORDS = 4  # this many 2+-letter words outside LaTeX commands = a sentence, not an answer


def _close(s: str, i: int) -> int:
    """Index past the bracket closing ``s[i]`` (``{`` or ``(``), or ``len(s)`` if it never closes."""
    open_c, close_c = s[i], _PAIRS[s[i]]
    depth = 0
    j = i
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return len(s)


def _exponents(s: str) -> Iterable[tuple[str, int]]:
    """Each ``^`` operand with the index just past it (``**`` is read as ``^``)."""
    s = s.replace("**", "^")
    for m in re.finditer(r"\^", s):
        j = m.end()
        while j < len(s) and s[j].isspace():
            j += 1
        if j >= len(s):
            continue
        c = s[j]
        if c in _PAIRS:
            end = _close(s, j)
        elif c == "\\":
            cm = re.match(r"\\(?:[A-Za-z]+|.)", s[j:])
            end = j + (len(cm.group(0)) if cm else 1)
        elif c.isdigit():
            end = j
            while end < len(s) and s[end].isdigit():
                end += 1
        else:
            end = j + 1
        yield s[j:end], end
        # a chain a^b^c is a tower too: report what follows the operand
        k = end
        while k < len(s) and s[k].isspace():
            k += 1
        if k < len(s) and s[k] == "^" and any(ch.isdigit() for ch in s[j:end]):
            yield s[j:end] + "^", end


def _has_tower(s: str) -> bool:
    return any("^" in op and _NUMERIC_POW_RE.search(op) for op, _ in _exponents(s))


def _has_huge_exponent(s: str) -> bool:
    for op, _ in _exponents(s):
        digits = op.strip("{}() ")
        if digits.isdigit() and len(digits.lstrip("0")) > 6:
            return True
    return False


def _has_big_factorial(s: str) -> bool:
    for m in _FACT_RE.finditer(s):
        j = m.start() - 1
        while j >= 0 and s[j].isspace():
            j -= 1
        if j < 0:
            continue
        if s[j].isdigit():
            k = j
            while k >= 0 and s[k].isdigit():
                k -= 1
            lit = s[k + 1 : j + 1].lstrip("0")
            if len(lit) > 5 or (lit and int(lit) > 10_000):
                return True
        elif s[j] in ")}":
            open_c = "(" if s[j] == ")" else "{"
            depth, k = 0, j
            while k >= 0:
                if s[k] == s[j]:
                    depth += 1
                elif s[k] == open_c:
                    depth -= 1
                    if depth == 0:
                        break
                k -= 1
            group = s[max(k, 0) : j + 1]
            if "^" in group or re.search(r"\d{5,}", group):
                return True
    return False


def _word_count(s: str) -> int:
    return len(_WORD_RE.findall(_CMD_RE.sub(" ", s)))


def _prefilter(gold: str, pred: str, max_chars: int) -> str | None:
    """Why ``pred`` is rejected unparsed, or ``None``. A feature the gold answer shares is allowed."""
    if len(pred) > max_chars:
        return "too_long"
    for name, has in (("tower", _has_tower), ("huge_exponent", _has_huge_exponent),
                      ("big_factorial", _has_big_factorial)):
        if has(pred) and not has(gold):
            return name
    if _word_count(pred) >= PROSE_WORDS and _word_count(gold) < PROSE_WORDS:
        return "prose"  # Math-Verify would grade the last number in the sentence (reliability.md §4)
    return None


# ----------------------------------------------------------------------------- parent side
_BOOT = "import sys; from reasonrl.rewards.math_verify_worker import _worker_main; _worker_main(sys.argv[1:])"
_MAX_REPLY = 1 << 16
_LIVE: "weakref.WeakSet[MathVerifier]" = weakref.WeakSet()


class MathVerifier:
    """Grades ``pred`` against ``gold`` with a hard per-call wall-clock limit.

    ``verify`` never raises for bad model output and never hangs longer than ``timeout_s`` (plus
    worker start-up on the first call or after a kill, bounded by ``start_timeout_s``). Verdicts
    and the cost paths taken are tallied in :attr:`counts`; the last infrastructure problem is in
    :attr:`last_error`. Thread-safe: concurrent callers share one worker, one request at a time.
    Verdicts (timeouts included) are cached per normalised pair, so a group of identical
    pathological answers costs one timeout, not one per sample.
    """

    def __init__(self, timeout_s: float = 5.0, *, fast_path: bool = True, prefilter: bool = True,
                 max_pred_chars: int = 1000, memory_limit_mb: int | None = 4096,
                 start_timeout_s: float = 60.0, cache_size: int = 4096):
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive finite number of seconds, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.fast_path = fast_path
        self.prefilter = prefilter
        self.max_pred_chars = max_pred_chars
        self.memory_limit_mb = memory_limit_mb
        self.start_timeout_s = start_timeout_s
        self.cache_size = cache_size
        self.last_error: str | None = None
        self._counts = dict.fromkeys(COUNT_KEYS, 0)
        self._cache: OrderedDict[tuple[str, str], Verdict] = OrderedDict()
        self._state_lock = threading.Lock()  # counts + cache: never held while waiting on the worker
        self._io_lock = threading.Lock()  # the worker: one request in flight
        self._proc: subprocess.Popen | None = None
        self._tx: Connection | None = None
        self._rx: Connection | None = None
        self._owner_pid = os.getpid()
        _LIVE.add(self)

    # -- public API -------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        with self._state_lock:
            return dict(self._counts)

    def verify(self, gold: str, pred: str | None) -> Verdict:
        """Is ``pred`` (an extracted answer; ``None`` = nothing extracted) equivalent to ``gold``?"""
        if not isinstance(gold, str) or not (pred is None or isinstance(pred, str)):
            raise TypeError(f"verify(gold: str, pred: str | None), got {type(gold).__name__}, {type(pred).__name__}")
        p = _normalize(pred) if pred is not None else ""
        g = _normalize(gold)
        if not p:
            return self._tally(Verdict.WRONG)
        if not g:
            self.last_error = "empty gold answer"
            return self._tally(Verdict.ERROR)
        if self.fast_path:
            a = _as_number(g)
            b = _as_number(p) if a is not None else None
            if b is not None:
                return self._tally(Verdict.CORRECT if a == b else Verdict.WRONG, "fast_path")
        if self.prefilter and _prefilter(g, p, self.max_pred_chars):
            return self._tally(Verdict.WRONG, "prefiltered")
        key = (g, p)
        with self._state_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is not None:
            return self._tally(hit, "cached")
        verdict = self._ask(["verify", g, p])
        if verdict is not Verdict.ERROR and self.cache_size > 0:
            with self._state_lock:
                self._cache[key] = verdict
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return self._tally(verdict)

    def verify_many(self, pairs: Iterable[tuple[str, str | None]]) -> list[Verdict]:
        """``verify`` over ``(gold, pred)`` pairs; each pair has its own time limit."""
        return [self.verify(g, p) for g, p in pairs]

    def close(self) -> None:
        """Stop the worker (it exits on EOF; killed if it does not). A later call restarts one."""
        with self._io_lock:
            self._stop(graceful=True)

    def __enter__(self) -> "MathVerifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; atexit and close() are the real paths
        try:
            self._stop(graceful=False)
        except Exception:
            pass

    # -- internals ----------------------------------------------------------------------
    def _tally(self, verdict: Verdict, path: str | None = None) -> Verdict:
        with self._state_lock:
            self._counts[verdict.value] += 1
            if path:
                self._counts[path] += 1
        return verdict

    def _bump(self, key: str) -> None:
        with self._state_lock:
            self._counts[key] += 1

    def check_gold(self, gold: str) -> str | None:
        """None if ``gold`` is a usable reference answer, else why not (for a dataset-load error).
        Plain numbers are accepted without the worker."""
        g = _normalize(gold) if isinstance(gold, str) else ""
        if not g:
            return "empty answer"
        if _as_number(g) is not None:
            return None
        verdict = self._ask(["gold", g])
        if verdict is Verdict.CORRECT:
            return None
        if verdict is Verdict.TIMEOUT:
            return f"parsing it took longer than {self.timeout_s:g} s"
        return self.last_error or "it does not parse"

    def _debug_sleep(self, seconds: float) -> Verdict:
        """Test hook: make the worker block for ``seconds`` like a hung sympy call would."""
        return self._ask(["sleep", float(seconds)])

    def _ask(self, request: list) -> Verdict:
        with self._io_lock:
            try:
                return self._ask_locked(request)
            except BaseException:
                # e.g. KeyboardInterrupt mid-wait: a late reply would be read as the next answer
                self._stop(graceful=False)
                raise

    def _ask_locked(self, request: list) -> Verdict:
        if not self._ensure_worker():
            return Verdict.ERROR
        self._bump("worker_calls")
        try:
            self._tx.send_bytes(json.dumps(request).encode())
        except OSError as e:
            self._fail(f"cannot write to the math-verify worker: {type(e).__name__}: {e}")
            return Verdict.ERROR
        if not self._rx.poll(self.timeout_s):
            self._bump("worker_kills")
            self._stop(graceful=False, reap_later=True)  # the verdict must not wait for a loaded kernel
            return Verdict.TIMEOUT
        try:
            reply = json.loads(self._rx.recv_bytes(_MAX_REPLY))
            verdict, detail = Verdict(reply[0]), reply[1]
        except (EOFError, OSError, ValueError, TypeError, IndexError) as e:
            self._fail(f"math-verify worker died or sent garbage ({type(e).__name__}); exit code "
                       f"{self._exit_code()}")
            return Verdict.ERROR
        if verdict is Verdict.ERROR:
            self.last_error = str(detail)
        return verdict

    def _fail(self, msg: str) -> None:
        self.last_error = msg
        self._stop(graceful=False)

    def _ensure_worker(self) -> bool:
        if os.getpid() != self._owner_pid:
            # forked copy: the pipes belong to the parent's worker; forget them, do not kill it
            self._proc = self._tx = self._rx = None
            self._owner_pid = os.getpid()
        if self._proc is not None and self._proc.poll() is None:
            return True
        self._stop(graceful=False)
        r_req, w_req = os.pipe()
        r_rep, w_rep = os.pipe()
        env = dict(os.environ)
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        mem = int(self.memory_limit_mb or 0) * 1024 * 1024
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(r_req), str(w_rep), str(mem)],
                pass_fds=(r_req, w_rep), stdin=subprocess.DEVNULL, env=env, close_fds=True)
        except OSError as e:
            os.close(w_req)
            os.close(r_rep)
            self.last_error = f"cannot start the math-verify worker: {type(e).__name__}: {e}"
            return False
        finally:
            os.close(r_req)
            os.close(w_rep)
        self._tx = Connection(w_req, readable=False)
        self._rx = Connection(r_rep, writable=False)
        self._bump("worker_starts")
        if not self._rx.poll(self.start_timeout_s):
            self._fail(f"math-verify worker did not start within {self.start_timeout_s:.0f} s")
            return False
        try:
            hello = json.loads(self._rx.recv_bytes(_MAX_REPLY))
        except (EOFError, OSError, ValueError) as e:
            self._fail(f"math-verify worker exited during start-up ({type(e).__name__}, exit code "
                       f"{self._exit_code()})")
            return False
        if not isinstance(hello, dict) or not hello.get("ready"):
            self._fail(str(hello.get("fatal") if isinstance(hello, dict) else hello))
            return False
        return True

    def _exit_code(self) -> int | None:
        """The worker's exit status once it is gone (EOF can arrive a moment before it is reaped)."""
        try:
            return self._proc.wait(timeout=1.0) if self._proc is not None else None
        except subprocess.TimeoutExpired:
            return None

    def _stop(self, graceful: bool, reap_later: bool = False) -> None:
        """Stop the worker. ``reap_later``: SIGKILL it and return at once; a daemon thread reaps it
        (on a loaded machine the reap alone took seconds, which a caller's time limit must not pay)."""
        proc, tx, rx = self._proc, self._tx, self._rx
        self._proc = self._tx = self._rx = None
        if os.getpid() != self._owner_pid:
            return  # a forked copy: the worker belongs to the parent process
        if tx is not None:
            try:
                tx.close()  # the worker sees EOF and exits
            except OSError:
                pass
        if proc is not None:
            if not graceful and proc.poll() is None:
                proc.kill()
            if reap_later:
                threading.Thread(target=proc.wait, daemon=True, name="math-verify-reaper").start()
                proc = None
        if proc is not None:
            try:
                proc.wait(timeout=2.0 if graceful else 5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    pass
        if rx is not None:
            try:
                rx.close()
            except OSError:
                pass


_DEFAULTS: dict[float, MathVerifier] = {}
_DEFAULTS_LOCK = threading.Lock()


def get_default_verifier(timeout_s: float = 5.0) -> MathVerifier:
    """The process-wide shared verifier for ``timeout_s`` (one worker process per distinct limit)."""
    with _DEFAULTS_LOCK:
        v = _DEFAULTS.get(float(timeout_s))
        if v is None:
            v = _DEFAULTS[float(timeout_s)] = MathVerifier(timeout_s)
        return v


@atexit.register
def _close_all() -> None:
    for v in list(_LIVE):
        try:
            v._stop(graceful=False)
        except Exception:
            pass


# ----------------------------------------------------------------------------- worker side
def _balanced(s: str) -> bool:
    depth = 0
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        depth += (c == "{") - (c == "}")
        if depth < 0:
            return False
        i += 1
    return depth == 0


def _parsed_ok(parsed: list) -> bool:
    """Non-empty and every matched text balanced: a truncated match is a fallback false positive."""
    return bool(parsed) and all(_balanced(x) for x in parsed if isinstance(x, str))


def _worker_main(argv: list[str]) -> None:
    """Serve ``["verify", gold, pred]`` requests until the parent closes the pipe."""
    import logging
    import time
    import warnings

    rx = Connection(int(argv[0]), writable=False)
    tx = Connection(int(argv[1]), readable=False)
    mem = int(argv[2])

    def reply(obj) -> None:
        tx.send_bytes(json.dumps(obj).encode())

    if mem > 0:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        except (ImportError, ValueError, OSError):
            pass
    logging.disable(logging.CRITICAL)  # Math-Verify logs parsed values; formatting them can hang
    warnings.simplefilter("ignore")
    try:
        import inspect

        import math_verify
        from math_verify import parse, verify
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which counts an error
        reply({"fatal": f"cannot import math_verify in the worker: {type(e).__name__}: {e}"})
        return
    # The installed version decides the kwarg names; internal (signal-based) timeouts go off.
    pkw = {k: None for k in ("parsing_timeout",) if k in inspect.signature(parse).parameters}
    vkw = {k: None for k in ("timeout_seconds",) if k in inspect.signature(verify).parameters}
    try:  # pay the lazy imports (antlr, latex2sympy) now, not inside the first call's time limit
        verify(parse("$1$", **pkw), parse("$\\frac{1}{2}$", **pkw), **vkw)
    except Exception:
        pass
    reply({"ready": True, "math_verify": getattr(math_verify, "__version__", "unknown")})

    golds: OrderedDict[str, list] = OrderedDict()
    while True:
        try:
            msg = json.loads(rx.recv_bytes())
        except (EOFError, OSError):
            return
        op = msg[0] if isinstance(msg, list) and msg else None
        if op == "verify":
            out = _verify_pair(parse, verify, pkw, vkw, golds, str(msg[1]), str(msg[2]))
        elif op == "gold":
            out = _check_gold(parse, pkw, str(msg[1]))
        elif op == "sleep":
            time.sleep(float(msg[1]))
            out = ["wrong", "slept"]
        else:
            out = ["error", f"unknown request {str(op)[:40]!r}"]
        reply(out)


def _check_gold(parse, pkw: dict, gold: str) -> list:
    """A gold answer is usable when Math-Verify turns it into at least one math object; a parse that
    only echoes the text back would grade by string fallback, which is how false positives start."""
    try:
        g = parse(f"${gold}$", **pkw)
    except Exception as e:  # never str(e): the message may embed a sympy object
        return ["error", f"{type(e).__name__} while parsing"]
    if not _parsed_ok(g) or all(isinstance(x, str) for x in g):
        return ["error", "Math-Verify finds no math expression in it"]
    return ["correct", None]


def _verify_pair(parse, verify, pkw: dict, vkw: dict, golds: OrderedDict, gold: str, pred: str) -> list:
    try:
        g = golds.get(gold)
        if g is None:
            g = parse(f"${gold}$", **pkw)
            if not _parsed_ok(g):
                return ["error", f"gold answer does not parse: {gold[:200]!r}"]
            golds[gold] = g
            if len(golds) > 1024:
                golds.popitem(last=False)
    except Exception as e:  # never str(e): the message may embed a sympy object
        return ["error", f"{type(e).__name__} while parsing gold answer {gold[:200]!r}"]
    try:
        p = parse(f"${pred}$", **pkw)
        if not _parsed_ok(p):
            return ["wrong", "prediction does not parse"]
        return ["correct" if verify(g, p, **vkw) is True else "wrong", None]
    except (MemoryError, RecursionError, OverflowError) as e:
        return ["timeout", f"{type(e).__name__} on the prediction"]
    except Exception as e:
        return ["error", f"{type(e).__name__} in math_verify"]
