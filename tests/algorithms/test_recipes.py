"""Named recipes on the real trainer: every recipe trains, plus the behaviours each one adds
(HPT's per-prompt switch, DAPO's dynamic sampling, FlowRL's head in checkpoints, per-recipe params)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))

from trainer_fixtures import make_tiny_model_dir, tiny_overrides  # noqa: E402

from reasonrl.algorithms.recipes import REGISTRY, ForwardOut, Norm, StepContext, make_recipe  # noqa: E402
from reasonrl.batch import Rollouts  # noqa: E402
from reasonrl.config import ConfigError, load_config  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("recipes_model"))


class DigitsCorrect:
    """Wraps the real scorer and calls a sample 'correct' when it has ≥ 2 digits, so an untrained
    model yields mixed, all-wrong and all-right groups (exercising HPT, DAPO and RFT branches)."""

    def __init__(self, inner):
        self.inner = inner

    def score(self, tasks, responses):
        res = self.inner.score(tasks, responses)
        res.correct = [s >= 2 for s in res.scores]
        return res


def make_trainer(model_dir, tmp_path, name, *extra, fake_correct=True):
    from reasonrl.trainer.loop import Trainer

    over = tiny_overrides(model_dir, tmp_path) + ["reward.functions=[trainer_fixtures:digit_reward]",
                                                  "trainer.tensorboard=false", f"algorithm.name={name}", *extra]
    tr = Trainer(load_config(None, over), log=lambda *a: None)
    if fake_correct:
        tr.scorer = DigitsCorrect(tr.scorer)
    return tr


def train_steps(tr, steps=2):
    out = []
    for _ in range(steps):
        batch, tasks, m = tr.collect()
        m.update(tr.update(batch, tasks))
        tr.step += 1
        out.append(m)
    return out


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    after = module.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_recipe_trains_two_steps_and_moves_the_weights(model_dir, tmp_path, name):
    extra = ["algorithm.filter_metric=score"] if name == "dapo" else []
    # several micro-batches per update: state a recipe prepares once per batch must carry no autograd graph
    # (PPO's rollout-time values did, and the second micro-batch's backward failed)
    tr = make_trainer(model_dir, tmp_path, name, "trainer.micro_batch=3", *extra)
    w0, m0 = snapshot(tr.model), snapshot(tr.modules)
    for m in train_steps(tr):
        assert torch.isfinite(torch.tensor(m["actor/loss"])), m
    assert changed(w0, tr.model), f"{name} did not change the policy weights"
    if m0:
        assert changed(m0, tr.modules), f"{name} did not train its extra modules"


def test_recipe_modules_and_reference():
    cfgs = {n: make_recipe({"name": n}) for n in REGISTRY}
    assert cfgs["flowrl"].needs_reference() and cfgs["reinforce_pp"].needs_reference()
    assert not cfgs["grpo"].needs_reference() and not cfgs["dapo"].needs_reference()
    assert cfgs["ppo"].needs_hidden() and cfgs["flowrl"].needs_hidden()
    for n, cls in REGISTRY.items():
        assert cls.formula and cls.paper, n


# ------------------------------------------------------------------ config validation


@pytest.mark.parametrize("name,bad", [("ppo", "beta"), ("gspo", "clip_c"), ("grpo", "max_gen_batches"),
                                      ("flowrl", "clip_low"), ("hpt", "alpha"), ("rloo", "norm_by_std")])
def test_unknown_params_are_rejected_per_recipe(name, bad):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"algorithm.name={name}", f"algorithm.{bad}=1"])
    assert f"algorithm.{bad}" in str(e.value) and "unknown parameter" in str(e.value)


def test_recipe_defaults_follow_the_papers():
    c = load_config(None, ["algorithm.name=flowrl"]).algorithm
    assert c["beta"] == 15.0 and c["weight_mode"] == "paper_clip" and c["z_layers"] == 3
    assert load_config(None, ["algorithm.name=grpo_entropy_adv"]).algorithm["alpha"] == 0.4
    p = load_config(None, ["algorithm.name=ppo_entropy_adv"]).algorithm
    assert p["alpha"] == 0.1 and p["kappa"] == 2.0
    d = load_config(None, ["algorithm.name=dapo"]).algorithm
    assert (d["clip_low"], d["clip_high"], d["loss_agg"], d["max_gen_batches"]) == (0.2, 0.28, "token-mean", 10)
    dr = load_config(None, ["algorithm.name=dr_grpo"]).algorithm
    assert dr["norm_by_std"] is False and dr["loss_agg"] == "seq-mean-token-sum-norm"
    with pytest.raises(ConfigError, match="kappa"):
        load_config(None, ["algorithm.name=grpo_entropy_adv", "algorithm.kappa=1"])
    with pytest.raises(ConfigError, match="weight_mode"):
        load_config(None, ["algorithm.name=flowrl", "algorithm.weight_mode=bogus"])


# ------------------------------------------------------------------ synthetic batches for hook tests


def rollouts(rewards, correct, n, resp_len=5, group_offset=0):
    b = len(rewards)
    lengths = torch.tensor([resp_len - (i % 3) for i in range(b)])
    mask = (torch.arange(resp_len)[None] < lengths[:, None]).float()
    g = torch.Generator().manual_seed(0)
    return Rollouts(prompt_ids=torch.randint(3, 50, (b, 4), generator=g), prompt_mask=torch.ones(b, 4, dtype=torch.long),
                    response_ids=torch.randint(3, 50, (b, resp_len), generator=g), loss_mask=mask,
                    rollout_logp=-torch.rand(b, resp_len, generator=g) * mask,
                    group_ids=torch.arange(b) // n + group_offset, task_index=(torch.arange(b) // n).tolist(),
                    response_text=["x"] * b, truncated=torch.zeros(b, dtype=torch.bool),
                    rewards=torch.tensor(rewards, dtype=torch.float32), info={"correct": list(correct)})


def fake_demo_rows(idx):
    d = rollouts([1.0] * len(idx), [True] * len(idx), 1, resp_len=7)
    d.group_ids = torch.tensor([-1 - i for i in idx])
    d.task_index = list(idx)
    return d


def ctx(**kw):
    return StepContext(forward=None, demo_rows=fake_demo_rows, tasks=[], step=0, max_new_tokens=8, **kw)


def test_hpt_switch_replaces_all_wrong_groups_by_one_demo_excluded_from_group_stats():
    # 3 prompts × 4: group 0 all wrong -> SFT; group 1 mixed -> RL; group 2 all wrong -> SFT
    correct = [0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0]
    rewards = [0.2, 0.0, 0.5, 0.1, 1.0, 0.0, 1.0, 0.5, 0.0, 0.3, 0.0, 0.0]
    rec = make_recipe({"name": "hpt"})
    out = rec.prepare(rollouts(rewards, [bool(c) for c in correct], 4), ctx())
    assert len(out) == 4 + 2
    demo = out.is_demo > 0
    assert demo.tolist() == [True, False, False, False, False, True]  # each demo where its prompt was
    assert out.task_index == [0, 1, 1, 1, 1, 2]
    assert out.sft_weight[demo].tolist() == [1.0, 1.0]
    assert torch.all(out.policy_advantages[demo] == 0)
    # RL rows: Dr.GRPO (no std) over the four on-policy rollouts only; the demo (reward 1) is not in the mean
    r = torch.tensor(rewards[4:8])
    expect = (r - r.mean())[:, None] * out.loss_mask[~demo]
    assert torch.allclose(out.policy_advantages[~demo], expect)
    assert rec.row_active(out)[demo].all()

    # gamma=1: group 1 (2 correct) stays RL, a group with one correct switches to SFT
    rec1 = make_recipe({"name": "hpt", "gamma": 2})
    out1 = rec1.prepare(rollouts(rewards, [bool(c) for c in correct], 4), ctx())
    assert (out1.is_demo > 0).all() and len(out1) == 3


def test_hpt_soft_variant_keeps_weighted_rollouts_and_adds_demos():
    correct = [True] + [False] * 7 + [True] * 6 + [False] * 2
    rewards = [float(c) for c in correct]
    rec = make_recipe({"name": "hpt", "soft": "type1"})
    out = rec.prepare(rollouts(rewards, correct, 8), ctx())
    demo = out.is_demo > 0
    # 1 correct -> key 2 (count incl. demo) -> (on 0.125, sft 0.5); 6 correct -> key 7 -> (1, 0): no demo
    assert demo.sum() == 1 and len(out) == 17 and out.sft_weight[demo].item() == 0.5
    a0 = out.policy_advantages[:8].sum(1) / out.loss_mask[:8].sum(1)
    r = torch.tensor(rewards[:8])
    assert torch.allclose(a0, 0.125 * (r - r.mean()))


def test_hpt_loss_terms_use_their_own_normalisers():
    rec = make_recipe({"name": "hpt"})
    b = rec.prepare(rollouts([0.0] * 4 + [1.0, 0.0, 1.0, 0.5], [False] * 4 + [True, False, True, False], 4), ctx())
    logp = (b.rollout_logp - 0.1 * b.loss_mask).clone().requires_grad_(True)
    norm = Norm(num_tokens=float(b.loss_mask.sum()), num_seqs=float(len(b)), loss_scale_factor=8.0, batch=b)
    loss, m = rec.loss(b, ForwardOut(logp=logp, entropy=torch.zeros_like(logp)), norm)
    demo = b.is_demo > 0
    sft = (-(logp * b.loss_mask)[demo].sum() / b.loss_mask[demo].sum()).item()
    assert m["actor/sft_loss"] == pytest.approx(sft, rel=1e-5)
    rho = torch.exp(logp - b.rollout_logp)[~demo]
    a = b.advantages[~demo]
    pg = torch.maximum(-a * rho, -a * rho.clamp(0.8, 1.28)) * b.loss_mask[~demo]
    assert m["actor/pg_loss"] == pytest.approx((pg.sum() / (8.0 * 4)).item(), rel=1e-5)  # Σ/(T_max·B_rl)
    assert loss.item() == pytest.approx(m["actor/sft_loss"] + m["actor/pg_loss"], rel=1e-5)


def test_dr_grpo_divides_by_rows_times_tmax():
    rec = make_recipe({"name": "dr_grpo"})
    b = rec.prepare(rollouts([1.0, 0.0, 0.0, 0.5], [True, False, False, False], 4), ctx())
    logp = b.rollout_logp.clone().requires_grad_(True)
    norm = Norm(num_tokens=float(b.loss_mask.sum()), num_seqs=4.0, loss_scale_factor=8.0, batch=b)
    loss, _ = rec.loss(b, ForwardOut(logp=logp), norm)
    assert loss.item() == pytest.approx(-(b.advantages * b.loss_mask).sum().item() / (4 * 8.0), abs=1e-7)


def test_dapo_overlong_shaping_scales_with_max_new_tokens_and_filter_keeps_mixed_groups():
    rec = make_recipe({"name": "dapo"})
    b = rollouts([1.0] * 4 + [0.0, 1.0, 0.0, 1.0], [True] * 4 + [False, True, False, True], 4, resp_len=8)
    keep = rec.filter_rows(b)
    assert keep.tolist() == [4, 5, 6, 7]
    out = rec.prepare(b, ctx())  # L_max 8, L_buf 8//5 = 1 -> -1 at length 8, 0 up to 7
    assert out.extras["overlong_penalty"].tolist() == [-1.0 if n == 8 else 0.0 for n in b.response_valid.sum(1).tolist()]


def test_entropy_adv_shapes_with_the_current_forward_entropy():
    from reasonrl.algorithms.advantages import entropy_shaped

    grpo, ent = make_recipe({"name": "grpo"}), make_recipe({"name": "grpo_entropy_adv"})
    b = grpo.prepare(rollouts([1.0, 0.0, 0.0, 0.5], [True, False, False, False], 4), ctx())
    logp = b.rollout_logp.clone().requires_grad_(True)
    h = torch.rand_like(logp) * 3
    norm = Norm(num_tokens=float(b.loss_mask.sum()), num_seqs=4.0, loss_scale_factor=8.0, batch=b)
    got, _ = ent.loss(b.select(range(4)), ForwardOut(logp=logp, entropy=h), norm)
    shaped = b.select(range(4))
    shaped.advantages = entropy_shaped(b.advantages, h, b.loss_mask, 0.4, 2.0)
    want, _ = grpo.loss(shaped, ForwardOut(logp=logp, entropy=h), norm)
    assert got.item() == pytest.approx(want.item(), rel=1e-6) and got.item() != 0


def test_reinforce_pp_kl_controller_state_round_trips():
    a = make_recipe({"name": "reinforce_pp", "kl_adaptive": True})
    a.kl_ctl.update(0.5, 100)
    b = make_recipe({"name": "reinforce_pp", "kl_adaptive": True})
    b.load_state_dict(a.state_dict())
    assert b.kl_ctl.value == a.kl_ctl.value != 0.001


# ------------------------------------------------------------------ on the trainer


def test_dapo_filter_error_names_the_fix_when_the_limit_is_hit(model_dir, tmp_path):
    from reasonrl.trainer.loop import TrainingError

    tr = make_trainer(model_dir, tmp_path, "dapo", "algorithm.max_gen_batches=2", fake_correct=False)
    with pytest.raises(TrainingError) as e:  # an untrained model gets every answer wrong: no mixed group
        tr.collect()
    assert "algorithm.max_gen_batches=2" in str(e.value) and "raise algorithm.max_gen_batches" in str(e.value)
    assert tr.cursor == 2 * 4  # exactly two generation rounds were spent


def test_dapo_batch_holds_only_mixed_groups(model_dir, tmp_path):
    tr = make_trainer(model_dir, tmp_path, "dapo", "algorithm.max_gen_batches=0")
    batch, _, m = tr.collect()
    assert len(batch) == 4 * 4
    for g in batch.group_ids.unique():
        c = [batch.info["correct"][i] for i in (batch.group_ids == g).nonzero().flatten().tolist()]
        assert any(c) and not all(c)
    assert m["batch/gen_rounds"] >= 1


def test_minibatches_are_whole_groups_when_a_recipe_changes_row_counts(model_dir, tmp_path):
    tr = make_trainer(model_dir, tmp_path, "hpt", "trainer.mini_batch_prompts=2", "trainer.micro_batch=3")
    seen = []
    inner = tr.recipe.loss

    def spy(mb, out, norm):
        seen.append(norm.batch.group_ids.tolist())
        return inner(mb, out, norm)

    tr.recipe.loss = spy
    batch, tasks, _ = tr.collect()
    tr.update(batch, tasks)
    assert tr.opt_steps == 2
    groups = [set(g) for g in {tuple(s) for s in seen}]
    assert len(groups) <= 2 and all(not (a & b) for a in groups for b in groups if a is not b)
    assert any(g < 0 for s in seen for g in s), "expected at least one demonstration row (all-wrong group)"


def test_flowrl_head_is_checkpointed_and_restored_on_resume(model_dir, tmp_path):
    from reasonrl.trainer.checkpoint import load_trainer_state

    tr = make_trainer(model_dir, tmp_path, "flowrl")
    init = snapshot(tr.modules)
    assert set(init) and all(k.startswith("log_z.") for k in init)
    n_params = sum(1 for g in tr.opt.param_groups for _ in g["params"])
    assert n_params == len(list(tr.model.parameters())) + len(list(tr.modules.parameters()))
    train_steps(tr, 1)
    trained = snapshot(tr.modules)
    assert changed(init, tr.modules)
    ck = tr.save_checkpoint()
    st = load_trainer_state(ck)
    assert all(torch.equal(st["modules"][k], trained[k]) for k in trained)

    fresh = make_trainer(model_dir, tmp_path, "flowrl")
    assert not changed(init, fresh.modules)  # a new run starts from the seeded init ...
    assert fresh.try_resume(required=True)
    assert not changed(trained, fresh.modules) and fresh.step == 1  # ... and resume restores the trained head
    head = fresh.modules["log_z"].net[-1].weight
    assert fresh.opt.state[head]["step"] == tr.opt.state[tr.modules["log_z"].net[-1].weight]["step"]


def test_flowrl_runs_from_the_cli(model_dir, tmp_path):
    from reasonrl.cli.main import main

    over = tiny_overrides(model_dir, tmp_path) + ["trainer.steps=1", "eval.k=1", "data.eval_size=2",
                                                  "trainer.tensorboard=false", "algorithm.name=flowrl"]
    assert main(["train", *over]) == 0
    assert (tmp_path / "t" / "final" / "config.json").exists()


def test_sft_trains_on_one_demonstration_per_prompt():
    out = make_recipe({"name": "sft"}).prepare(rollouts([0.0] * 8, [False] * 8, 4), ctx())
    assert len(out) == 2 and out.task_index == [0, 1] and out.response_ids.shape[1] == 7
