"""What produced a number: interpreter and library versions, threads, CPU, load, git commit.

Shared by the benchmarks' result writer (:mod:`reasonrl.bench.results`) and any command that saves
measurements; standard library only (torch is asked for its thread count only if already imported).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["environment", "git_commit", "cpu_model", "loadavg", "write_atomic"]


def loadavg() -> list[float]:
    """1/5/15-minute load averages (empty where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(where: Path | None = None) -> str | None:
    """HEAD of the checkout holding this source (``+dirty`` when tracked files differ); None outside git."""
    cwd = where or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Versions, thread settings, CPU and commit of this process (cheap: no torch import)."""
    torch = sys.modules.get("torch")
    return {
        "python": platform.python_version(), "torch": _version("torch"), "transformers": _version("transformers"),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "REASONRL_THREADS")},
        "platform": platform.platform(), "cpu_model": cpu_model(), "cpus": os.cpu_count(), "git_commit": git_commit(),
    }


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so a reader (or a run stopped
    half-way) never sees a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
