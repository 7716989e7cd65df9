"""Start-only diagnostic: greedy success of the one-demo BC start per bench seed and number of symmetry copies,
on held-out states disjoint from the bench's (eval.seed_base=1.5e9), so choosing `sft.augment` does not look at
the bench's evaluation states. Usage: python benchmarks/vla/start_diag.py [augment ...]"""
import sys

import torch

from reasonrl.embodied import train as T
from reasonrl.embodied.bench import BENCH_DEFAULTS
from reasonrl.embodied.config import load_vla_config
from reasonrl.embodied.envs import EnvPool

if __name__ == "__main__":
    augments = [int(a) for a in sys.argv[1:]] or [5]
    with EnvPool(2, 0, 20) as pool:
        for aug in augments:
            row = []
            for seed in (0, 1, 2):
                cfg = load_vla_config(None, BENCH_DEFAULTS + [f"sft.augment={aug}", f"train.seed={seed}",
                                                              "eval.states_per_task=128", "eval.seed_base=1500000000"])
                demos = T.sft_demos(cfg, 1, offset=seed)
                policy, tok = T.build_policy(cfg, demos)
                T.sft(policy, T.demo_rollouts(demos, policy, tok, cfg.env.max_steps), cfg.sft.steps,
                      T.make_optimizer(policy, cfg.sft.lr, cfg), cfg)
                ev, _ = T.evaluate(policy, pool, tok, T.held_out_inits(cfg))
                row.append(round(ev["all"], 3))
            print(f"augment {aug}: start success by seed 0/1/2 {row}", flush=True)
