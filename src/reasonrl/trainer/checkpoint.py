"""Crash-safe checkpoints: write to a temp dir, fsync, rename, commit marker last, rotate after.

Why this shape (reliability spec §3): the commit marker written after everything is durable is
what keeps a SIGKILL mid-save from producing a checkpoint that auto-resume picks up and then fails
to load (or loads torn); rotating only *after* the commit means a crash never leaves fewer good
checkpoints than before the save began. A directory named ``step_N`` is a checkpoint only if it
holds ``COMMITTED``; everything else in the root is debris from a crash and is removed.

Layout of ``ckpt_root``::

    step_40/  step_45/            committed: each holds COMMITTED (JSON: step, time, sha256 per file)
    .tmp_step_50_<pid>/           a save in progress, or an orphan from a crash
    .trash_step_35_<pid>/         a checkpoint being deleted

One writer per ``ckpt_root`` (rank 0): temp names carry the pid, but orphan cleanup assumes no
other live process is saving into the same root.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

MARKER = "COMMITTED"
STATE_FILE = "trainer_state.pt"
_FORMAT = 1
_STEP_RE = re.compile(r"^step_(\d+)$")
_TMP_PREFIX = ".tmp_step_"
_TRASH_PREFIX = ".trash_"
_CHUNK = 1 << 20

Writer = Callable[[Path], None]
"""Writes one file or one directory at exactly the path it is given (which does not exist yet)."""


class ResumeError(RuntimeError):
    """A resume was asked for (or committed progress exists) but no valid checkpoint can be used."""


class CheckpointWriteError(OSError):
    """A save failed for a reason the user fixes (a full disk); the message says which and how."""


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is ENOSPC. torch.save to a path reports a short write
    only as ``RuntimeError: ... unexpected pos N vs M``, so that message counts too."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "Disk quota exceeded" in text or "unexpected pos" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def raise_if_disk_full(exc: BaseException, what: str, where: Path) -> None:
    """Re-raise a disk-full failure of writing ``what`` under ``where`` as one clear error."""
    if not _disk_full(exc):
        return
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:.0f} MiB free now"
    except OSError:
        free = "free space unknown"
    raise CheckpointWriteError(
        errno.ENOSPC, f"No space left on device while writing {what} under {where} ({free}). Free disk space, "
        "lower trainer.keep_last, or move run.out_dir to a larger disk; then continue with `--resume` "
        "(the last committed checkpoint is intact)") from exc


def hf_writer(model: Any, tokenizer: Any | None = None) -> Writer:
    """Writer for a Hugging Face model (safetensors) and its tokenizer in one directory.

    One directory for both so that ``from_pretrained(step_N/<name>)`` works for either.
    """

    def write(path: Path) -> None:
        model.save_pretrained(path, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)

    return write


def save_checkpoint(
    ckpt_root: str | os.PathLike,
    step: int,
    files: Mapping[str, Writer] | None = None,
    state: dict[str, Any] | None = None,
    keep_last: int | None = 3,
) -> Path:
    """Atomically write checkpoint ``ckpt_root/step_<step>`` and return its path.

    ``files`` maps a name relative to the checkpoint (``"model"``, ``"pad.bin"``) to a writer that
    creates that file or directory, e.g. ``{"model": hf_writer(model, tokenizer)}``. ``state`` is
    saved with ``torch.save`` as ``trainer_state.pt``: optimizer, scheduler, ``capture_rng()``,
    data cursor, step counters and any algorithm state (KL controller, buffers), so that all of it
    commits together with the weights.

    Order: writers into ``.tmp_step_N_<pid>`` → fsync every file and directory (hashing each file
    on the same read) → ``os.replace`` to ``step_N`` (a leftover ``step_N`` is moved aside first) →
    fsync root → ``COMMITTED`` via temp + fsync + rename → fsync → rotate. ``keep_last`` committed
    checkpoints survive rotation (``None`` keeps all); committed checkpoints *newer* than ``step``
    are deleted too, because they belong to an abandoned timeline and the next auto-resume would
    otherwise jump onto it.
    """
    root = Path(ckpt_root)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
    files = dict(files or {})
    reserved = {MARKER, "." + MARKER + ".tmp"} | ({STATE_FILE} if state is not None else set())
    for name in files:
        p = Path(name)
        if p.is_absolute() or ".." in p.parts or not p.parts or p.as_posix() in reserved:
            raise ValueError(f"invalid checkpoint entry name {name!r}")
    if not root.is_dir():
        root.mkdir(parents=True)
        _fsync_dir(root.parent)  # so the root itself survives a power loss after the first commit

    tmp = root / f"{_TMP_PREFIX}{step}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, writer in files.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            writer(target)
            if not target.exists():
                raise ValueError(f"writer for {name!r} created nothing at {target}")
        if state is not None:
            with open(tmp / STATE_FILE, "wb") as f:  # a file object: a full disk raises OSError(ENOSPC)
                torch.save(state, f)
        digests = _fsync_and_hash_tree(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_if_disk_full(e, f"checkpoint step_{step}", root)
        raise

    final = root / f"step_{step}"
    if final.exists() or final.is_symlink():
        # An uncommitted leftover of an earlier crash, or a step re-saved after resuming from an
        # older checkpoint. A non-empty directory cannot be replaced by rename, so move it aside.
        _discard(final)
    os.replace(tmp, final)
    _fsync_dir(root)

    marker = {"format": _FORMAT, "step": step, "time": time.time(), "files": digests}
    marker_tmp = final / ("." + MARKER + ".tmp")
    with open(marker_tmp, "w", encoding="utf-8") as f:
        json.dump(marker, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(marker_tmp, final / MARKER)
    _fsync_dir(final)

    rotate_checkpoints(root, keep_last, current_step=step)
    return final


def load_trainer_state(ckpt_dir: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load ``trainer_state.pt`` from a checkpoint directory.

    ``weights_only=False`` because the state holds arbitrary algorithm objects (controllers,
    buffers) that the restricted unpickler rejects. That unpickler is the only guard against code
    in a pickle, so load only checkpoints this framework wrote. ``map_location="cpu"`` is safe
    for optimizers: ``Optimizer.load_state_dict`` moves state to each parameter's device.
    """
    return torch.load(Path(ckpt_dir) / STATE_FILE, map_location=map_location, weights_only=False)


def latest_committed(ckpt_root: str | os.PathLike, verify: bool = True) -> Path | None:
    """Highest ``step_N`` whose ``COMMITTED`` marker exists and whose files check out, or ``None``.

    File sizes are always checked (a stat per file). ``verify=True`` also re-hashes every file:
    it reads the whole checkpoint (about 1 s per GB), which is worth it once at resume time and
    catches a checkpoint that was corrupted or truncated after its commit.
    """
    return _scan(Path(ckpt_root), verify).newest_valid


def find_resume_point(ckpt_root: str | os.PathLike, required: bool, verify: bool = True) -> Path | None:
    """The checkpoint to resume from; ``None`` only when starting fresh is the honest answer.

    ``required=False`` (auto-resume) returns ``None`` when nothing was ever committed: crash debris
    from a first save is not progress. It still raises when committed checkpoints exist but none
    verifies, because restarting would silently throw that progress away. ``required=True`` raises
    :class:`ResumeError` whenever there is no valid checkpoint, naming what was found and the fix.
    """
    root = Path(ckpt_root)
    scan = _scan(root, verify)
    if scan.newest_valid is not None:
        skipped = [(p, why) for p, why in scan.corrupt if _step_of(p) > _step_of(scan.newest_valid)]
        if skipped:
            log.warning("resuming from %s; skipped newer corrupt checkpoint(s): %s", scan.newest_valid,
                        ", ".join(f"{p.name} ({why})" for p, why in skipped))
        return scan.newest_valid
    if scan.corrupt:
        raise ResumeError(
            f"no usable checkpoint in {root}: {scan.summary()}; "
            + "; ".join(f"{p.name}: {why}" for p, why in scan.corrupt)
            + ". Fix: restore an intact step_N directory from a backup, or move this directory "
            "away and start a fresh run."
        )
    if required:
        where = f"{root} does not exist" if not root.exists() else f"in {root}: {scan.summary()}"
        raise ResumeError(
            f"resume was required but there is no committed checkpoint ({where}). Uncommitted and "
            "temporary directories are saves that a crash interrupted, never resumable. Fix: check "
            "the checkpoint directory path, or start a fresh run without requiring resume."
        )
    return None


def cleanup_orphans(ckpt_root: str | os.PathLike) -> list[Path]:
    """Remove temp dirs, half-deleted dirs and ``step_N`` dirs without a marker; return them.

    Only names this module creates are touched; other files in the root are left alone. Call it
    at start-up too: a run killed after its final save never reaches another rotation.
    """
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    removed = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name.startswith(_TMP_PREFIX) or name.startswith(_TRASH_PREFIX):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        elif _STEP_RE.match(name) and entry.is_dir() and not (entry / MARKER).is_file():
            _discard(entry)
            removed.append(entry)
    return removed


def rotate_checkpoints(ckpt_root: str | os.PathLike, keep_last: int | None, current_step: int | None = None) -> list[Path]:
    """Keep the ``keep_last`` newest committed checkpoints (ending at ``current_step`` if given),
    delete the rest and all orphans; return what was removed.

    Deletion renames a directory aside before removing it, so a crash mid-delete never leaves a
    half-deleted ``step_N`` that still carries its marker.
    """
    root = Path(ckpt_root)
    committed = sorted((s, p) for p in _step_dirs(root) if (p / MARKER).is_file() for s in [_step_of(p)])
    doomed = []
    if current_step is not None:
        doomed += [p for s, p in committed if s > current_step]
        committed = [(s, p) for s, p in committed if s <= current_step]
    if keep_last is not None and len(committed) > keep_last:
        doomed += [p for _, p in committed[: len(committed) - keep_last]]
    for p in doomed:
        _discard(p)
    return doomed + cleanup_orphans(root)


# ----------------------------------------------------------------------------- internals


@dataclass
class _Scan:
    valid: list[Path] = field(default_factory=list)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)
    uncommitted: list[Path] = field(default_factory=list)
    tmp: list[Path] = field(default_factory=list)

    @property
    def newest_valid(self) -> Path | None:
        return max(self.valid, key=_step_of, default=None)

    def summary(self) -> str:
        return (
            f"{len(self.valid)} committed, {len(self.corrupt)} committed but failing verification, "
            f"{len(self.uncommitted)} uncommitted step dir(s), {len(self.tmp)} temporary dir(s)"
        )


def _scan(root: Path, verify: bool) -> _Scan:
    scan = _Scan()
    if not root.is_dir():
        return scan
    for entry in root.iterdir():
        if entry.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
            scan.tmp.append(entry)
    for p in _step_dirs(root):
        if not (p / MARKER).is_file():
            scan.uncommitted.append(p)
            continue
        problem = _check(p, verify)
        if problem is None:
            scan.valid.append(p)
        else:
            scan.corrupt.append((p, problem))
    return scan


def _check(ckpt: Path, verify: bool) -> str | None:
    """Why ``ckpt`` (which has a marker) is unusable, or ``None`` if it is fine."""
    try:
        marker = json.loads((ckpt / MARKER).read_text(encoding="utf-8"))
        listed = marker["files"]
        if marker.get("format") != _FORMAT or marker.get("step") != _step_of(ckpt):
            return f"marker format/step mismatch ({marker.get('format')!r}, step {marker.get('step')!r})"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable marker ({e.__class__.__name__}: {e})"
    for rel, meta in listed.items():
        path = ckpt / rel
        try:
            size = path.stat().st_size
        except OSError:
            return f"missing {rel}"
        if size != meta["bytes"]:
            return f"{rel} has {size} bytes, marker says {meta['bytes']}"
        if verify and _sha256(path) != meta["sha256"]:
            return f"sha256 mismatch for {rel}"
    return None


def _step_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if _STEP_RE.match(p.name) and p.is_dir() and not p.is_symlink()]


def _step_of(p: Path) -> int:
    return int(_STEP_RE.match(p.name).group(1))  # type: ignore[union-attr]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_and_hash_tree(top: Path) -> dict[str, dict[str, Any]]:
    """fsync every file (hashing it on the same read) and every directory, bottom-up."""
    digests: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        d = Path(dirpath)
        for name in dirnames + filenames:
            if (d / name).is_symlink():
                raise ValueError(f"checkpoint must not contain symlinks: {d / name}")
        for name in filenames:
            path = d / name
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                os.fsync(f.fileno())
            digests[path.relative_to(top).as_posix()] = {"sha256": h.hexdigest(), "bytes": path.stat().st_size}
        _fsync_dir(d)
    return digests


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(p: Path) -> None:
    """Rename ``p`` to a trash name (atomic), then delete it; leftovers are orphans."""
    trash = p.with_name(f"{_TRASH_PREFIX}{p.name}_{os.getpid()}_{time.monotonic_ns()}")
    os.replace(p, trash)
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- grader counters


def counters_state(trainer: Any) -> dict[str, Any]:
    """The run's cumulative counters that live outside the optimizer: math-verify and sandbox
    tallies (``reward/math_*``, ``reward/code_*`` metrics) with the verdict cache that decides
    which tally a repeat lands in, and the ungradable-group totals, so a resumed run continues
    them instead of restarting at 0. ``math_worker_starts`` still counts the resumed process's own
    worker start: that start really happened."""
    scorer = getattr(trainer, "scorer", None)
    # the math verifier object is cheap (its worker starts on first use) and shared: materialise it
    # so that counts a later first use adds are never mistaken for "none yet"
    ver = scorer.verifier if hasattr(scorer, "_verifier") and hasattr(scorer, "verifier") else None
    exe = getattr(scorer, "_executor", None)
    cache = None
    if ver is not None and hasattr(ver, "_cache"):
        with ver._state_lock:  # verdict cache: whether a repeat is counted "cached" or as a worker call
            cache = [(k, v.value) for k, v in ver._cache.items()]
    return {"math": dict(ver.counts) if ver is not None else None, "math_cache": cache,
            "code": dict(exe.counts) if exe is not None else None,
            "invalid_groups": [getattr(trainer, "invalid_groups_total", 0), getattr(trainer, "groups_total", 0)]}


def reset_counters(trainer: Any) -> None:
    """Zero :func:`counters_state` (grader tallies and verdict cache included) for a new run."""
    st = counters_state(trainer)
    load_counters_state(trainer, {
        "math": dict.fromkeys(st["math"], 0) if st["math"] is not None else None,
        "math_cache": [] if st["math_cache"] is not None else None,
        "code": dict.fromkeys(st["code"], 0) if st["code"] is not None else None,
        "invalid_groups": [0, 0]})


def load_counters_state(trainer: Any, st: dict[str, Any] | None) -> None:
    """Restore :func:`counters_state` (a checkpoint without it leaves the counters as they are)."""
    if not st:
        return
    trainer.invalid_groups_total, trainer.groups_total = st["invalid_groups"]
    scorer = getattr(trainer, "scorer", None)
    if st.get("math") is not None and hasattr(scorer, "verifier"):
        ver = scorer.verifier  # the shared verifier object; its worker starts on first use only
        with ver._state_lock:
            ver._counts.update(st["math"])
            if st.get("math_cache") is not None and hasattr(ver, "_cache"):
                from reasonrl.rewards.math_verify_worker import Verdict

                ver._cache.clear()
                ver._cache.update((tuple(k), Verdict(v)) for k, v in st["math_cache"])
    exe = getattr(scorer, "_executor", None)
    if st.get("code") is not None and hasattr(scorer, "executor"):
        scorer.executor.counts.update(st["code"])
    elif exe is not None:  # the sandbox started after the state was taken: its counts are not the run's
        exe.counts.update(dict.fromkeys(exe.counts, 0))
