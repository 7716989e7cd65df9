"""Where prompts come from: the built-in suite, reasoning-gym, or user files, all as ``Task`` records.

``load_tasks(source, n, split, ...)`` is the one entry point the trainer and CLI call.
"""

from __future__ import annotations

import functools
from pathlib import Path

from reasonrl.tasks.base import Task
from reasonrl.tasks.builtin import FAMILIES, MIX, generate
from reasonrl.tasks.files import TaskDataError, load_file

__all__ = ["Task", "load_tasks", "generate", "FAMILIES", "TaskDataError", "load_file", "SOURCE_FORMS"]

SOURCE_FORMS = ("builtin:arith", "builtin:countdown", "builtin:linear", "builtin:code", "builtin:knowledge", "builtin:mix",
                "reasoning_gym:<dataset>", "a path to a .jsonl/.parquet file or a datasets save_to_disk folder")


def _stamp(path: Path) -> tuple:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file())


@functools.lru_cache(maxsize=4)
def _cached_file(path: Path, stamp: tuple) -> tuple[Task, ...]:
    # A trainer asks for the next batch every step; re-parsing the file each time would dominate.
    return tuple(load_file(path))


def _file_tasks(path: Path, n: int | None, split: str, start: int) -> list[Task]:
    path = path.resolve()
    rows = list(_cached_file(path, _stamp(path)))
    splits = {t.meta["split"] for t in rows if "split" in t.meta}
    if splits:
        rows = [t for t in rows if t.meta.get("split") == split]
        if not rows:
            raise TaskDataError(f"{path}: no rows with split == {split!r} (splits found: "
                                f"{', '.join(sorted(map(str, splits)))})")
    k = start % len(rows)
    if not n:
        return rows[k:] + rows[:k]
    return [rows[(k + i) % len(rows)] for i in range(n)]


def load_tasks(source: str, n: int | None, split: str, seed: int = 0, difficulty: int | None = None,
               start: int = 0) -> list[Task]:
    """``n`` tasks from ``source`` (see ``SOURCE_FORMS``), starting at stream position ``start``.

    Built-in and reasoning-gym sources are infinite seeded streams, so ``n`` is required. For files,
    ``seed`` and ``difficulty`` are ignored, ``split`` filters only when rows carry a split (a
    ``split`` column or a DatasetDict), ``n`` None/0 means every row, and ``start`` rotates through
    the rows cyclically so an RL data cursor can run past the end of a small file.
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty string; valid forms: {'; '.join(SOURCE_FORMS)}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    kind, _, name = source.partition(":")
    if kind in ("builtin", "reasoning_gym"):
        if not n:
            raise ValueError(f"{source} is an infinite stream; pass n > 0")
        if kind == "builtin":
            if name not in FAMILIES and name != MIX:
                raise ValueError(f"unknown built-in family in {source!r}; valid: "
                                 f"{', '.join('builtin:' + f for f in [*FAMILIES, MIX])}")
            return generate(name, n, split=split, seed=seed, difficulty=difficulty, start=start)
        from reasonrl.tasks.reasoning_gym_source import load_reasoning_gym

        if difficulty is not None:
            raise ValueError("difficulty applies to built-in families only; configure reasoning-gym "
                             "datasets through load_reasoning_gym(config=...)")
        return load_reasoning_gym(name, n, seed, split, start=start)
    path = Path(source).expanduser()
    if path.exists():
        return _file_tasks(path, n, split, start)
    raise ValueError(f"unknown task source {source!r} (not a built-in or reasoning_gym source, and no "
                     f"such file); valid forms: {'; '.join(SOURCE_FORMS)}")
