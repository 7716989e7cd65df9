"""Training-step time before/after the SSM scan rewrite, side by side in one process.

One SFT-shaped step (batch 64 x 61 tokens, forward + backward of the mean log-softmax) for the tiny
transformer and for tiny Mamba / Mamba-2 twice: with this checkout's ``models/ssm/ops.py`` ("after") and
with the ops module of a base commit read from git ("before", swapped into ``layers.ops``). The arms take
turns, each keeps its fastest of ``--repeats`` runs; the load average is recorded.

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/ssm/train_step.py --base 3ee77f2 --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from reasonrl.models.ssm import layers
from reasonrl.models.ssm.tiny import build_ssm
from reasonrl.models.tiny import TinySpec, _tokenizer_corpus, build_model
from reasonrl.models.tokenizer import train_tokenizer


def _ops_at(commit: str):
    src = subprocess.run(["git", "show", f"{commit}:src/reasonrl/models/ssm/ops.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "ops_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("ops_before", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="3ee77f2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/ssm/train_step.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0 = open("/proc/loadavg").read().split()[:3]
    tok = train_tokenizer(_tokenizer_corpus(TinySpec(demos=50)), 256)
    spec = TinySpec()
    models = {"transformer": build_model(spec, tok), "mamba": build_ssm("mamba", spec, tok),
              "mamba2": build_ssm("mamba2", spec, tok)}
    after, before = layers.ops, _ops_at(args.base)
    arms = [("transformer", None), ("mamba", before), ("mamba", after), ("mamba2", before), ("mamba2", after)]
    ids = torch.randint(3, len(tok), (64, 61), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)

    def step(name, ops):
        if ops is not None:
            layers.ops = ops
        m = models[name]
        m.zero_grad(set_to_none=True)
        t = time.perf_counter()
        m(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1).mean().backward()
        return time.perf_counter() - t

    times = {f"{n}/{'before' if o is before else 'after' if o is after else '-'}": [] for n, o in arms}
    for r in range(args.repeats + 1):  # the first round warms up and is dropped
        for n, o in arms:
            dt = step(n, o)
            if r:
                times[f"{n}/{'before' if o is before else 'after' if o is after else '-'}"].append(dt)
    layers.ops = after
    best = {k: min(v) for k, v in times.items()}
    doc = {"command": "python benchmarks/ssm/train_step.py " + " ".join(sys.argv[1:]), "base": args.base,
           "batch": list(ids.shape), "best_s": best, "all_s": times,
           "vs_transformer": {k: v / best["transformer/-"] for k, v in best.items()},
           "speedup": {n: best[f"{n}/before"] / best[f"{n}/after"] for n in ("mamba", "mamba2")},
           "load_before": load0, "load_after": open("/proc/loadavg").read().split()[:3],
           "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("best_s", "vs_transformer", "speedup", "load_before", "load_after")},
                     indent=1))


if __name__ == "__main__":
    main()
