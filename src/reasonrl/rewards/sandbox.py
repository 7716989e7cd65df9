"""Run model-written programs against test cases in a bubblewrap sandbox (reliability.md §1, §2, §5).

One completion = one sandbox invocation holding all its test cases (the sandbox start-up, ~10-20 ms,
is paid once per completion, not per case). The sandbox is ``bwrap`` started as an unprivileged uid
(a distinct uid per worker slot when we are root, so a fork bomb's RLIMIT_NPROC count never reaches
another slot or the trainer) with every namespace unshared (no network, not even the host's
loopback; its own pid namespace so every descendant dies with it), read-only binds of ``/usr``
only, a size-capped tmpfs at ``/tmp``, an empty environment for bwrap itself and for the program
(§2 case 9: bwrap's own pid 1 inherits the caller's environment), rlimits, an outer wall-clock
SIGKILL and an output cap.

Inside, :mod:`reasonrl.rewards.sandbox_runner` reports raw per-test outputs; the verdict is computed
HERE, type-strictly, from those records (assert tests: by :mod:`reasonrl.rewards.sandbox_asserts`
over the decoded values of the program's calls; HumanEval-style ``check(candidate)``: by the dataset's
check running in a second sandbox that never runs the program, see :meth:`CodeExecutor._run_check`).
The memory limit holds for the whole sandbox (:class:`MemoryWatch`, and a cgroup v2 leaf where the
kernel delegates one), not only per process. Expected outputs never enter the sandbox; exit codes and
stdout markers are never evidence of passing (a record per test case is required).

Statuses: ``passed``, ``failed``, ``timeout``, ``runtime_error``, ``memory_limit``,
``output_limit``, ``infra_error``. ``infra_error`` (bwrap could not start, the runner died before
any untrusted code ran) is retried, then reported as such; the scorer marks it invalid instead of
scoring it 0. Where bwrap cannot run, :class:`SandboxUnavailable` is raised with the fix; the only
way around it is ``isolation="UNSAFE_none"``, which runs the same runner as a plain subprocess and
is for trusted code only.
"""

from __future__ import annotations

import json
import math
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from reasonrl.rewards.sandbox_asserts import CheckError, evaluate_check
from reasonrl.rewards.sandbox_runner import decode


__all__ = ["STATUSES", "CodeJob", "ExecResult", "SandboxConfig", "SandboxUnavailable", "CodeExecutor",
           "outputs_equal", "stdout_equal", "UNSAFE"]

STATUSES = ("passed", "failed", "timeout", "runtime_error", "memory_limit", "output_limit", "infra_error")
UNSAFE = "UNSAFE_none"
_RUNNER_SRC = Path(__file__).with_name("sandbox_runner.py").read_text()
_INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `sudo apt-get install -y bubblewrap`; `make install` does it) "
                 "and make sure unprivileged user namespaces are enabled (sysctl user.max_user_namespaces > 0, "
                 "kernel.unprivileged_userns_clone=1 where that knob exists)")


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create its namespaces here."""


@dataclass(frozen=True)
class CodeJob:
    """One completion to run: ``mode`` 'call' (cases are ``{"call": name, "args": [...]}``,
    ``{"expr": "f(1)", "names": [...]}`` or ``{"exprs": [...], "names": [...]}``, compared by return
    value or decided by a parent-side check), 'stdio' (cases are ``{"stdin": text}``, compared by
    stdout) or 'check' (one case ``{"setup": prompt, "test": source defining check(candidate),
    "entry_point": name}``, HumanEval-style). ``expected`` stays in the parent."""

    code: str
    mode: str
    cases: Sequence[dict]
    expected: Sequence[Any]

    @classmethod
    def from_spec(cls, code: str, spec: dict) -> "CodeJob":
        """The job for a response's program and a task's ``meta["code"]`` (check mode: the program is
        the task's prompt followed by the response, as in HumanEval)."""
        if spec["mode"] == "check":
            code = spec["cases"][0]["setup"] + "\n" + code
        return cls(code, spec["mode"], spec["cases"], spec["expected"])


@dataclass
class ExecResult:
    status: str
    passed: int = 0
    total: int = 0
    seconds: float = 0.0
    attempts: int = 1
    detail: str = ""
    memory_peak_mb: float = 0.0     # largest summed memory of the sandbox's processes the parent saw


@dataclass(frozen=True)
class SandboxConfig:
    """Limits per completion (all test cases of one completion share one sandbox)."""

    isolation: str = "bwrap"
    timeout_s: float = 2.0          # wall clock per test case
    cpu_s: float = 2.0              # CPU seconds per test case (RLIMIT_CPU)
    startup_s: float = 5.0          # added once to the outer deadline: sandbox + interpreter start
    memory_mb: int = 512            # the WHOLE sandbox (summed over its processes); also each process's RLIMIT_AS
    file_mb: int = 8                # RLIMIT_FSIZE
    tmpfs_mb: int = 32              # size of /tmp inside
    output_bytes: int = 1 << 20     # stdout cap across all cases (§2 case 5)
    processes: int = 16             # RLIMIT_NPROC (per uid: a uid per slot when root); was 64
    memory_poll_s: float = 0.02     # how often the parent sums the sandbox's memory
    check_timeout_s: float = 0.0    # check mode: wall clock for the whole check(candidate); 0 = 10 x timeout_s
    memory_guard: str = "auto"      # "auto": a cgroup v2 leaf per slot when possible, plus polling; "poll"; "cgroup"
    open_files: int = 64
    workers: int = 0                # parallel sandboxes; 0 = number of CPU cores
    retries: int = 2                # extra attempts after an infra_error
    base_uid: int = 200000          # when root, slot i runs as uid base_uid + (pid % 50000) * stride + i
    python: str = ""                # interpreter inside; default /usr/bin/python3, else sys.executable
    float_rel_tol: float = 1e-9


# ------------------------------------------------------------------------------ comparison
def outputs_equal(got: Any, want: Any, rel_tol: float = 1e-9) -> bool:
    """Type-strict equality of two encoded values: 1 != 1.0 != True, a tuple is not a list;
    finite floats compare with a relative tolerance."""
    if type(got) is not type(want):
        return False
    if isinstance(got, float):
        return math.isclose(got, want, rel_tol=rel_tol, abs_tol=0.0)
    if isinstance(got, list):
        return len(got) == len(want) and all(outputs_equal(a, b, rel_tol) for a, b in zip(got, want))
    if isinstance(got, dict):
        return got.keys() == want.keys() and all(outputs_equal(got[k], want[k], rel_tol) for k in got)
    return got == want


def stdout_equal(got: str, want: str) -> bool:
    """Program output comparison: trailing spaces per line and trailing blank lines are ignored."""
    def norm(s: str) -> list[str]:
        lines = [ln.rstrip() for ln in s.replace("\r\n", "\n").split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        return lines
    return norm(got) == norm(want)


def _is_check(want: Any) -> bool:
    return isinstance(want, dict) and len(want) == 1 and "check" in want


def check_passes(check: str, encoded: Any) -> bool:
    """An assert decided here (reasonrl.rewards.sandbox_asserts): ``encoded`` is the list of the
    program parts' encoded values; a check that raises is a failed assert."""
    if not isinstance(encoded, list):
        return False
    try:
        return evaluate_check(check, [decode(v) for v in encoded])
    except (CheckError, ValueError, TypeError, RecursionError):
        return False


def verdict_from_records(lines: list[str], job: CodeJob, killed: str | None, rel_tol: float) -> tuple[str, int, str]:
    """The trusted verdict from the runner's raw records. Returns (status, passed, detail)."""
    recs: list[dict] = []
    for ln in lines:
        try:
            r = json.loads(ln)
        except ValueError:
            continue  # garbage the completion wrote into the runner's channel costs only itself
        if isinstance(r, dict):
            recs.append(r)
    if not any(r.get("ready") == 1 for r in recs[:1]):
        return "infra_error", 0, "the sandbox runner never started (no ready record)"
    if killed == "output_limit":
        return "output_limit", 0, "output cap exceeded"
    if killed == "memory_limit":
        return "memory_limit", 0, "the sandbox's processes together exceeded the memory limit"
    n = len(job.cases)
    by_i: dict[int, dict] = {}
    for r in recs[1:]:
        i = r.get("i")
        if isinstance(i, int) and 0 <= i < n and i not in by_i:
            by_i[i] = r
    passed = 0
    worst = None
    for i in range(n):
        r = by_i.get(i)
        if r is None:
            continue
        status = r.get("status")
        err = r.get("error")
        if status == "timeout":
            worst = worst or "timeout"
        elif status == "output_limit":
            return "output_limit", passed, f"test {i}: output cap exceeded"
        elif err == "MemoryError":
            worst = worst or "memory_limit"
        elif status or err or r.get("ok") != 1:
            worst = worst or "runtime_error"
        elif job.mode == "stdio":
            passed += isinstance(r.get("stdout"), str) and stdout_equal(r["stdout"], job.expected[i])
        elif _is_check(job.expected[i]):
            passed += "value" in r and check_passes(job.expected[i]["check"], r["value"])
        else:
            passed += "value" in r and outputs_equal(r["value"], job.expected[i], rel_tol)
    if passed == n and len(by_i) == n:
        return "passed", passed, ""
    if killed == "timeout":
        return "timeout", passed, "wall-clock limit of the whole sandbox"
    if worst:
        return worst, passed, ""
    if len(by_i) < n:
        return "runtime_error", passed, f"only {len(by_i)}/{n} test records (the program ended the runner)"
    return "failed", passed, ""


# ------------------------------------------------------------------------------ executor
def _probe(cmd: list[str]) -> tuple[bool, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=30, env={})
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{type(e).__name__}: {e}"
    ok = p.returncode == 0 and p.stdout.strip() == b"ok"
    return ok, (p.stderr.decode(errors="replace").strip() or f"exit code {p.returncode}")[-500:]


class CodeExecutor:
    """A pool of sandbox slots; :meth:`run_many` grades a batch of completions in parallel.

    Construction checks that the sandbox works here (one trial run) and raises
    :class:`SandboxUnavailable` with the fix otherwise. ``counts`` tallies statuses and attempts.
    """

    def __init__(self, config: SandboxConfig | None = None):
        self.cfg = cfg = config or SandboxConfig()
        if cfg.isolation not in ("bwrap", UNSAFE):
            raise ValueError(f"sandbox isolation must be 'bwrap' or {UNSAFE!r} (no isolation, trusted code "
                             f"only), got {cfg.isolation!r}")
        self.workers = cfg.workers or os.cpu_count() or 1
        self.is_root = os.geteuid() == 0
        # distinct uids per slot AND per process: RLIMIT_NPROC counts per uid, so two trainers (or a
        # trainer and an evaluator) on one machine must not share a slot's process budget
        self.uid0 = cfg.base_uid + (os.getpid() % 50000) * max(16, 2 * self.workers)
        # slot i's program runs as uid0 + i, its check-mode checker as uid0 + workers + i
        self.uids = [self.uid0 + i for i in range(2 * self.workers)]
        self.python = cfg.python or ("/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable)
        self._slots: queue.Queue[int] = queue.Queue()
        for i in range(self.workers):
            self._slots.put(i)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")
        self._lock = threading.Lock()
        self.counts: dict[str, int] = dict.fromkeys((*STATUSES, "attempts", "retries"), 0)
        if self.is_root:
            # bwrap: per-slot uid, so the limit is this sandbox's own; unsafe: not enforced for root (§1.2)
            self._nproc = cfg.processes if cfg.isolation == "bwrap" else None
        else:
            # one shared uid: RLIMIT_NPROC counts ALL its processes, so leave room for the ones it has
            self._nproc = _user_processes() + 64 * self.workers + cfg.processes
        if cfg.isolation == "bwrap":
            self._check_bwrap()
        # a kernel-enforced limit on the whole sandbox where a delegated cgroup v2 allows it; the
        # parent's /proc polling (MemoryWatch) runs in every case
        self._cgroup = _CgroupLeaves(cfg) if cfg.memory_guard in ("auto", "cgroup") else None
        if self._cgroup is not None and not self._cgroup.usable(self._probe_cmd()):
            self._cgroup = None
        if cfg.memory_guard == "cgroup" and self._cgroup is None:
            raise SandboxUnavailable("sandbox memory_guard='cgroup' needs a writable cgroup v2 directory with the memory "
                                     "controller enabled (none found); use memory_guard='auto' to fall back to polling")
        self.memory_guard = "cgroup+poll" if self._cgroup is not None else "poll"
        self._oom0: dict[int, int] = {}  # check mode: each slot's OOM-kill count when its program started

    # -- command ------------------------------------------------------------------------
    def _bwrap_cmd(self, slot: int, argv: list[str], checker: bool = False) -> list[str]:
        bwrap = shutil.which("bwrap") or "bwrap"
        cmd: list[str] = []
        if self.is_root:
            uid = str(self.uid0 + slot + (self.workers if checker else 0))
            cmd += ["/usr/bin/setpriv" if os.path.exists("/usr/bin/setpriv") else "setpriv",
                    f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--no-new-privs"]
        cmd += [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL",
                "--ro-bind", "/usr", "/usr"]
        for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
            if os.path.islink(d):
                cmd += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                cmd += ["--ro-bind", d, d]
        prefix = os.path.dirname(os.path.dirname(os.path.realpath(self.python)))
        if not prefix.startswith("/usr"):
            cmd += ["--ro-bind", prefix, prefix]
        cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(self.cfg.tmpfs_mb << 20), "--tmpfs", "/tmp",
                "--chdir", "/tmp", "--hostname", "sandbox", "--setenv", "PATH", "/usr/bin:/bin",
                "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8", "--"]
        return cmd + argv

    def _probe_cmd(self) -> list[str]:
        argv = [self.python, "-I", "-S", "-c", "print('ok')"]
        return self._bwrap_cmd(0, argv) if self.cfg.isolation == "bwrap" else argv

    def _check_bwrap(self) -> None:
        if shutil.which("bwrap") is None:
            raise SandboxUnavailable(f"code rewards need the bubblewrap sandbox, but `bwrap` is not on PATH; "
                                     f"{_INSTALL_HINT}. Only for trusted code: reward.code_sandbox={UNSAFE}")
        if self.is_root and not os.path.exists("/usr/bin/setpriv") and shutil.which("setpriv") is None:
            raise SandboxUnavailable("running as root, the sandbox drops to an unprivileged uid with `setpriv` "
                                     "(util-linux), which is missing; install util-linux")
        ok, why = _probe(self._probe_cmd())
        if not ok:
            raise SandboxUnavailable(f"the bubblewrap sandbox does not start here ({why}); {_INSTALL_HINT}; and "
                                     f"check that {self.python} is readable by an unprivileged user. Only for "
                                     f"trusted code: reward.code_sandbox={UNSAFE}")

    # -- running ------------------------------------------------------------------------
    def run_many(self, jobs: Sequence[CodeJob]) -> list[ExecResult]:
        """Grade every job (in parallel across the slots); results are in input order."""
        return list(self._pool.map(self.run, jobs))

    def run(self, job: CodeJob) -> ExecResult:
        """Grade one job, retrying infra errors up to ``retries`` times."""
        if job.mode not in ("call", "stdio", "check") or not job.cases or len(job.cases) != len(job.expected):
            raise ValueError(f"bad code job: mode {job.mode!r}, {len(job.cases)} cases, {len(job.expected)} expected")
        res = ExecResult("infra_error")
        for attempt in range(1 + self.cfg.retries):
            slot = self._slots.get()
            try:
                res = self._run_once(job, slot)
            finally:
                self._slots.put(slot)
            res.attempts = attempt + 1
            if res.status != "infra_error":
                break
            if attempt < self.cfg.retries:
                self._bump("retries")
                time.sleep(0.05 * (attempt + 1))
        self._bump(res.status)
        self._bump("attempts", res.attempts)
        return res

    def _bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def _limits(self) -> dict:
        c = self.cfg
        return {"memory_bytes": c.memory_mb << 20, "file_bytes": c.file_mb << 20, "open_files": c.open_files,
                "processes": self._nproc}

    def _start(self, slot: int, checker: bool = False) -> subprocess.Popen:
        argv = [self.python, "-I", "-S", "-c", _RUNNER_SRC]
        cmd = self._bwrap_cmd(slot, argv, checker) if self.cfg.isolation == "bwrap" else argv
        if self._cgroup is not None and not checker:
            cmd, self._oom0[slot] = self._cgroup.enter(slot, cmd)
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={},
                                start_new_session=True, close_fds=True,
                                cwd="/tmp" if self.cfg.isolation == "bwrap" else None)

    def _run_check(self, job: CodeJob, slot: int) -> ExecResult:
        """check mode (HumanEval-style ``check(candidate)``): two sandboxes. The checker runs only the
        dataset's prompt and test, with a ``candidate`` whose calls become requests; the program's
        sandbox answers each with the encoded return value; this thread relays the lines between
        them (with the deadline, caps and the memory watch) and takes the checker's verdict. The
        program never shares a process, a pid namespace or a uid with the code that decides."""
        c = self.cfg
        case = job.cases[0]
        max_calls = int(case.get("max_calls", 10000))
        budget = c.check_timeout_s or 10 * c.timeout_s
        t0 = time.perf_counter()
        before = _pids()
        procs: list[subprocess.Popen] = []
        try:
            procs.append(self._start(slot, checker=True))
            procs.append(self._start(slot))
        except OSError as e:
            for p in procs:
                _kill(p)
            return ExecResult("infra_error", total=1, detail=f"cannot start the sandbox: {e}")
        chk, prog = procs
        watch = MemoryWatch(prog.pid, c.memory_mb << 20, before, c.memory_poll_s)
        base = {"timeout_s": c.timeout_s, "cpu_s": c.cpu_s, "output_bytes": c.output_bytes, "limits": self._limits()}
        deadline = time.monotonic() + c.startup_s + budget
        _send(chk, {**base, "mode": "checker", "setup": case["setup"], "test": case["test"],
                    "entry_point": case["entry_point"]}, deadline)
        _send(prog, {**base, "mode": "serve", "code": job.code, "max_calls": max_calls, "cpu_total": budget,
                     "entry_point": case["entry_point"]}, deadline)
        state = _relay(chk, prog, watch, deadline, c.output_bytes + (256 << 10), c.memory_poll_s)
        for p in procs:
            _kill(p)
        if self._cgroup is not None and self._cgroup.leave(slot, self._oom0.get(slot)):
            state["killed"] = "memory_limit"  # the kernel's OOM killer acted in the program's leaf
        status, detail = _check_verdict(state)
        if status == "infra_error":
            detail += f"; stderr: {state['err'][-300:]!r}"
        return ExecResult(status, int(status == "passed"), 1, time.perf_counter() - t0, detail=detail,
                          memory_peak_mb=watch.peak / 2**20)

    def _run_once(self, job: CodeJob, slot: int) -> ExecResult:
        if job.mode == "check":
            return self._run_check(job, slot)
        c = self.cfg
        payload = json.dumps({
            "code": job.code, "mode": job.mode, "cases": list(job.cases), "timeout_s": c.timeout_s, "cpu_s": c.cpu_s,
            "output_bytes": c.output_bytes,
            "limits": {"memory_bytes": c.memory_mb << 20, "file_bytes": c.file_mb << 20,
                       "open_files": c.open_files, "processes": self._nproc}}).encode()
        argv = [self.python, "-I", "-S", "-c", _RUNNER_SRC]
        cmd = self._bwrap_cmd(slot, argv) if c.isolation == "bwrap" else argv
        oom0 = None
        if self._cgroup is not None:
            cmd, oom0 = self._cgroup.enter(slot, cmd)
        t0 = time.perf_counter()
        before = _pids()  # every process alive now is not the sandbox's (MemoryWatch)
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env={}, start_new_session=True, close_fds=True,
                                    cwd="/tmp" if c.isolation == "bwrap" else None)
        except OSError as e:
            return ExecResult("infra_error", total=len(job.cases), detail=f"cannot start the sandbox: {e}")
        deadline = time.monotonic() + c.startup_s + len(job.cases) * (c.timeout_s + 0.2)
        watch = MemoryWatch(proc.pid, c.memory_mb << 20, before, c.memory_poll_s)
        out, err, killed = _communicate(proc, payload, deadline, c.output_bytes + (256 << 10), watch, c.memory_poll_s)
        if self._cgroup is not None and self._cgroup.leave(slot, oom0):
            killed = "memory_limit"  # the kernel's OOM killer acted inside the leaf
        secs = time.perf_counter() - t0
        lines = out.decode("utf-8", "replace").splitlines()
        status, passed, detail = verdict_from_records(lines, job, killed, c.float_rel_tol)
        if status == "infra_error":
            detail += f"; exit code {proc.returncode}; stderr: {err.decode(errors='replace')[-300:]!r}"
        return ExecResult(status, passed, len(job.cases), secs, detail=detail, memory_peak_mb=watch.peak / 2**20)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._cgroup is not None:
            self._cgroup.remove()


def _communicate(proc: subprocess.Popen, payload: bytes, deadline: float, cap: int, watch: "MemoryWatch | None" = None,
                 poll_s: float = 0.02) -> tuple[bytes, bytes, str | None]:
    """Feed stdin, read stdout/stderr with a byte cap and a deadline, and every ``poll_s`` sum the
    sandbox's memory; SIGKILL everything when a limit is hit. Never waits for EOF without a deadline
    (a daemonized grandchild can hold a pipe)."""
    killed = None
    out, err = bytearray(), bytearray()
    try:
        proc.stdin.write(payload)
        proc.stdin.close()
    except OSError:
        pass
    fds = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    while fds:
        left = deadline - time.monotonic()
        if left <= 0:
            killed = "timeout"
            break
        r, _, _ = select.select(list(fds), [], [], min(left, poll_s) if watch else left)
        if watch is not None and watch.over():
            killed = "memory_limit"
            break
        for fd in r:
            chunk = os.read(fd, 65536)
            if not chunk:
                del fds[fd]
                continue
            buf = fds[fd]
            buf += chunk
            if len(out) > cap:
                killed = "output_limit"
            if len(err) > 65536:
                del err[: len(err) - 65536]
        if killed:
            break
    if killed:
        if watch is not None:
            watch.kill()
        _kill(proc)
    else:
        _reap(proc)
    return bytes(out), bytes(err), killed


# ------------------------------------------------------------------------------ whole-sandbox memory
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s whole process group (the sandbox's session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    _reap(proc)


def _reap(proc: subprocess.Popen) -> None:
    """Wait for ``proc`` (killing it if it outlives 5 s) and close its pipes."""
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        try:
            f.close()
        except OSError:
            pass


def _send(proc: subprocess.Popen, rec: dict, deadline: float) -> bool:
    """Write one JSON line to ``proc``'s stdin without ever blocking past ``deadline`` (a stopped
    reader must not hang the trainer's thread). False when it could not be delivered."""
    data = (json.dumps(rec) + "\n").encode()
    fd = proc.stdin.fileno()
    os.set_blocking(fd, False)
    while data:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            if not select.select([], [fd], [], left)[1]:
                continue
            data = data[os.write(fd, data):]
        except BlockingIOError:
            continue
        except OSError:
            return False
    return True


def _relay(chk: subprocess.Popen, prog: subprocess.Popen, watch: "MemoryWatch", deadline: float, cap: int,
           poll_s: float) -> dict:
    """Pass request lines checker -> program and answer lines program -> checker until the checker
    gives a verdict or a limit is hit. Only the checker's ``args``/``kwargs`` and the program's
    ``value``/``error`` fields are passed on."""
    st: dict[str, Any] = {"chk_ready": False, "prog_ready": False, "loaded": None, "verdict": None, "prog_status": None,
                          "last_error": None, "killed": None, "calls": 0, "err": ""}
    bufs = {chk.stdout.fileno(): b"", prog.stdout.fileno(): b""}
    open_fds = {chk.stdout.fileno(), prog.stdout.fileno(), chk.stderr.fileno(), prog.stderr.fileno()}
    size = {prog.stdout.fileno(): 0, chk.stdout.fileno(): 0}

    def to_checker(rec: dict) -> None:
        if not _send(chk, rec, deadline):
            st["killed"] = st["killed"] or "timeout"

    def stop(status: str) -> None:
        st["prog_status"] = st["prog_status"] or status
        to_checker({"stop": status})

    while st["verdict"] is None and open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            st["killed"] = "timeout"
            break
        r, _, _ = select.select(list(open_fds), [], [], min(left, poll_s))
        if watch.over():
            st["killed"] = "memory_limit"
            watch.kill()
            break
        for fd in r:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
                if fd == prog.stdout.fileno() and st["prog_status"] is None:
                    stop("runtime_error")  # the program's sandbox is gone: no call will be answered
                elif fd == chk.stdout.fileno():
                    open_fds.clear()
                continue
            if fd not in bufs:  # stderr: kept for infra diagnostics only
                st["err"] = (st["err"] + chunk.decode(errors="replace"))[-2000:]
                continue
            size[fd] += len(chunk)
            if size[fd] > (cap if fd == prog.stdout.fileno() else 16 * cap):
                st["killed"] = "output_limit"
                break
            bufs[fd] += chunk
            while b"\n" in bufs[fd]:
                line, bufs[fd] = bufs[fd].split(b"\n", 1)
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
                if not isinstance(rec, dict):
                    continue
                if fd == chk.stdout.fileno():
                    if rec.get("ready") == 1:
                        st["chk_ready"] = True
                    elif "verdict" in rec:
                        st["verdict"] = rec
                    elif "args" in rec and st["prog_status"] is None:
                        st["calls"] += 1
                        if not _send(prog, {"args": rec["args"], "kwargs": rec.get("kwargs", {"dict": []})}, deadline):
                            stop("runtime_error")  # its runner stopped reading (e.g. SIGSTOPped by the program)
                    elif "args" in rec:
                        to_checker({"stop": st["prog_status"]})
                    continue
                # the program's runner: ready, then record -1 (the program ran), then one per call
                if not st["prog_ready"]:
                    st["prog_ready"] = rec.get("ready") == 1
                    continue
                i, err, status = rec.get("i"), rec.get("error"), rec.get("status")
                if rec.get("done") == 1 or "runner_error" in rec:
                    if st["loaded"] is None or "runner_error" in rec:
                        stop("runtime_error")
                    continue
                if i == -1:
                    st["loaded"] = not (err or status) and rec.get("ok") == 1
                    if not st["loaded"]:
                        stop("memory_limit" if err == "MemoryError" else "timeout" if status == "timeout"
                             else "runtime_error")
                elif status:
                    stop({"timeout": "timeout", "output_limit": "output_limit"}.get(status, "runtime_error"))
                elif err == "MemoryError":
                    stop("memory_limit")
                elif err:
                    st["last_error"] = err
                    to_checker({"error": err})
                elif rec.get("ok") == 1 and "value" in rec:
                    to_checker({"value": rec["value"]})
                else:
                    stop("runtime_error")
        if st["killed"]:
            break
    return st


def _check_verdict(st: dict) -> tuple[str, str]:
    if not st["chk_ready"] or not st["prog_ready"]:
        return "infra_error", "a check-mode sandbox never started (no ready record)"
    if st["killed"] in ("memory_limit", "output_limit"):
        return st["killed"], ""
    if st["prog_status"] in ("timeout", "memory_limit", "output_limit"):
        return st["prog_status"], ""
    v = st["verdict"]
    if v is None:
        return ("timeout", "the whole check ran past its limit") if st["killed"] == "timeout" else (
            "runtime_error", "the checker gave no verdict")
    if v.get("verdict") == "passed":
        if st["loaded"] and st["calls"] > 0:
            return "passed", ""
        return "failed", "the check never called the candidate"
    if st["prog_status"] or (v.get("verdict") == "failed" and st["last_error"]):
        return "runtime_error", str(st["prog_status"] or st["last_error"])
    if str(v.get("detail", "")).startswith("unsupported"):
        return "runtime_error", v["detail"]
    return "failed", str(v.get("error", ""))


def _pids() -> set[int]:
    return {int(d) for d in os.listdir("/proc") if d.isdigit()}


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("ascii", "replace")
    except OSError:
        return None


class MemoryWatch:
    """The summed memory of one sandbox's processes, polled from ``/proc`` by the trusted parent.

    RLIMIT_AS bounds each process, not the sandbox: six forked children of a 512 MiB sandbox reached
    1.7 GiB (issue 11 item 4). The sandbox's processes are the descendants of the process we
    started: inside bwrap's pid namespace every orphan is re-parented to the namespace's init, which
    is one of them, so ``setsid``/double-fork cannot leave the tree. Only processes born after the
    start are examined (the rest of the machine is skipped without reading it), so a poll costs one
    ``listdir(/proc)`` plus a ``statm`` read per sandbox process. The resident set sizes are summed
    first; only when that sum (which counts pages shared after ``fork`` once per process) crosses the
    limit, the proportional set sizes (``smaps_rollup`` Pss, shared pages split between their users)
    decide. A spike shorter than the poll interval can go unseen; it is still bounded by
    ``processes`` x RLIMIT_AS.
    """

    def __init__(self, root: int, limit: int, before: set[int], interval: float = 0.02):
        self.root, self.limit, self.interval = root, limit, interval
        self._last = 0.0
        self.foreign = set(before) - {root}
        self.mine: set[int] = {root}
        self.peak = 0

    def _scan(self) -> None:
        alive = _pids()
        self.mine &= alive
        self.foreign &= alive
        new = alive - self.mine - self.foreign
        ppid: dict[int, int] = {}
        for pid in new:
            st = _read(f"/proc/{pid}/stat")
            if st is None:
                continue
            try:
                ppid[pid] = int(st[st.rindex(")") + 2:].split()[1])
            except (ValueError, IndexError):
                continue
        grew = True
        while grew:  # a child may be listed before its (also new) parent
            grew = False
            for pid, pp in list(ppid.items()):
                if pp in self.mine or pid == self.root:
                    self.mine.add(pid)
                    del ppid[pid]
                    grew = True
        self.foreign |= set(ppid) - {self.root}

    def used(self) -> int:
        self._scan()
        rss = 0
        for pid in self.mine:
            statm = _read(f"/proc/{pid}/statm")
            if statm:
                rss += int(statm.split()[1]) * _PAGE
        if rss <= self.limit:
            self.peak = max(self.peak, rss)
            return rss
        pss = 0
        for pid in self.mine:
            text = _read(f"/proc/{pid}/smaps_rollup")
            line = next((ln for ln in (text or "").splitlines() if ln.startswith("Pss:")), None)
            if line is None:  # unreadable (gone, or not ours to read): count its resident size
                statm = _read(f"/proc/{pid}/statm")
                pss += int(statm.split()[1]) * _PAGE if statm else 0
            else:
                pss += int(line.split()[1]) << 10
        self.peak = max(self.peak, pss)
        return pss

    def over(self) -> bool:
        """Whether the sandbox is past its limit (measured at most once per ``interval``)."""
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        return self.used() > self.limit

    def kill(self) -> None:
        """SIGKILL every process of the sandbox (the namespace would take them down with its init, but
        killing them directly frees their memory now)."""
        self._scan()
        for pid in self.mine:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class _CgroupLeaves:
    """One cgroup v2 leaf per slot with ``memory.max`` (no swap, ``memory.oom.group``) and ``pids.max``.

    Used only where this process may create cgroups with the memory controller: its own cgroup when
    that is the (namespace) root, else next to it in its parent (the no-internal-process rule forbids
    children of a non-root cgroup that holds processes). Controllers are never enabled here (that
    would change the machine's setup); where none is usable, polling alone guards memory. The
    sandbox command is wrapped in ``sh -c 'echo $$ > LEAF/cgroup.procs && exec ...'`` so it is
    inside the leaf before bwrap forks anything.
    """

    def __init__(self, cfg: SandboxConfig):
        self.cfg = cfg
        self.base = _cgroup_v2_parent()
        self.tag = f"reasonrl-sandbox-{os.getpid()}"

    def _leaf(self, slot: int) -> str:
        return os.path.join(self.base or "", f"{self.tag}-{slot}")

    def usable(self, probe_cmd: list[str]) -> bool:
        if self.base is None:
            return False
        try:
            cmd, oom0 = self.enter(0, probe_cmd)
        except OSError:
            return False
        ok, _ = _probe(cmd)
        self.leave(0, oom0)
        return ok

    def enter(self, slot: int, cmd: list[str]) -> tuple[list[str], int]:
        leaf = self._leaf(slot)
        if not os.path.isdir(leaf):
            os.mkdir(leaf)
            _write_file(f"{leaf}/memory.max", str(self.cfg.memory_mb << 20))
            for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1"),
                                ("pids.max", str(self.cfg.processes + 8))):
                if os.path.exists(f"{leaf}/{name}"):
                    _write_file(f"{leaf}/{name}", value)
        sh = "/bin/sh" if os.path.exists("/bin/sh") else "sh"
        return [sh, "-c", 'echo $$ > "$0" && exec "$@"', f"{leaf}/cgroup.procs", *cmd], _oom_kills(leaf)

    def leave(self, slot: int, oom0: int | None) -> bool:
        """Kill what is left in the leaf; True when the kernel OOM-killed something in it."""
        leaf = self._leaf(slot)
        if os.path.exists(f"{leaf}/cgroup.kill"):
            try:
                _write_file(f"{leaf}/cgroup.kill", "1")
            except OSError:
                pass
        return oom0 is not None and _oom_kills(leaf) > oom0

    def remove(self) -> None:
        for slot in range(max(1, self.cfg.workers or os.cpu_count() or 1)):
            for _ in range(50):
                try:
                    os.rmdir(self._leaf(slot))
                    break
                except FileNotFoundError:
                    break
                except OSError:  # still emptying
                    time.sleep(0.02)


def _write_file(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _oom_kills(leaf: str) -> int:
    for line in (_read(f"{leaf}/memory.events") or "").splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def _cgroup_v2_parent() -> str | None:
    """A cgroup v2 directory we may create leaves in, with the memory controller already enabled."""
    mounts = [ln.split() for ln in (_read("/proc/self/mounts") or "").splitlines()]
    mount = next((m[1] for m in mounts if len(m) > 2 and m[2] == "cgroup2"), None)
    rel = next((ln[3:] for ln in (_read("/proc/self/cgroup") or "").splitlines() if ln.startswith("0::")), None)
    if mount is None or rel is None:
        return None
    own = os.path.normpath(os.path.join(mount, rel.lstrip("/")))
    for cand in ((own,) if rel == "/" else (os.path.dirname(own),)):
        if not cand.startswith(mount):
            continue
        ctl = (_read(os.path.join(cand, "cgroup.subtree_control")) or "").split()
        if "memory" in ctl and os.access(cand, os.W_OK):
            return cand
    return None


def _user_processes() -> int:
    uid = os.getuid()
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                n += os.stat(f"/proc/{d}").st_uid == uid
            except OSError:
                pass
    return n
