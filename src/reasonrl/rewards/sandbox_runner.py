"""The runner that executes one completion's test cases INSIDE the sandbox (stdlib only).

It is started as ``python -I -S -c <this file's source>`` by :mod:`reasonrl.rewards.sandbox`, reads
one JSON job on stdin and writes one JSON record per line on stdout. It never decides pass/fail and
never sees expected outputs: it reports raw outputs (an encoded return value, or the program's
stdout) and the parent compares them (reliability.md §1.4, §5.2).

Protocol: ``{"ready": 1}`` is written once the first test process has been forked and before any
untrusted code has run, so a missing ``ready`` line can only be an infrastructure failure; then one
record per test ``{"i": k, ...}``; then ``{"done": 1}``. The runner itself never executes untrusted
code: every test runs in a forked child (fresh namespace, its own CPU limit, stdout captured through
a pipe with a byte cap, wall-clock deadline enforced here, SIGKILL on expiry). Anything a completion
does to the runner (killing it, writing into its pipes) can only cost that completion its own
records, never forge a verdict: the verdict needs the expected outputs, which are not in here.

``encode`` is also imported by the parent to encode expected values the same way.
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


def encode(v, depth=0):
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
        return [encode(x, depth + 1) for x in v]
    if t is tuple:
        return {"tuple": [encode(x, depth + 1) for x in v]}
    if t is set or t is frozenset:
        return {"set": sorted(json.dumps(encode(x, depth + 1), sort_keys=True) for x in v)}
    if t is dict:
        items = [[encode(k, depth + 1), encode(x, depth + 1)] for k, x in v.items()]
        return {"dict": sorted(items, key=lambda kv: json.dumps(kv[0], sort_keys=True))}
    raise Unencodable(f"values of type {t.__name__} cannot be compared")


def _write(fd, obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _child(job, case, go_r, res_w, out_w, in_path):
    """Runs in the forked test process: wait for 'go', then the untrusted code."""
    import resource

    os.read(go_r, 1)
    os.close(go_r)
    cpu = max(1, int(math.ceil(job["cpu_s"])))
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
    try:
        code = compile(job["code"], "<solution>", "exec")
        ns = {"__name__": "__main__" if stdio else "solution", "__builtins__": __builtins__}
        try:
            exec(code, ns)
        except SystemExit as e:
            if not stdio or e.code not in (None, 0):
                raise
        if stdio:
            sys.stdout.flush()
            rec = {"ok": 1}
        else:
            if "expr" in case:
                value = eval(compile(case["expr"], "<test>", "eval"), ns)
            else:
                fn = ns.get(case["call"])
                if not callable(fn):
                    raise NameError(f"no function named {case['call']}")
                value = fn(*case["args"])
            rec = {"ok": 1, "value": encode(value)}
        try:
            sys.stdout.flush()
        except BaseException:
            pass
    except MemoryError:
        rec = {"error": "MemoryError"}
    except Unencodable as e:
        rec = {"error": "Unencodable", "detail": str(e)[:200]}
    except BaseException as e:  # the completion's own failure, by exception type only
        rec = {"error": type(e).__name__[:80]}
    try:
        _write(res_w, rec)
    except BaseException:
        pass
    os._exit(0)


def _run_case(job, k, case, rec_fd, budget):
    """Fork one test process and collect its result and stdout. Returns bytes of stdout used."""
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    in_path = None
    if job["mode"] == "stdio":
        in_path = f"/tmp/stdin-{k}"
        with open(in_path, "w") as f:
            f.write(case.get("stdin", ""))
    try:
        pid = os.fork()
    except OSError as e:
        for fd in (go_r, go_w, res_r, res_w, out_r, out_w):
            os.close(fd)
        return None, f"fork failed: {e.strerror}"
    if pid == 0:
        try:
            os.close(rec_fd)
            for fd in (go_w, res_r, out_r):
                os.close(fd)
            _child(job, case, go_r, res_w, out_w, in_path)
        finally:
            os._exit(70)
    for fd in (go_r, res_w, out_w):
        os.close(fd)
    if k == 0:
        _write(rec_fd, {"ready": 1})
    os.write(go_w, b"g")
    os.close(go_w)
    deadline = time.monotonic() + job["timeout_s"]
    res, out, open_fds = b"", b"", {res_r, out_r}
    status = None
    exit_seen = None
    while open_fds:
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
                continue
            if fd == res_r:
                res += chunk
                if len(res) > budget + 65536:
                    status = "output_limit"
            else:
                out += chunk
                if len(out) > budget:
                    status = "output_limit"
        if status:
            break
    if exit_seen is None:
        if status:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _, exit_seen = os.waitpid(pid, 0)
    for fd in (res_r, out_r):
        os.close(fd)
    if status is None and os.WIFSIGNALED(exit_seen):
        sig = os.WTERMSIG(exit_seen)
        status = "timeout" if sig in (signal.SIGXCPU, signal.SIGKILL) else f"signal {sig}"
    rec = {"i": k}
    if status:
        rec["status"] = status
    else:
        try:
            rec.update(json.loads(res.decode().splitlines()[0]))
        except (ValueError, IndexError, UnicodeDecodeError):
            rec["status"] = "no_result"
        if job["mode"] == "stdio":
            rec["stdout"] = out.decode("utf-8", "replace")
    _write(rec_fd, rec)
    return len(out), ("stop" if status == "timeout" else None)


def main():
    import resource

    job = json.loads(sys.stdin.read())
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
    for k, case in enumerate(job["cases"]):
        used, err = _run_case(job, k, case, rec_fd, budget)
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
