"""The runner that executes one completion's test cases INSIDE the sandbox (stdlib only).

It is started as ``python -I -S -c <this file's source>`` by :mod:`reasonrl.rewards.sandbox`, reads
one JSON job on stdin and writes one JSON record per line on stdout. It never decides pass/fail and
never sees expected outputs: it reports raw outputs (an encoded return value, or the program's
stdout) and the parent compares them (reliability.md §1.4, §5.2).

Protocol: ``{"ready": 1}`` is written once the first test process has been forked and before any
untrusted code has run, so a missing ``ready`` line can only be an infrastructure failure; then one
record per test ``{"i": k, ...}``; then ``{"done": 1}``. The runner itself never executes untrusted
code: the program runs in a forked child (call mode: once, then every case in order; stdio mode: a
fresh child per case), with a CPU limit, stdout captured through a pipe with a byte cap, and a
wall-clock deadline per case enforced here (SIGKILL on expiry). Anything a completion
does to the runner (killing it, writing into its pipes) can only cost that completion its own
records, never forge a verdict: the verdict needs the expected outputs, which are not in here.

Check mode (HumanEval-style ``check(candidate)``, see reasonrl.rewards.sandbox) uses two instances
in two sandboxes: ``serve`` runs the program once and answers each request line (encoded arguments)
with one record, like a call case; ``checker`` runs only the dataset's prompt and test, with a
``candidate`` stub that writes requests and reads the relayed answers, and writes the verdict. The
checker never runs program code; the program's instance never sees the test.

The job is the first line of stdin. ``encode`` is also used by the loaders (reasonrl.tasks.code) to
encode expected values the same way; ``decode`` is its inverse.
"""

import json
import math
import os
import select
import signal
import sys
import time


class Unencodable(TypeError):
    pass


def encode(v, depth=0, ordered=False):
    """A JSON value that keeps Python types apart: bool/int/float/str/None as themselves, lists as
    lists, and tagged objects for tuple, set, dict and non-finite floats. Anything else (a custom
    class, e.g. one whose ``__eq__`` always returns True) cannot be encoded and fails the test."""
    if depth > 50:
        raise Unencodable("nesting deeper than 50")
    t = type(v)
    if v is None or t is bool or t is str:
        return v
    if t is int:
        if abs(v).bit_length() > 4000:
            raise Unencodable("integer with more than 4000 bits")
        return v
    if t is float:
        return v if math.isfinite(v) else {"float": repr(v)}
    if t is list:
        return [encode(x, depth + 1, ordered) for x in v]
    if t is tuple:
        return {"tuple": [encode(x, depth + 1, ordered) for x in v]}
    if t is set or t is frozenset:
        return {"set": sorted(json.dumps(encode(x, depth + 1), sort_keys=True) for x in v)}
    if t is dict:
        items = [[encode(k, depth + 1, ordered), encode(x, depth + 1, ordered)] for k, x in v.items()]
        if ordered:  # check mode: the receiver gets the dict in its insertion order (iteration can matter)
            return {"dict": items}
        return {"dict": sorted(items, key=lambda kv: json.dumps(kv[0], sort_keys=True))}
    raise Unencodable(f"values of type {t.__name__} cannot be compared")


def decode(v):
    """The inverse of :func:`encode` (plain Python values only)."""
    if isinstance(v, list):
        return [decode(x) for x in v]
    if isinstance(v, dict):
        if set(v) == {"tuple"}:
            return tuple(decode(x) for x in v["tuple"])
        if set(v) == {"set"}:
            return {_hashable(decode(json.loads(x))) for x in v["set"]}
        if set(v) == {"dict"}:
            return {_hashable(decode(k)): decode(x) for k, x in v["dict"]}
        if set(v) == {"float"}:
            return float(v["float"])
        raise ValueError(f"unknown encoded value {sorted(v)}")
    return v


def _hashable(v):
    if isinstance(v, list):  # pragma: no cover - encode never produces an unhashable key of a real set
        raise ValueError("unhashable key in an encoded set or dict")
    return v


def _write(fd, obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _record(line):
    """One result line from a child as a dict; anything else (garbage, a non-object) is ``no_result``."""
    try:
        rec = json.loads(line.decode())
        if isinstance(rec, dict):
            return rec
    except (ValueError, UnicodeDecodeError):
        pass
    return {"status": "no_result"}


def _pristine(cases):
    """Built-ins and modules as they are BEFORE the program runs: the program can rebind names and
    mutate the ``builtins`` module, but these dict copies keep the original bindings."""
    import builtins
    import importlib

    mods = {}
    for case in cases:
        for m in case.get("modules", ()):
            if m not in mods:
                try:
                    mods[m] = type(sys)(m)
                    mods[m].__dict__.update(vars(importlib.import_module(m)))
                except ImportError:
                    mods.pop(m, None)
    return {"builtins": dict(vars(builtins)), "modules": mods}


def _env(case, ns, pristine):
    """Namespace of a test expression: captured built-ins and modules, plus only the program names the
    parent listed (``names``); everything else the program bound is invisible to it."""
    env = {"__builtins__": pristine["builtins"]}
    env.update(pristine["modules"])
    for n in case["names"]:
        if n in ns:
            env[n] = ns[n]
    return env


def _result(case, ns, pristine=None):
    if "exprs" in case:  # the program parts of an assert decided in the parent: their values, in order
        env = _env(case, ns, pristine)
        return [eval(compile(e, "<test>", "eval"), env) for e in case["exprs"]]
    if "expr" in case:
        env = _env(case, ns, pristine) if "names" in case else ns
        return eval(compile(case["expr"], "<test>", "eval"), env)
    fn = ns.get(case["call"])
    if not callable(fn):
        raise NameError(f"no function named {case['call']}")
    return fn(*case["args"])


def _guard(thunk):
    """Run ``thunk`` and turn the completion's own failure into a record (exception type only)."""
    try:
        return thunk()
    except MemoryError:
        return {"error": "MemoryError"}
    except Unencodable as e:
        return {"error": "Unencodable", "detail": str(e)[:200]}
    except BaseException as e:  # noqa: BLE001
        return {"error": type(e).__name__[:80]}


def _child(job, cases, go_r, res_w, out_w, in_path):
    """Runs in the forked test process: wait for 'go', run the untrusted program once, then (call
    mode) evaluate every case in order, one result line per case as soon as it is known."""
    import resource

    os.read(go_r, 1)
    os.close(go_r)
    serve = job["mode"] == "serve"
    cpu = max(1, int(math.ceil(job["cpu_total"] if serve else job["cpu_s"] * len(cases))))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    fd_in = os.open(in_path, os.O_RDONLY) if in_path else os.open("/dev/null", os.O_RDONLY)
    os.dup2(fd_in, 0)
    os.dup2(out_w, 1)
    null = os.open("/dev/null", os.O_WRONLY)
    os.dup2(null, 2)
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    stdio = job["mode"] == "stdio"
    pristine = None if stdio or serve else _pristine(cases)
    ns = {"__name__": "__main__" if stdio else "solution", "__builtins__": __builtins__}

    def run_program():
        code = compile(job["code"], "<solution>", "exec")
        try:
            exec(code, ns)
        except SystemExit as e:
            if not stdio or e.code not in (None, 0):
                raise
        sys.stdout.flush()
        return None

    def emit(rec):
        try:
            _write(res_w, rec)
        except BaseException:  # noqa: BLE001
            os._exit(0)

    rec = _guard(run_program)
    if rec is not None:
        emit(rec)
    elif stdio:
        emit({"ok": 1})
    elif serve:
        emit({"ok": 1, "loaded": 1})
        fn = ns.get(job["entry_point"])
        for line in cases:  # requests relayed from the checker: plain encoded arguments only
            req = json.loads(line)
            emit(_guard(lambda: {"ok": 1, "value": encode(fn(*decode(req["args"]), **decode(req["kwargs"])),
                                                          ordered=True)}))
            try:
                sys.stdout.flush()
            except BaseException:  # noqa: BLE001
                pass
    else:
        for case in cases:
            emit(_guard(lambda: {"ok": 1, "value": encode(_result(case, ns, pristine))}))
            try:
                sys.stdout.flush()
            except BaseException:  # noqa: BLE001
                pass
    os._exit(0)


def _run_group(job, first, cases, rec_fd, budget):
    """Fork one process for ``cases`` (indices ``first``...) and forward its records, each with a
    wall-clock deadline of ``timeout_s`` from the previous one. Returns (stdout bytes used, stop)."""
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    in_path = None
    if job["mode"] == "stdio":
        in_path = f"/tmp/stdin-{first}"
        with open(in_path, "w") as f:
            f.write(cases[0].get("stdin", ""))
    try:
        pid = os.fork()
    except OSError as e:
        for fd in (go_r, go_w, res_r, res_w, out_r, out_w):
            os.close(fd)
        return 0, f"fork failed: {e.strerror}"
    if pid == 0:
        try:
            os.close(rec_fd)
            for fd in (go_w, res_r, out_r):
                os.close(fd)
            _child(job, cases, go_r, res_w, out_w, in_path)
        finally:
            os._exit(70)
    for fd in (go_r, res_w, out_w):
        os.close(fd)
    if first == 0:
        _write(rec_fd, {"ready": 1})
    os.write(go_w, b"g")
    os.close(go_w)
    deadline = time.monotonic() + job["timeout_s"]
    res, out, open_fds = b"", b"", {res_r, out_r}
    status = None
    exit_seen = None
    nxt = 0
    while open_fds and nxt < len(cases):
        left = deadline - time.monotonic()
        if left <= 0:
            status = "timeout"
            break
        if exit_seen is None:
            p, st = os.waitpid(pid, os.WNOHANG)
            if p:
                exit_seen = st
        # once the test process has exited, a daemonized grandchild may hold the pipes open
        r, _, _ = select.select(list(open_fds), [], [], min(left, 0.05 if exit_seen is not None else 0.5))
        if not r and exit_seen is not None:
            break
        for fd in r:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
            elif fd == res_r:
                res += chunk
                if len(res) > budget + 65536:
                    status = "output_limit"
            else:
                out += chunk
                if len(out) > budget:
                    status = "output_limit"
        while b"\n" in res and nxt < len(cases) and not status:
            line, res = res.split(b"\n", 1)
            rec = _record(line)
            rec["i"] = first + nxt
            if job["mode"] == "stdio":
                rec["stdout"] = out.decode("utf-8", "replace")
            _write(rec_fd, rec)
            nxt += 1
            deadline = time.monotonic() + job["timeout_s"]
        if status:
            break
    if exit_seen is None:
        try:
            os.kill(pid, signal.SIGKILL)  # done with it (or it overran): no test process outlives its turn
        except OSError:
            pass
        _, exit_seen = os.waitpid(pid, 0)
    for fd in (res_r, out_r):
        os.close(fd)
    if nxt < len(cases):
        if status is None and os.WIFSIGNALED(exit_seen):
            sig = os.WTERMSIG(exit_seen)
            status = "timeout" if sig in (signal.SIGXCPU, signal.SIGKILL) else f"signal {sig}"
        _write(rec_fd, {"i": first + nxt, "status": status or "no_result"})
    return len(out), ("stop" if status in ("timeout", "output_limit") else None)


def _lines(fd):
    """Complete lines read from ``fd`` until EOF (unbuffered: the fd is shared with nobody else)."""
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()
        chunk = os.read(fd, 65536)
        if not chunk:
            if buf:
                yield buf.decode()
            return
        buf += chunk


def _serve(job, rec_fd, requests, budget):
    """check mode, program side: run the program once in a forked test process, then answer each
    request line ``{"args", "kwargs"}`` (relayed by the trusted parent from the checker) with one
    record ``{"i": k, "value"|"error"|"status"}``; each answer has ``timeout_s`` of wall clock."""
    go_r, go_w = os.pipe()
    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        return f"fork failed: {e.strerror}"
    if pid == 0:
        try:
            os.close(rec_fd)
            for fd in (go_w, req_w, res_r, out_r):
                os.close(fd)
            _child(job, _lines(req_r), go_r, res_w, out_w, None)
        finally:
            os._exit(70)
    for fd in (go_r, req_r, res_w, out_w):
        os.close(fd)
    _write(rec_fd, {"ready": 1})
    os.write(go_w, b"g")
    os.close(go_w)
    state = {"res": b"", "out": 0, "fds": {res_r, out_r}, "exit": None}

    def answer(k):
        """Forward the test process's next record (or why there is none); False to stop."""
        deadline = time.monotonic() + job["timeout_s"]
        while b"\n" not in state["res"]:
            left = deadline - time.monotonic()
            status = ("timeout" if left <= 0 else "output_limit" if state["out"] > budget
                      else "no_result" if not state["fds"] else None)
            if status is None and state["exit"] is None and os.waitpid(pid, os.WNOHANG)[0]:
                state["exit"] = 1  # reaped: a daemonized grandchild may still hold the pipes
            if status is None and state["exit"] is not None and not select.select([res_r], [], [], 0.05)[0]:
                status = "no_result"
            if status:
                _write(rec_fd, {"i": k, "status": status})
                return False
            r, _, _ = select.select(list(state["fds"]), [], [], min(left, 0.5))
            for fd in r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    state["fds"].discard(fd)
                elif fd == res_r:
                    state["res"] += chunk
                    if len(state["res"]) > budget + 65536:
                        state["out"] = budget + 1
                else:
                    state["out"] += len(chunk)
        line, state["res"] = state["res"].split(b"\n", 1)
        rec = _record(line)
        rec["i"] = k
        _write(rec_fd, rec)
        return not (rec.get("error") or rec.get("status")) and rec.get("ok") == 1

    k = -1  # record -1: the program itself ran (or why not)
    if answer(k):
        for line in requests:
            k += 1
            if k >= job["max_calls"]:
                _write(rec_fd, {"i": k, "status": "too_many_calls"})
                break
            try:
                os.write(req_w, line.encode() + b"\n")
            except OSError:
                pass
            if not answer(k):
                break
    if state["exit"] is None:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        os.waitpid(pid, 0)
    return None


class _Stop(BaseException):
    """The program side stopped (timeout, memory, crash): the check cannot go on."""


def _checker(job, rec_fd, replies):
    """check mode, trusted side: run the DATASET's prompt and test (never the program) with a
    ``candidate`` whose every call is a request to the program's sandbox, relayed by the parent;
    only plain decoded values come back. Writes ``{"verdict": ...}``."""
    import builtins

    ns = {"__name__": "__checker__"}
    ep = job["entry_point"]

    def candidate(*args, **kwargs):
        try:
            req = {"args": encode(list(args), ordered=True), "kwargs": encode(kwargs, ordered=True)}
        except Unencodable as e:
            raise _Stop(f"unsupported: an argument cannot be sent to the program ({e})") from None
        _write(rec_fd, req)
        rec = json.loads(next(replies))
        if "value" in rec:
            return decode(rec["value"])
        err = rec.get("error")
        exc = getattr(builtins, err, None) if isinstance(err, str) else None
        if isinstance(exc, type) and issubclass(exc, Exception) and not issubclass(exc, Unencodable):
            raise exc("raised by the candidate")
        if err:
            raise RuntimeError(f"the candidate raised {err}")
        raise _Stop(rec.get("stop", "stopped"))

    try:
        exec(compile(job["setup"], "<prompt>", "exec"), ns)
        ns[ep] = candidate  # a check that names the entry point calls the program too
        exec(compile(job["test"], "<test>", "exec"), ns)
        ns[job.get("check", "check")](candidate)
    except _Stop as e:
        _write(rec_fd, {"verdict": "stopped", "detail": str(e)[:200]})
        return
    except BaseException as e:  # noqa: BLE001 - the assert (or anything in the test) failed
        _write(rec_fd, {"verdict": "failed", "error": type(e).__name__[:80]})
        return
    _write(rec_fd, {"verdict": "passed"})


def main():
    import resource

    stdin_fd = sys.stdin.fileno()
    lines = _lines(stdin_fd)
    job = json.loads(next(lines))
    lim = job["limits"]
    for name, value in (("RLIMIT_AS", lim["memory_bytes"]), ("RLIMIT_FSIZE", lim["file_bytes"]),
                        ("RLIMIT_NOFILE", lim["open_files"]), ("RLIMIT_NPROC", lim["processes"]),
                        ("RLIMIT_CORE", 0)):
        if value is not None:
            resource.setrlimit(getattr(resource, name), (value, value))
    rec_fd = os.dup(1)
    null = os.open("/dev/null", os.O_WRONLY)
    os.dup2(null, 1)
    budget = job["output_bytes"]
    if job["mode"] == "checker":
        _write(rec_fd, {"ready": 1})
        _checker(job, rec_fd, lines)
        _write(rec_fd, {"done": 1})
        return
    if job["mode"] == "serve":
        err = _serve(job, rec_fd, lines, budget)
        if err:
            _write(rec_fd, {"runner_error": err, "i": -1})
        _write(rec_fd, {"done": 1})
        return
    cases = job["cases"]
    # call mode: one process runs the program once and every case; stdio: a fresh run per case
    groups = [(k, [c]) for k, c in enumerate(cases)] if job["mode"] == "stdio" else [(0, cases)]
    for k, group in groups:
        used, err = _run_group(job, k, group, rec_fd, budget)
        if err == "stop":
            break  # one test timed out: the verdict is already 'timeout', do not pay for the rest
        if err:
            _write(rec_fd, {"runner_error": err, "i": k})
            break
        budget -= used
        if budget < 0:
            break
    _write(rec_fd, {"done": 1})


if __name__ == "__main__":
    main()
