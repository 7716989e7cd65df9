import pytest
import torch

from reasonrl.algorithms.recipes import StepContext, make_recipe, Norm
from reasonrl.embodied.rollout import Trajectories, to_rollouts
from reasonrl.embodied.train import slice_loss

from vla_helpers import tiny_policy


def _batch(policy, groups=3, n=4, calls=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    e, tpc = groups * n, policy.config.tokens_per_call
    tasks = ["reach", "push", "pick_place"]
    inits = [(tasks[i // n % 3], i // n) for i in range(e)]
    tokens = torch.randint(0, policy.config.n_bins, (e, calls, tpc), generator=g)
    finish = torch.randint(1, calls * policy.config.chunk_len + 1, (e,), generator=g)
    success = torch.rand(e, generator=g) < 0.5
    traj = Trajectories(inits, tokens, torch.zeros(e, calls, tpc), torch.randn(e, calls, 31, generator=g), None,
                        torch.full((e,), calls), finish, success)
    ro = to_rollouts(traj, policy, torch.arange(groups).repeat_interleave(n), calls * policy.config.chunk_len)
    with torch.no_grad():  # pretend an older policy sampled these: ratios != 1 so clipping is exercised
        ro.rollout_logp = (policy.sequence_logprobs(ro, temperature=1.6)[0] + 0.3 * torch.randn(ro.rollout_logp.shape, generator=g)) * ro.loss_mask
    return ro


def _grads(policy):
    return torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None])


@pytest.mark.parametrize("name", ["grpo", "dapo"])
def test_slice_wise_loss_equals_unsliced_loss(name):
    policy, _ = tiny_policy(chunk_len=2)
    batch = _batch(policy)
    recipe = make_recipe({"name": name, "clip_low": 0.2, "clip_high": 0.28, "loss_agg": "token-mean"}
                         | ({"overlong": False} if name == "dapo" else {}))
    batch = recipe.prepare(batch, StepContext(forward=None, demo_rows=None, tasks=[], step=0))
    mask = batch.loss_mask
    norm = Norm(num_tokens=float(mask.sum()), num_seqs=float(len(batch)), loss_scale_factor=1.0, batch=batch)
    rows = torch.arange(len(batch))
    grads, losses = [], []
    for micro in (0, 5, 1):
        policy.zero_grad(set_to_none=True)
        ms = slice_loss(policy, recipe, batch, rows, norm, 1.6, micro)
        losses.append(sum(m["actor/loss"] for m in ms))
        grads.append(_grads(policy))
    assert abs(losses[0] - losses[1]) < 1e-5 and abs(losses[0] - losses[2]) < 1e-5
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and torch.allclose(grads[0], grads[2], atol=1e-6)
    assert grads[0].abs().sum() > 0


def test_advantage_is_one_scalar_per_trajectory_on_executed_tokens():
    policy, _ = tiny_policy(chunk_len=2)
    batch = _batch(policy, groups=1, n=4)
    recipe = make_recipe({"name": "grpo"})
    batch.rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    batch = recipe.prepare(batch, StepContext(forward=None, demo_rows=None, tasks=[], step=0))
    adv = batch.advantages
    # one scalar per trajectory on its valid tokens: (r - mean)/(std + eps) with the unbiased std of [1,0,0,0]
    expect = (torch.tensor([1.0, 0, 0, 0]) - 0.25) / (0.5 + 1e-6)
    for i in range(4):
        valid = batch.loss_mask[i].bool()
        assert torch.allclose(adv[i][valid], expect[i].expand(int(valid.sum())), atol=1e-5)
        assert bool((adv[i][~valid] == 0).all())


def test_grpo_update_moves_log_probs_toward_successful_trajectories():
    import copy

    from reasonrl.embodied.config import load_vla_config
    from reasonrl.embodied.train import grpo_update, make_optimizer

    policy, _ = tiny_policy(chunk_len=2)
    batch = _batch(policy, groups=3, n=4, seed=1)
    with torch.no_grad():
        batch.rollout_logp = policy.sequence_logprobs(batch, temperature=1.6)[0]
    batch.rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 0, 0, 1, 1, 1, 0])
    cfg = load_vla_config(None, ["train.epochs=2", "train.mini_batches=3", "train.micro_batch=2", "train.lr=1e-3"])
    opt = make_optimizer(policy, cfg.train.lr, cfg)

    def per_token():
        with torch.no_grad():
            return policy.sequence_logprobs(batch, temperature=1.6)[0].sum(1) / batch.loss_mask.sum(1)

    before = per_token()
    m = grpo_update(policy, opt, make_recipe(cfg.algorithm), copy.deepcopy(batch), cfg)
    d = per_token() - before
    ok = batch.rewards.bool()
    assert bool((d[ok] > 0).all()) and bool((d[~ok] < 0).all()), d
    assert m["batch/active_frac"] == 1.0 and m["actor/grad_norm"] > 0
