"""The one result writer every benchmark uses, and the statistics they share.

A :class:`BenchRun` is made when a benchmark starts: it records the exact command line, the
environment (:func:`reasonrl.provenance.environment`: python/torch versions, threads, CPU model,
git commit) and the load average, and on every :meth:`BenchRun.write` adds the load average and
wall time so far. ``results.json`` and ``results.md`` are written atomically, the markdown from the
JSON document by a pure function, so a benchmark can re-render its table from saved numbers.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from reasonrl.provenance import environment, loadavg, write_atomic

__all__ = ["BenchRun", "env_markdown", "mean_t_ci", "t95"]

# two-sided 95% Student-t quantiles by degrees of freedom (3 seeds -> df 2 -> 4.30, not the normal 1.96)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        15: 2.131, 20: 2.086, 30: 2.042}


def t95(n: int) -> float:
    df = n - 1
    if df < 1:
        return math.nan
    return _T95[max(d for d in _T95 if d <= df)] if df <= 30 else 1.96


def mean_t_ci(xs: list[float]) -> tuple[float, float]:
    """Mean and 95% Student-t half-width over seeds (nan half-width for a single seed)."""
    n = len(xs)
    m = math.fsum(xs) / n
    if n < 2:
        return m, math.nan
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1))
    return m, t95(n) * sd / math.sqrt(n)


class BenchRun:
    """Provenance of one benchmark invocation; ``command`` defaults to ``reasonrl bench <name> <args>``."""

    def __init__(self, name: str, args: Sequence[str] = (), command: str | None = None):
        self.command = command if command is not None else f"reasonrl bench {name} " + shlex.join(args)
        self.date = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.load_before = loadavg()
        self._t0 = time.perf_counter()
        self._env: dict[str, Any] | None = None

    def env(self) -> dict[str, Any]:
        """The environment (read at the first call, once the benchmark has set its threads), with the
        load average and wall time as of now."""
        if self._env is None:
            self._env = environment()
        return {**self._env, "date": self.date, "load_before": self.load_before, "load_after": loadavg(),
                "wall_s": round(time.perf_counter() - self._t0, 3)}

    def stamp(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with ``command`` first and ``env`` (as of now) added."""
        return {"command": self.command, **{k: v for k, v in doc.items() if k != "command"}, "env": self.env()}

    def write(self, out: Path | str, doc: dict[str, Any], markdown: Callable[[dict[str, Any]], str] | None = None,
              *, name: str = "results") -> dict[str, Any]:
        """Atomically write ``<out>/<name>.json`` (the stamped ``doc``) and, from it, ``<name>.md``."""
        doc = self.stamp(doc)
        write_atomic(Path(out) / f"{name}.json", json.dumps(doc, indent=1, default=float) + "\n")
        if markdown is not None:
            write_atomic(Path(out) / f"{name}.md", markdown(doc))
        return doc


def env_markdown(env: dict[str, Any] | None) -> str:
    """One markdown paragraph stating where and how the numbers were measured."""
    if not env:
        return "Environment: not recorded."
    if "cpu_model" not in env:  # written before the shared writer existed
        return f"Environment: {json.dumps(env)}."
    te = env.get("thread_env") or {}
    threads = ", ".join(f"{k}={v}" for k, v in te.items() if v is not None)
    th = env.get("torch_threads")
    return (f"Environment: python {env.get('python')}, torch {env.get('torch')}"
            + (f", {th} torch thread(s)" if th is not None else "") + (f" ({threads})" if threads else "")
            + f"; {env.get('cpu_model')}, {env.get('cpus')} CPUs; load average (1/5/15 min) before "
            f"{env.get('load_before')}, after {env.get('load_after')}; wall {env.get('wall_s', float('nan')):.0f} s; "
            f"git {env.get('git_commit')}; {env.get('date')}.")
