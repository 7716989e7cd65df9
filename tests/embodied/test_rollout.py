import numpy as np
import torch

from reasonrl.embodied.envs import EnvPool, FetchEpisode
from reasonrl.embodied.experts import expert_action
from reasonrl.embodied.rollout import run_episodes, success_rate_filter, to_rollouts

from vla_helpers import tiny_policy


def test_reset_to_a_stored_initial_state_is_deterministic():
    ep = FetchEpisode("push", 0, 50)
    try:
        a, b, c = ep.reset(7).state, ep.reset(7).state, ep.reset(8).state
    finally:
        ep.close()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_chunk_stops_early_on_success():
    ep = FetchEpisode("reach", 0, 50)
    try:
        obs = ep.reset(3)
        a = expert_action("reach", obs.state)  # the expert reaches within a few steps
        r = ep.run_chunk(np.repeat(a[None], 20, 0) * 0.5)
        assert r.success and r.done
        assert 1 <= r.executed < 20 and ep.steps == r.executed
    finally:
        ep.close()


def test_chunk_stops_at_the_step_limit():
    ep = FetchEpisode("reach", 0, 6)
    try:
        obs = ep.reset(3)
        away = -expert_action("reach", obs.state)  # move away from the target: never succeeds
        r1 = ep.run_chunk(np.repeat(away[None], 4, 0))
        r2 = ep.run_chunk(np.repeat(away[None], 4, 0))
    finally:
        ep.close()
    assert (r1.executed, r1.done, r2.executed, r2.done, r2.success) == (4, False, 2, True, False)


def test_worker_processes_match_sequential_stepping():
    policy, tok = tiny_policy(chunk_len=3)
    inits = [("reach", 11), ("push", 12), ("reach", 13), ("pick_place", 14), ("reach", 11)]
    runs = []
    for workers in (0, 2):
        with EnvPool(workers, 0, 12) as pool:
            runs.append(run_episodes(policy, pool, inits, tok, temperature=1.6, generator=torch.Generator().manual_seed(5)))
    a, b = runs
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.states, b.states)
    assert torch.equal(a.finish_step, b.finish_step) and torch.equal(a.success, b.success)
    assert bool((a.finish_step[~a.success] == 12).all()) and a.finish_step.max() <= 12  # failures run to the limit


def test_rollout_rows_recompute_their_logprobs():
    policy, tok = tiny_policy(chunk_len=3)
    with EnvPool(0, 0, 10) as pool:
        traj = run_episodes(policy, pool, [("reach", 1), ("reach", 2)], tok, temperature=1.6,
                            generator=torch.Generator().manual_seed(0))
    ro = to_rollouts(traj, policy, torch.tensor([0, 0]), 10)
    assert ro.loss_mask.sum(1).tolist() == (traj.finish_step * 4).tolist()
    lp, _ = policy.sequence_logprobs(ro, temperature=1.6)
    assert torch.allclose(lp, ro.rollout_logp, atol=1e-5)  # on-policy ratio is exactly 1
    assert bool((ro.rollout_logp[ro.loss_mask == 0] == 0).all())


def test_images_are_rendered_headless():
    policy, tok = tiny_policy(chunk_len=5, image_size=32)
    with EnvPool(0, 32, 10) as pool:
        traj = run_episodes(policy, pool, [("push", 3)], tok, temperature=1.0, generator=torch.Generator().manual_seed(0),
                            record=True)
    assert traj.images.shape == (1, 2, 32, 32, 3) and traj.images.float().std() > 5  # a real picture, not blank
    assert len(traj.frames[0]) == int(traj.finish_step[0]) and traj.frames[0][0].shape == (32, 32, 3)


def test_dynamic_sampling_bounds():
    # groups of 8 with 0, 1, 4, 7, 8 successes: rates 0, .125, .5, .875, 1
    succ = torch.tensor([0] * 8 + [1] + [0] * 7 + [1] * 4 + [0] * 4 + [1] * 7 + [0] + [1] * 8)
    gid = torch.arange(5).repeat_interleave(8)
    kept = success_rate_filter(succ, gid, 0.1, 0.9)
    assert kept.tolist() == list(range(8, 32))
    # the bounds are inclusive: a group of 10 with exactly one success (rate 0.1) stays
    s10 = torch.tensor([1] + [0] * 9)
    assert len(success_rate_filter(s10, torch.zeros(10, dtype=torch.long), 0.1, 0.9)) == 10
    assert len(success_rate_filter(s10, torch.zeros(10, dtype=torch.long), 0.2, 0.9)) == 0
