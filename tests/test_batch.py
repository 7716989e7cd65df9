"""Typed optional batch fields: they follow rows through select/trim/concat, and stages add, never overwrite."""

import pytest
import torch

from reasonrl.batch import ROW_FIELDS, TOKEN_FIELDS, Rollouts, concat


def _ro(b: int, tr: int, **typed) -> Rollouts:
    mask = torch.ones(b, tr)
    mask[:, -1] = 0  # last column is padding: trim drops it
    return Rollouts(prompt_ids=torch.ones(b, 2, dtype=torch.long), prompt_mask=torch.ones(b, 2, dtype=torch.long),
                    response_ids=torch.ones(b, tr, dtype=torch.long), loss_mask=mask, rollout_logp=torch.zeros(b, tr),
                    group_ids=torch.arange(b), task_index=list(range(b)), response_text=[""] * b,
                    truncated=torch.zeros(b, dtype=torch.bool), **typed)


def test_typed_fields_follow_rows_through_select_trim_and_concat():
    adv = torch.arange(12.0).view(3, 4)
    a = _ro(3, 4, advantages=adv, is_demo=torch.tensor([0.0, 1.0, 0.0]))
    s = a.select([2, 0])
    assert torch.equal(s.advantages, adv[[2, 0]]) and s.is_demo.tolist() == [0.0, 0.0] and s.ref_logp is None
    t = a.trim()
    assert t.advantages.shape == (3, 3) and torch.equal(t.advantages, adv[:, :3]) and t.is_demo.shape == (3,)
    b = _ro(1, 6, advantages=torch.ones(1, 6), is_demo=torch.ones(1))
    c = concat([a, b], pad_id=0)
    assert c.advantages.shape == (4, 6) and c.advantages[:3, 4:].abs().sum() == 0  # right-padded with 0
    assert c.is_demo.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert set(a.set_fields()) == {"advantages", "is_demo"} and set(a.set_fields()) <= set(TOKEN_FIELDS + ROW_FIELDS)
    with pytest.raises(ValueError, match="'advantages'"):
        concat([a, _ro(1, 4)], pad_id=0)


def test_valid_mask_defaults_to_the_loss_mask_and_concat_fills_it():
    a = _ro(2, 3)
    assert a.response_valid is a.loss_mask
    valid = torch.ones(1, 3)
    b = _ro(1, 3, valid_mask=valid)
    c = concat([a, b], pad_id=0)
    assert torch.equal(c.response_valid, torch.cat([a.loss_mask, valid]))


def test_shaped_advantages_are_added_beside_the_estimators():
    from reasonrl.algorithms.recipes import StepContext, make_recipe

    ro = _ro(4, 3, rewards=torch.tensor([1.0, 0.0, 1.0, 0.0]))
    ro.group_ids = torch.tensor([0, 0, 1, 1])
    ro.info["correct"] = [True, False, True, False]
    out = make_recipe({"name": "hpt", "soft": None}).prepare(
        ro, StepContext(forward=None, demo_rows=None, tasks=[], step=0, max_new_tokens=3))
    assert out.advantages is not None and out.shaped_advantages is not None
    assert torch.equal(out.policy_advantages, out.shaped_advantages)
    dapo = make_recipe({"name": "dapo"})
    ro2 = _ro(2, 3, rewards=torch.tensor([1.0, 0.0]))
    ro2.group_ids = torch.tensor([0, 0])
    before = ro2.rewards.clone()
    dapo.prepare(ro2, StepContext(forward=None, demo_rows=None, tasks=[], step=0, max_new_tokens=2))
    assert torch.equal(ro2.rewards, before)  # the overlong penalty shapes the advantages, not the scored rewards
    assert ro2.extras["overlong_penalty"].tolist() == [-1.0, -1.0] and dapo.max_gen_batches == 10
    assert make_recipe({"name": "grpo"}).max_gen_batches == 1
