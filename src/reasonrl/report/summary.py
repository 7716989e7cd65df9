"""The run summary: ``summary.json`` on disk and a terminal table.

``summary`` is a flat-ish dict of headline numbers (``pass@1_before``, ``pass@1_after``, ...). A
key ``<name>_ci`` holds the uncertainty of ``<name>``: a half-width (number) or a ``[low, high]``
interval; tables show it next to its value instead of as a separate row.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_summary", "print_summary_table", "to_jsonable", "summary_rows", "format_value"]


def to_jsonable(obj: Any) -> Any:
    """Convert to strict-JSON data: non-finite floats become ``None``, numpy/torch scalars become
    Python numbers, tuples lists, Paths strings.

    ``json.dump`` would otherwise write ``NaN``/``Infinity``, which most JSON readers reject.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return to_jsonable(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    tolist = getattr(obj, "tolist", None)  # small arrays / tensors
    if callable(tolist):
        return to_jsonable(tolist())
    return str(obj)


def write_summary(run_dir: Path, summary: dict, name: str = "summary.json") -> Path:
    """Atomically write ``run_dir/summary.json`` (temp file, fsync, rename).

    A reader (a dashboard, a sweep script) never sees a half-written file, and a crash leaves the
    previous summary intact.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / name
    text = json.dumps(to_jsonable(summary), indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def format_value(v: Any) -> str:
    """Short human form: 4 significant digits for floats, JSON for containers."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(to_jsonable(v))
    return str(v)


def _format_ci(ci: Any) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return f"[{format_value(ci[0])}, {format_value(ci[1])}]"
    if isinstance(ci, (int, float)) and not isinstance(ci, bool):
        return f"± {format_value(float(ci))}"
    return format_value(ci)


def summary_rows(summary: dict) -> list[tuple[str, str, str]]:
    """``(key, value, ci)`` display rows; ``<key>_ci`` entries fold into their base key's row.

    A ``_ci`` key whose base key is absent is shown as an ordinary row.
    """
    rows = []
    for key, value in summary.items():
        key = str(key)
        if key.endswith("_ci") and key[: -len("_ci")] in summary:
            continue
        ci = summary.get(f"{key}_ci")
        rows.append((key, format_value(value), "" if ci is None else _format_ci(ci)))
    return rows


def print_summary_table(summary: dict, title: str, console: Any = None) -> None:
    """Print ``summary`` as a rich table (value and CI columns) to ``console`` or stdout."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    rows = summary_rows(summary)
    has_ci = any(ci for _, _, ci in rows)
    if has_ci:
        table.add_column("CI", justify="right")
    for key, value, ci in rows:
        # rich parses [..] as markup; metric names and intervals are data, not styling.
        cells = [key, value, ci] if has_ci else [key, value]
        table.add_row(*(Text(c) for c in cells))
    (console or Console()).print(table)
