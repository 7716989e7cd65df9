"""Toy trainer for the kill -9 resume test; a standalone script, not a test module.

Small on purpose, but it carries every piece of state that makes real resumes go wrong
(reliability spec §3.2): torch init + dropout + noise RNG, python ``random``, numpy-shuffled epochs
with a data cursor (an epoch is a multiple of the save interval, the veRL #7401 case), AdamW,
an LR schedule, and a piece of algorithm state (an adaptive penalty coefficient, like a KL
controller) that feeds back into the loss. Each checkpoint carries a padded file (``--pad-mb``)
so that kills land inside saves.

Every step appends ``{"step", "loss", "lr", "batch"}`` (floats as ``float.hex``) to
``<out>/log.jsonl`` with one ``os.write`` on an ``O_APPEND`` descriptor, then fsyncs, so a kill
never tears a line. ``READY`` is printed after start-up, before the resume, for the chaos driver.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
import zlib
from pathlib import Path

N_SAMPLES, DIM, BATCH = 320, 16, 32  # 10 steps per epoch: saves every 5 steps hit epoch boundaries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--save-every", type=int, default=5)
    ap.add_argument("--keep-last", type=int, default=2)
    ap.add_argument("--pad-mb", type=float, default=8.0)
    ap.add_argument("--step-sleep", type=float, default=0.0, help="seconds per step, to stretch the run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", choices=["no", "auto", "required"], default="no")
    ap.add_argument("--forget-rng", action="store_true", help="negative control: skip the torch RNG on resume")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import numpy as np
    import torch

    from reasonrl.trainer.checkpoint import (
        find_resume_point,
        load_trainer_state,
        rotate_checkpoints,
        save_checkpoint,
    )
    from reasonrl.trainer.rng import capture_rng, restore_rng

    torch.set_num_threads(1)

    ckpt_root = args.out / "ckpt"
    log_fd = os.open(args.out / "log.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(rec: dict) -> None:
        os.write(log_fd, (json.dumps(rec, sort_keys=True) + "\n").encode())
        os.fsync(log_fd)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    data_rng = np.random.RandomState(1234)  # fixed data set, independent of the training RNGs
    X = torch.from_numpy(data_rng.standard_normal((N_SAMPLES, DIM)).astype(np.float32))
    Y = torch.sin(X @ torch.from_numpy(data_rng.standard_normal((DIM, 1)).astype(np.float32)))

    model = torch.nn.Sequential(
        torch.nn.Linear(DIM, 64), torch.nn.Tanh(), torch.nn.Dropout(0.2),
        torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Dropout(0.2),
        torch.nn.Linear(64, 1),
    )
    init = [p.detach().clone() for p in model.parameters()]  # the "reference model" of the penalty
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    warmup = 8
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / args.steps))
    )
    # Ready for the chaos clock: start-up is done (AdamW's constructor alone imports torch._dynamo,
    # ~2.4 s here), the resume has not begun, so kills can still land mid-resume.
    print("READY", flush=True)
    step, cursor, algo = 0, {"epoch": 0, "pos": N_SAMPLES, "perm": []}, {"coef": 0.1, "ema": None}

    resume_from = None
    if args.resume != "no":
        resume_from = find_resume_point(ckpt_root, required=args.resume == "required")
    if resume_from is not None:
        model.load_state_dict(torch.load(resume_from / "model" / "weights.pt", weights_only=True))
        st = load_trainer_state(resume_from)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        restore_rng(st["rng"], torch_cpu=not args.forget_rng)
        step, cursor, algo = st["step"], st["cursor"], st["algo"]
    removed = rotate_checkpoints(ckpt_root, args.keep_last, current_step=step if resume_from else None)
    emit({"event": "start", "pid": os.getpid(), "resumed_from": step if resume_from else None,
          "removed": sorted(p.name for p in removed)})

    pad = bytes(int(args.pad_mb * (1 << 20)))

    def write_model(d: Path) -> None:
        d.mkdir()
        torch.save(model.state_dict(), d / "weights.pt")

    def write_pad(p: Path) -> None:
        with open(p, "wb") as f:
            f.write(step.to_bytes(8, "little"))
            f.write(pad)

    while step < args.steps:
        if args.step_sleep:
            time.sleep(args.step_sleep)
        if cursor["pos"] >= N_SAMPLES:  # drawn lazily so a checkpoint at an epoch end resumes into a new epoch
            cursor = {"epoch": cursor["epoch"] + 1, "pos": 0, "perm": np.random.permutation(N_SAMPLES).tolist()}
        idx = cursor["perm"][cursor["pos"] : cursor["pos"] + BATCH]
        cursor["pos"] += BATCH
        jitter = random.random() * 0.05
        yb = Y[idx] + jitter * torch.randn(len(idx), 1)
        model.train()
        mse = torch.nn.functional.mse_loss(model(X[idx]), yb)
        penalty = sum(((p - p0) ** 2).sum() for p, p0 in zip(model.parameters(), init))
        loss = mse + algo["coef"] * penalty
        lr = sched.get_last_lr()[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        val = float(loss.detach())
        algo["coef"] *= 1.05 if algo["ema"] is not None and val > algo["ema"] else 0.95
        algo["ema"] = val if algo["ema"] is None else 0.9 * algo["ema"] + 0.1 * val
        emit({"step": step, "loss": val.hex(), "lr": float(lr).hex(),
              "batch": zlib.crc32(np.asarray(idx, dtype=np.int64).tobytes())})
        if step % args.save_every == 0 or step == args.steps:
            state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "rng": capture_rng(), "cursor": cursor, "algo": algo}
            save_checkpoint(ckpt_root, step, {"model": write_model, "pad.bin": write_pad}, state, args.keep_last)

    h_param, h_opt = hashlib.sha256(), hashlib.sha256()
    for p in model.parameters():
        h_param.update(p.detach().numpy().tobytes())
        for k in sorted(opt.state[p]):
            h_opt.update(opt.state[p][k].detach().numpy().tobytes())
    opt_steps = {int(opt.state[p]["step"]) for p in model.parameters()}
    emit({"final": True, "step": step, "param_hash": h_param.hexdigest(), "opt_hash": h_opt.hexdigest(),
          "opt_steps": sorted(opt_steps), "algo": {k: float(v).hex() for k, v in algo.items()}})
    os.close(log_fd)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Everything is durable by now; skip interpreter teardown, which after torch._dynamo is
    # imported costs 1-4 s and would keep the chaos driver killing a finished run.
    os._exit(code)
