"""The run directory's life: one trainer at a time, never destroyed unasked, no debris left behind.

Why: a fresh run started into an old run's directory used to delete its checkpoints, truncate its
metrics and reuse its step-0 evaluation; two trainers on one directory interleaved ``metrics.jsonl``
and deleted each other's saves; killed saves left temp directories forever. :class:`RunDir` is
opened for the whole run (``with RunDir(...)``) and does, in this order, before anything is written:

1. refuse ``--resume`` into a directory that does not exist (nothing is created);
2. take an exclusive ``fcntl.flock`` on ``<run_dir>/.lock`` (held until close; a second trainer is
   refused at once with the holder's PID);
3. remove crash debris: checkpoint temp/trash dirs, ``.final.tmp-*`` (a ``.final.old-*`` is put
   back when ``final/`` is missing: it is then the only copy), temp files of atomic writes;
4. a fresh run into a directory that holds a run is refused unless ``overwrite``, which deletes it.

It also keeps the step-0 ("before") evaluation with the settings it was computed under, so a
resume reuses it only on an exact match and a resumed run keeps the paired before/after test.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LOCK = ".lock"
EVAL_BEFORE = "eval_before.json"
_TRASH = ".overwritten-"
# temp names of the atomic writers that write into a run directory (save_policy, write_summary,
# RunLogger.truncate_after, write_config): a kill between write and rename leaves one of these
_TEMP_GLOBS = (".final.tmp-*", "*.jsonl.tmp", ".*.tmp", _TRASH + "*")

_held_fds: set[int] = set()


def _close_in_child() -> None:
    # a forked helper (multiprocessing with fork) shares the lock's open file description; dropping
    # its copy keeps the lock's lifetime that of the trainer, not of a straggling child
    for fd in list(_held_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _held_fds.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked; the message names the cause and the fix."""


@dataclass
class BeforeEval:
    metrics: dict[str, float]
    correct: list[bool]


class RunDir:
    """Open with ``with RunDir(path, resume=..., overwrite=...) as rd:``; see the module docstring."""

    def __init__(self, path: str | os.PathLike, *, resume: bool | str = False, overwrite: bool = False):
        self.path = Path(path)
        self.resume = resume
        self.overwrite = overwrite
        self._fd: int | None = None
        self.removed: list[Path] = []

    # ------------------------------------------------------------------ open / close
    def __enter__(self) -> "RunDir":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if self.resume and self.overwrite:
            raise RunDirError(f"trainer.resume={self.resume} and --overwrite contradict each other: resume "
                              f"continues the run in {self.path}, overwrite deletes it; pass one of them")
        if self.resume is True and not (self.path / "checkpoints").is_dir():
            raise RunDirError(
                f"--resume: {self.path} holds no run with checkpoints ("
                + ("the directory does not exist" if not self.path.exists() else "no checkpoints/ in it")
                + "). Check run.out_dir and run.name, or start a fresh run without --resume "
                "(checkpoints are written only with trainer.save_every > 0)")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self.removed = cleanup_debris(self.path)
            if not self.resume:
                old = run_contents(self.path)
                if old and not self.overwrite:
                    shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in old[:5])
                    raise RunDirError(
                        f"run directory {self.path} already holds a run ({shown}{', ...' if len(old) > 5 else ''}); "
                        "a fresh run would destroy it. Continue it with `--resume` (or trainer.resume=auto), "
                        "replace it with `--overwrite` (trainer.overwrite=true; deletes it), or choose another "
                        "run.name / run.out_dir")
                if old:
                    _delete_contents(self.path, old)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._fd is not None:
            _held_fds.discard(self._fd)
            os.close(self._fd)  # releases the flock
            self._fd = None

    def _lock(self) -> None:
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = _read_pid(fd)
            os.close(fd)
            raise RunDirError(
                f"run directory {self.path} is in use by another trainer (PID {holder or 'unknown'}); two "
                "trainers would interleave its logs and delete each other's checkpoints. Wait for it to "
                "finish (or stop it), or choose another run.name / run.out_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        _held_fds.add(fd)

    # ------------------------------------------------------------------ files of the run
    def write_config(self, cfg: Any) -> None:
        """``config.yaml``: the run's resolved config, atomically. ``trainer.resume`` and
        ``trainer.overwrite`` say how this launch treats the directory, not what the run is, so
        they are written as their defaults: every launch of one run writes the same file."""
        import yaml

        from reasonrl.report.summary import atomic_write_text

        data = cfg.model_dump(mode="json")
        data["trainer"].update(resume=False, overwrite=False)
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(data, sort_keys=False))

    def load_eval_before(self, key: dict[str, Any]) -> BeforeEval | None:
        """The stored step-0 evaluation if it was computed under exactly ``key``, else ``None``."""
        p = self.path / EVAL_BEFORE
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("key") != json.loads(json.dumps(key)):
            return None
        return BeforeEval(metrics=data["metrics"], correct=[bool(x) for x in data["correct"]])

    def save_eval_before(self, key: dict[str, Any], metrics: dict[str, float], correct: list[bool]) -> BeforeEval:
        from reasonrl.report.summary import atomic_write_text, to_jsonable

        data = {"key": key, "metrics": to_jsonable(metrics), "correct": [bool(x) for x in correct]}
        atomic_write_text(self.path / EVAL_BEFORE, json.dumps(data, indent=1) + "\n")
        return BeforeEval(metrics=dict(metrics), correct=list(correct))


@contextlib.contextmanager
def open_run_dir(trainer: Any):
    """The trainer's run directory for the duration of ``Trainer.run``: the one its caller already
    opened (``trainer.rundir``, e.g. the CLI, which holds the lock until the report is written too),
    or a new one from ``trainer.cfg`` (closed on exit)."""
    rd = getattr(trainer, "rundir", None)
    if isinstance(rd, RunDir) and rd._fd is not None:
        yield rd
        return
    c = trainer.cfg.trainer
    with RunDir(trainer.run_dir, resume=c.resume, overwrite=c.overwrite) as rd:
        yield rd


def eval_key(cfg: Any, tasks: list) -> dict[str, Any]:
    """Everything the step-0 evaluation depends on: the model, the held-out problems themselves
    (hashed), the evaluation and grading settings. Equal keys mean the same evaluation."""
    from reasonrl.eval.runner import settings_from_config

    h = hashlib.sha256()
    for t in tasks:
        h.update(json.dumps([t.uid, t.prompt, t.answer, t.verifier], default=str).encode())
        h.update(b"\0")
    st = asdict(settings_from_config(cfg))
    return json.loads(json.dumps({
        "model": cfg.model.model_dump(mode="json"), "engine": cfg.rollout.engine, "eval": st,
        "reward": cfg.reward.model_dump(mode="json"), "tasks": {"n": len(tasks), "sha256": h.hexdigest()},
    }, default=str))


def run_contents(path: Path) -> list[Path]:
    """What in ``path`` belongs to a run (everything but the lock file), sorted."""
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.name != LOCK)


def cleanup_debris(run_dir: Path) -> list[Path]:
    """Remove what killed writers leave in a run directory; return what was removed (or restored).

    Checkpoint temp and trash dirs (``checkpoint.cleanup_orphans``), ``.final.tmp-*`` and temp files
    of atomic writes. A ``.final.old-*`` (a kill between moving the old ``final/`` aside and renaming
    the new one in) becomes ``final/`` again when there is none, and is removed otherwise."""
    from reasonrl.trainer.checkpoint import cleanup_orphans

    run_dir = Path(run_dir)
    removed = cleanup_orphans(run_dir / "checkpoints")
    for pattern in _TEMP_GLOBS:
        for p in sorted(run_dir.glob(pattern)):
            _remove(p)
            removed.append(p)
    for p in sorted(run_dir.glob(".final.old-*")):
        if not (run_dir / "final").exists():
            os.replace(p, run_dir / "final")
        else:
            _remove(p)
        removed.append(p)
    return removed


def _delete_contents(run_dir: Path, entries: list[Path]) -> None:
    """Move ``entries`` into one trash dir (renames: a kill leaves either the old run or trash that
    the next start removes), then delete it."""
    trash = run_dir / f"{_TRASH}{os.getpid()}-{time.monotonic_ns()}"
    trash.mkdir()
    for p in entries:
        os.replace(p, trash / p.name)
    shutil.rmtree(trash, ignore_errors=True)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _read_pid(fd: int) -> int | None:
    for _ in range(20):  # the holder writes its PID right after locking; wait out that instant
        raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if raw.isdigit():
            return int(raw)
        time.sleep(0.01)
    return None
