import sys, time, torch
from reasonrl.embodied import train as T
from reasonrl.embodied.bench import BENCH_DEFAULTS
from reasonrl.embodied.config import load_vla_config
from reasonrl.embodied.envs import EnvPool
from reasonrl.embodied.rollout import run_episodes
if __name__ == "__main__":
    cfg = load_vla_config(None, BENCH_DEFAULTS + sys.argv[1:])
    torch.set_num_threads(1)
    demos = T.sft_demos(cfg, cfg.sft.demos_per_task)
    policy, tok = T.build_policy(cfg, demos)
    rows = T.demo_rollouts(demos, policy, tok, cfg.env.max_steps)
    T.sft(policy, rows, cfg.sft.steps, T.make_optimizer(policy, cfg.sft.lr, cfg), cfg)
    with EnvPool(0, 0, cfg.env.max_steps) as pool:
        inits = T.held_out_inits(cfg)[:64]
        t0=time.time(); ev, _ = T.evaluate(policy, pool, tok, inits); print("greedy", ev, time.time()-t0)
        for temp in [1.0, 1.6, 3.0]:
            g = torch.Generator().manual_seed(0)
            tr = run_episodes(policy, pool, [i for i in inits[:16] for _ in range(8)], tok, temperature=temp, generator=g)
            rate = tr.success.float().view(16, 8).mean(1)
            ent = -(tr.logp[tr.logp!=0]).mean()
            print(f"T={temp} sampled {tr.success.float().mean():.3f} groups w/ var {int(((rate>0)&(rate<1)).sum())}/16 mean -logp {ent:.2f}")
