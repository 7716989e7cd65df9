import pytest
import torch

from reasonrl.embodied import train as T
from reasonrl.embodied.config import load_vla_config
from reasonrl.embodied.envs import EnvPool


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="measured 2026-12-06: no held-out gain at this CPU scale (benchmarks/vla/results.md); "
                   "kept so a fix shows up as XPASS")
def test_grpo_raises_held_out_reach_success_from_a_weak_one_demo_start():
    """Fixed seed: one demonstration -> weak BC start; GRPO (paper settings) must lift greedy success on
    64 held-out initial states by a margin above the +-0.06 binomial noise of 64 episodes."""
    from reasonrl.embodied.bench import BENCH_DEFAULTS

    cfg = load_vla_config(None, BENCH_DEFAULTS + ["eval.states_per_task=64", "train.seed=0"])
    demos = T.gather_demos(cfg, 1)
    policy, tok = T.build_policy(cfg, demos)
    T.sft(policy, T.demo_rollouts(demos, policy, tok, 20), cfg.sft.steps, T.make_optimizer(policy, 1e-3, cfg), cfg)
    inits = T.held_out_inits(cfg)
    with EnvPool(2, 0, 20) as pool:
        before, _ = T.evaluate(policy, pool, tok, inits)
        T.rl_loop(policy, tok, pool, cfg, torch.Generator().manual_seed(0), log=lambda *_: None)
        after, _ = T.evaluate(policy, pool, tok, inits)
    assert before["reach"] < 0.3, before  # the start really is weak
    assert after["reach"] >= before["reach"] + 0.15, (before, after)
