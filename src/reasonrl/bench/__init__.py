"""Every benchmark behind `reasonrl bench <name>`, one module each, all writing through one result writer
(:mod:`reasonrl.bench.results`: command line, environment, load before/after, git commit, atomic JSON +
markdown). Adding one: a module with ``bench_<name>(overrides: list[str]) -> int`` plus one line in
:data:`BENCHES`; results go to ``benchmarks/<name>/``.
"""

from __future__ import annotations

import importlib

__all__ = ["BENCHES", "run_bench"]

# name -> "module:function"; each function takes the command line's overrides and returns an exit code.
# Modules are imported only when their benchmark runs (some pull in torch, TRL or the sandbox).
BENCHES = {
    "algorithms": "reasonrl.bench.algorithms:bench_algorithms",
    "async": "reasonrl.bench.asynchronous:bench_async",
    "drivemoe": "reasonrl.bench.drivemoe:bench_drivemoe",
    "latentseek": "reasonrl.bench.latentseek:bench_latentseek",
    "rewards": "reasonrl.bench.rewards:bench_rewards",
    "ssm": "reasonrl.bench.ssm:run",
    "ssrl": "reasonrl.bench.ssrl:bench_ssrl",
    "throughput": "reasonrl.bench.throughput:bench_throughput",
    "ttrl": "reasonrl.bench.ttrl:bench_ttrl",
    "vla": "reasonrl.embodied.bench:run",
}


def run_bench(what: str, overrides: list[str], **kwargs) -> int:
    """Run benchmark ``what`` with ``overrides`` (``kwargs``, e.g. ``log=``, go to benchmarks that take them)."""
    if what not in BENCHES:
        raise ValueError(f"unknown benchmark {what!r}; valid: {', '.join(BENCHES)}")
    mod, _, fn = BENCHES[what].partition(":")
    return getattr(importlib.import_module(mod), fn)(list(overrides), **kwargs)
