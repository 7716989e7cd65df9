"""PNG plots of a run's ``metrics.jsonl``.

Uses ``matplotlib.figure.Figure`` directly (rendered by Agg through ``savefig``) instead of
``pyplot``: no global backend switch, no figure registry to leak, safe to call from a trainer
thread or a headless machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["plot_run", "read_metrics", "ema", "PLOT_NAMES"]


@dataclass(frozen=True)
class _LinePlot:
    name: str  # file stem
    title: str
    ylabel: str
    keys: tuple[str, ...]  # curves: raw + EMA each
    points: tuple[str, ...] = ()  # sparse series (eval steps): markers only
    point_prefixes: tuple[str, ...] = ()  # extra sparse series, matched by key prefix


_LINE_PLOTS: tuple[_LinePlot, ...] = (
    _LinePlot(
        "reward",
        "Reward and accuracy",
        "value",
        ("reward/mean", "reward/accuracy"),
        points=("eval/pass@1",),
        point_prefixes=("eval/pass@", "eval/maj@"),
    ),
    _LinePlot("length", "Response length", "tokens", ("response/length_mean",)),
    _LinePlot("entropy", "Policy entropy", "nats / token", ("actor/entropy",)),
    _LinePlot("kl", "KL to reference", "KL", ("actor/kl",)),
    _LinePlot(
        "health", "Clip fraction and zero-variance groups", "fraction",
        ("actor/clipfrac", "batch/zero_var_frac"),
    ),
    _LinePlot("throughput", "Throughput", "tokens / s", ("perf/tokens_per_s",)),
)
_TIME_KEYS: tuple[tuple[str, str], ...] = (
    ("time/gen_s", "generation"),
    ("time/reward_s", "reward"),
    ("time/train_s", "train"),
)

#: File stems in report order; ``html.write_report`` lays plots out in this order.
PLOT_NAMES: tuple[str, ...] = tuple(p.name for p in _LINE_PLOTS) + ("time",)


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a jsonl log, skipping blank and unparseable lines.

    A run killed mid-write leaves a truncated last line; readers should still get the rest.
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                yield row


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All rows of ``metrics.jsonl`` (see ``iter_jsonl``)."""
    return list(iter_jsonl(path))


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) for ``key``, dropping rows where it is absent or non-finite."""
    xs: list[float] = []
    ys: list[float] = []
    for i, row in enumerate(rows):
        y = _finite(row.get(key))
        if y is None:
            continue
        x = _finite(row.get("step"))
        xs.append(float(i) if x is None else x)
        ys.append(y)
    return xs, ys


def ema(values: Iterable[float], smoothing: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing slider).

    The correction divides by 1 - smoothing^t so early points are not dragged towards zero or
    towards the first value, which matters for short runs.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    out: list[float] = []
    acc = 0.0
    weight = 1.0
    for v in values:
        acc = smoothing * acc + (1.0 - smoothing) * v
        weight *= smoothing
        out.append(acc / (1.0 - weight))
    return out


def _new_axes(title: str, ylabel: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _plot_lines(spec: _LinePlot, rows: list[dict[str, Any]], out_dir: Path,
                smoothing: float) -> Path | None:
    curves = [(k, *_series(rows, k)) for k in spec.keys]
    curves = [c for c in curves if c[1]]
    point_keys = list(spec.points)
    if spec.point_prefixes:
        seen = {k for row in rows for k in row}
        point_keys += sorted(k for k in seen if k.startswith(spec.point_prefixes)
                             and "_ci_" not in k and k not in point_keys)  # interval bounds are not series
    points = [(k, *_series(rows, k)) for k in point_keys]
    points = [p for p in points if p[1]]
    if not curves and not points:
        return None
    fig, ax = _new_axes(spec.title, spec.ylabel)
    for i, (key, xs, ys) in enumerate(curves):
        color = f"C{i}"
        ax.plot(xs, ys, color=color, alpha=0.3, linewidth=1)
        ax.plot(xs, ema(ys, smoothing), color=color, linewidth=2, label=f"{key} (EMA)")
    for j, (key, xs, ys) in enumerate(points, start=len(curves)):
        ax.plot(xs, ys, color=f"C{j}", marker="o", linestyle="--", linewidth=1, label=key)
    ax.legend(loc="best", fontsize="small")
    return _save(fig, out_dir / f"{spec.name}.png")


def _plot_time(rows: list[dict[str, Any]], out_dir: Path) -> Path | None:
    """Stacked areas of wall time per phase per step: shows where a step's time goes.

    Areas rather than bars so a run of thousands of steps stays cheap to draw and readable.
    """
    present = [(k, label) for k, label in _TIME_KEYS if _series(rows, k)[1]]
    if not present:
        return None
    steps = []
    for i, row in enumerate(rows):
        if any(_finite(row.get(k)) is not None for k, _ in present):
            s = _finite(row.get("step"))
            steps.append((float(i) if s is None else s, row))
    fig, ax = _new_axes("Time per step", "seconds")
    xs = [s for s, _ in steps]
    ys = [[_finite(row.get(k)) or 0.0 for _, row in steps] for k, _ in present]
    ax.stackplot(xs, *ys, labels=[label for _, label in present],
                 colors=[f"C{i}" for i in range(len(present))], alpha=0.8, step="mid")
    ax.set_ylim(bottom=0)
    ax.legend(loc="best", fontsize="small")
    return _save(fig, out_dir / "time.png")


def plot_run(metrics_jsonl: Path, out_dir: Path, smoothing: float = 0.9) -> list[Path]:
    """Write one PNG per metric group present in ``metrics_jsonl`` to ``out_dir``.

    Groups: reward/accuracy (with eval pass@k points), response length, entropy, KL, clip and
    zero-variance fractions, throughput, and the gen/reward/train time split. A group whose keys
    never appear is skipped, so older runs or algorithms without a KL term still get a report.
    Returns the written paths in ``PLOT_NAMES`` order.
    """
    metrics_jsonl, out_dir = Path(metrics_jsonl), Path(out_dir)
    rows = read_metrics(metrics_jsonl)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not rows:
        return []
    written: list[Path] = []
    for spec in _LINE_PLOTS:
        p = _plot_lines(spec, rows, out_dir, smoothing)
        if p is not None:
            written.append(p)
    p = _plot_time(rows, out_dir)
    if p is not None:
        written.append(p)
    return written
