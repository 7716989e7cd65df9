"""Rollout (collect) and learner (update) step times at 1 and 2 torch threads, alternating, one process (issue 18).

Run: OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE nice -n 0 python benchmarks/async/thread_scaling.py model.path=builtin:tiny
(extra arguments are config overrides on top of `reasonrl bench async`'s defaults). Output: benchmarks/async/thread_scaling.md (by hand).
"""
import statistics
import sys
import tempfile
import time

import torch

from reasonrl.config import load_config
from reasonrl.trainer.loop import Trainer
from reasonrl.bench.asynchronous import DEFAULTS
ov = sys.argv[1:]
cfg = load_config(None, DEFAULTS + [f"run.out_dir={tempfile.mkdtemp()}", "run.name=thr", "run.threads=2"] + ov)
tr = Trainer(cfg, log=lambda *a: None)
batch, tasks, m = tr.collect(); tr.update(batch, tasks)  # warm-up
res = {f"{k}@{t}": [] for k in ("gen", "train") for t in (1, 2)}
for r in range(4):
    for t in ((1, 2) if r % 2 == 0 else (2, 1)):
        torch.set_num_threads(t)
        t0 = time.perf_counter(); c0 = time.process_time(); batch, tasks, m = tr.collect(); g = time.perf_counter() - t0; gc = time.process_time() - c0
        t0 = time.perf_counter(); c0 = time.process_time(); tr.update(batch, tasks); u = time.perf_counter() - t0; uc = time.process_time() - c0
        res[f"gen@{t}"].append((g, gc)); res[f"train@{t}"].append((u, uc))
for k, v in res.items():
    print(f"{k}: wall median {statistics.median(x[0] for x in v):.3f} s, cpu median {statistics.median(x[1] for x in v):.3f} s  ({[round(x[0],3) for x in v]})")
g1, g2 = (statistics.median(x[0] for x in res[f"gen@{t}"]) for t in (1, 2))
u1, u2 = (statistics.median(x[0] for x in res[f"train@{t}"]) for t in (1, 2))
print(f"sync at 2 threads: {g2+u2:.3f} s; ideal overlap 1+1: max({g1:.3f}, {u1:.3f}) = {max(g1,u1):.3f} s -> {(g2+u2)/max(g1,u1):.2f}x; "
      f"speed-up from the 2nd thread: rollout {g1/g2:.2f}x, learner {u1/u2:.2f}x")
