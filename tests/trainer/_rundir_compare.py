"""Compare two run directories file by file, apart from timings (issue 11 item 8).

What "apart from timings" means, per file:
- ``*.jsonl`` / ``*.json``: parsed and compared with timing keys removed (``time/*``, ``perf/*``,
  anything with ``seconds``, ``*_per_s``, ``peak_rss_mb``); ``COMMITTED`` also drops its commit
  ``time`` and the digest of ``trainer_state.pt`` (which holds ``rl_seconds``);
- ``trainer_state.pt``: loaded and compared value by value (tensors exactly) without ``rl_seconds``;
- ``tensorboard/``: the scalar series each run leaves, read the way TensorBoard reads a directory
  whose writer was restarted with ``purge_step`` (a ``SessionLog.START`` at step S drops events at
  steps >= S); event file names carry timestamps, so only the series are compared, timing tags out;
- ``report.html`` and ``plots/``: present in both (rendered from the files compared above);
- ``.lock``: present in both (it holds the last holder's PID);
- everything else (weights, tokenizer, config.yaml, ...): byte for byte.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

NAME_ONLY = ("report.html", "dashboard.html", ".lock")  # derived from the compared logs, or embedding timings


def _timing(key: str) -> bool:
    k = key.lower()
    return (k.startswith(("time/", "perf/")) or "/time/" in k or "/perf/" in k or "seconds" in k
            or k.endswith("_per_s") or k == "peak_rss_mb")


def strip_timings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if not _timing(str(k))}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj


def tb_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    events: list[tuple[str, int, float]] = []
    for f in sorted(tb_dir.glob("events.out.tfevents.*")):  # names start with the creation time
        for ev in EventFileLoader(str(f)).Load():
            if ev.HasField("session_log") and ev.session_log.status == SessionLog.START:
                events = [e for e in events if e[1] < ev.step]
            for v in ev.summary.value:
                if v.HasField("simple_value"):
                    val = v.simple_value
                elif v.HasField("tensor"):
                    import tensorboard.util.tensor_util as tu

                    val = float(tu.make_ndarray(v.tensor))
                else:
                    continue
                events.append((v.tag, ev.step, val))
    out: dict[str, list[tuple[int, float]]] = {}
    for tag, step, val in events:
        if not _timing(tag):
            out.setdefault(tag, []).append((step, val))
    return out


def _same_value(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and not p.relative_to(root).as_posix().startswith("tensorboard/")}


def run_dir_differences(ref: Path, got: Path) -> list[str]:
    """Every difference between two run directories apart from timings; empty if none."""
    import torch

    problems: list[str] = []
    fa, fb = _files(ref), _files(got)
    problems += [f"only in the reference: {x}" for x in sorted(fa - fb)]
    problems += [f"only in the run: {x}" for x in sorted(fb - fa)]
    for rel in sorted(fa & fb):
        a, b = ref / rel, got / rel
        name = a.name
        if name in NAME_ONLY or rel.startswith("plots/"):
            continue
        if name.endswith(".jsonl"):
            ra = [strip_timings(json.loads(x)) for x in a.read_text().splitlines()]
            rb = [strip_timings(json.loads(x)) for x in b.read_text().splitlines()]
            if ra != rb:
                diff = [i for i, (x, y) in enumerate(zip(ra, rb)) if x != y]
                problems.append(f"{rel}: {len(ra)} vs {len(rb)} rows, first differing rows {diff[:5]}"
                                + (f": {ra[diff[0]]} != {rb[diff[0]]}" if diff else ""))
        elif name == "COMMITTED":
            ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
            for j in (ja, jb):
                j.pop("time", None)
                j["files"].pop("trainer_state.pt", None)
            if ja != jb:
                problems.append(f"{rel}: {ja} != {jb}")
        elif name == "trainer_state.pt":
            sa = torch.load(a, weights_only=False)
            sb = torch.load(b, weights_only=False)
            sa.pop("rl_seconds", None), sb.pop("rl_seconds", None)
            bad = [k for k in sorted(set(sa) | set(sb)) if not _same_value(sa.get(k), sb.get(k))]
            if bad:
                problems.append(f"{rel}: differs in {bad}")
        elif name.endswith(".json") and not rel.startswith(("final/", "checkpoints/")):
            ja, jb = strip_timings(json.loads(a.read_text())), strip_timings(json.loads(b.read_text()))
            if ja != jb:
                keys = sorted(k for k in set(ja) | set(jb) if ja.get(k) != jb.get(k)) if isinstance(ja, dict) else []
                problems.append(f"{rel}: differs in {keys or 'content'}")
        elif a.read_bytes() != b.read_bytes():
            problems.append(f"{rel}: bytes differ")
    ta, tb = ref / "tensorboard", got / "tensorboard"
    if ta.is_dir() != tb.is_dir():
        problems.append("tensorboard/ present in only one run")
    elif ta.is_dir():
        sa, sb = tb_scalars(ta), tb_scalars(tb)
        for tag in sorted(set(sa) | set(sb)):
            if sa.get(tag) != sb.get(tag):
                problems.append(f"tensorboard {tag}: {sa.get(tag)} != {sb.get(tag)}")
    return problems
