import sys, time, torch
from reasonrl.embodied import train as T
from reasonrl.embodied.bench import BENCH_DEFAULTS
from reasonrl.embodied.config import load_vla_config
from reasonrl.embodied.envs import EnvPool
from reasonrl.embodied.stage import VLARolloutStage
from reasonrl.algorithms.recipes import make_recipe
if __name__ == "__main__":
    import os; every = int(os.environ.get("EVERY", 5))
    cfg = load_vla_config(None, BENCH_DEFAULTS + sys.argv[1:])
    demos = T.sft_demos(cfg, cfg.sft.demos_per_task)
    policy, tok = T.build_policy(cfg, demos)
    rows = T.demo_rollouts(demos, policy, tok, cfg.env.max_steps)
    T.sft(policy, rows, cfg.sft.steps, T.make_optimizer(policy, cfg.sft.lr, cfg), cfg)
    t00 = time.time()
    with EnvPool(cfg.env.n_workers, 0, cfg.env.max_steps) as pool:
        inits = T.held_out_inits(cfg)
        ev, _ = T.evaluate(policy, pool, tok, inits); print("start", ev["all"], flush=True)
        stage = VLARolloutStage(policy, pool, tok, cfg)
        recipe = make_recipe(cfg.algorithm)
        opt = T.make_optimizer(policy, cfg.train.lr, cfg)
        rng = torch.Generator().manual_seed(cfg.train.seed)
        steps = 0
        for step in range(cfg.train.steps):
            col = stage.collect(cfg.rollout.groups_per_step, rng)
            steps += col.metrics["env/steps"]
            if col.batch is not None and len(col.batch):
                um = T.grpo_update(policy, opt, recipe, col.batch, cfg, step); print({k: round(v, 4) for k, v in um.items() if any(x in k for x in ("clip", "kl", "grad", "entropy", "ratio"))}, flush=True)
            print(f"step {step+1} sampled {col.metrics['reward/accuracy']:.3f} kept {col.metrics['batch/kept_groups']} envsteps {steps} t {time.time()-t00:.0f}", flush=True)
            if (step + 1) % every == 0:
                ev, _ = T.evaluate(policy, pool, tok, inits); print("EVAL", step + 1, ev["all"], flush=True)
