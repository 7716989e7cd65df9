"""Kill -9 chaos driver (reliability spec §3.3): launch, SIGKILL at a random moment, relaunch with
resume, until the trainer exits 0. Reusable against any trainer command line.

SIGKILL rather than SIGTERM because a crash or an OOM kill runs no handlers and no ``finally``.
The whole process group is killed, so helper processes (rollout workers, sandboxes) die with the
trainer as they would in a machine failure.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path


class ChaosError(AssertionError):
    """The trainer crashed by itself (a resume bug) or never finished within the attempt cap."""


def chaos_run(
    cmd: list[str],
    resume_cmd: list[str],
    seed: int,
    min_s: float = 0.2,
    max_s: float = 1.5,
    max_attempts: int = 30,
    *,
    max_kills: int | None = None,
    ready_marker: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
    attempt_timeout_s: float = 300.0,
) -> int:
    """Run ``cmd``, then ``resume_cmd`` after every kill; return the number of launches.

    Kill delays are drawn from ``random.Random(seed)`` uniformly in ``[min_s, max_s]``. With
    ``ready_marker`` the delay is counted from the moment that string appears in the trainer's
    output: importing torch and building the first optimizer (which imports ``torch._dynamo``)
    take about 4 s here, and kills that all land during start-up would never reach a save. Print
    the marker *before* loading the checkpoint so kills can still land mid-resume. The clock also
    covers interpreter shutdown, which after ``torch._dynamo`` takes 1-4 s: a trainer that exits
    slowly gets killed after finishing, again and again. Output of attempt ``i`` goes to ``log_dir/attempt_<i>.log``.
    ``max_kills`` bounds the chaos: after that many kills the next launch may run to completion
    (within ``attempt_timeout_s``), which makes a negative control cost exactly two launches.

    Raises :class:`ChaosError` if an attempt exits non-zero without being killed (its log tail is
    in the message) or if ``max_attempts`` launches do not finish the run.
    """
    rng = random.Random(seed)
    logs = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="chaos_"))
    logs.mkdir(parents=True, exist_ok=True)
    kills = 0
    for attempt in range(1, max_attempts + 1):
        delay = rng.uniform(min_s, max_s)
        spare = max_kills is not None and kills >= max_kills  # this launch is allowed to finish
        if spare:
            delay = attempt_timeout_s
        log_path = logs / f"attempt_{attempt}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                cmd if attempt == 1 else resume_cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        try:
            start = _wait_ready(proc, log_path, ready_marker, attempt_timeout_s)
            if start is not None:
                remaining = delay - (time.monotonic() - start)
                try:
                    proc.wait(timeout=max(remaining, 0.0))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    if spare:
                        raise ChaosError(f"attempt {attempt} ran past {attempt_timeout_s} s; log tail:\n{_tail(log_path)}")
                    kills += 1
                    continue
        except BaseException:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
        if proc.returncode == 0:
            return attempt
        raise ChaosError(
            f"attempt {attempt} exited with {proc.returncode} without being killed "
            f"(cmd: {' '.join(proc.args)}); log tail:\n{_tail(log_path)}"
        )
    raise ChaosError(f"trainer did not finish within {max_attempts} launches (logs in {logs})")


def _wait_ready(proc: subprocess.Popen, log_path: Path, marker: str | None, timeout_s: float) -> float | None:
    """Monotonic time the kill clock starts; ``None`` if the process exited first."""
    if marker is None:
        return time.monotonic()
    needle = marker.encode()
    deadline = time.monotonic() + timeout_s
    seen = b""
    with open(log_path, "rb") as f:
        while True:
            seen = seen[-len(needle) :] + f.read()  # keep a tail so a marker split across reads counts
            if needle in seen:
                return time.monotonic()
            if proc.poll() is not None:
                return None
            if time.monotonic() > deadline:
                raise ChaosError(f"no {marker!r} in the output within {timeout_s} s; log tail:\n{_tail(log_path)}")
            time.sleep(0.005)


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_bytes()[-n:].decode(errors="replace")
