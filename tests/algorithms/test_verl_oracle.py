"""reasonrl against veRL's own outputs on the spec §7 random batch (fixtures made by
``verl_oracle/make_fixtures.py`` from the veRL 0.9.1 wheel, plus 0.8.0 / 0.7.0 for the older forms).

Tolerance 1e-9 (float64), except ``seq-mean-token-mean`` where veRL divides by L + 1e-8 and we by L.
"""

from pathlib import Path

import pytest
import torch

import reasonrl.algorithms as R

FIX = torch.load(Path(__file__).parent / "verl_oracle" / "verl_fixtures.pt", weights_only=True)
SEEDS = sorted(FIX["seeds"])
AGG = ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def close(a, b, atol=1e-9):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                               rtol=0, atol=atol)


@pytest.fixture(params=SEEDS)
def case(request):
    c = FIX["seeds"][request.param]
    return c["inputs"], c["outputs"]


@pytest.mark.parametrize("mode", AGG)
def test_agg_loss_matches_verl_091(case, mode):
    i, o = case
    atol = 1e-8 if mode == "seq-mean-token-mean" else 1e-9
    close(R.agg_loss(i["x"], i["mask"], mode), o[f"agg/{mode}"], atol)
    close(R.agg_loss(i["x"], i["mask"], mode, num_tokens=40, num_seqs=20, loss_scale_factor=9, dp_size=2),
          o[f"agg_global/{mode}"], atol)


def test_older_verl_forms_are_the_options():
    i = FIX["seeds"][0]["inputs"]
    close(R.agg_loss(i["x"], i["mask"], "seq-mean-token-sum-norm", batch_divisor="none"),
          FIX["older"]["0.7.0/agg/seq-mean-token-sum-norm"])
    adv, ret = R.reinforce_pp(i["rpp_rewards"], i["interior"], 0.9, reset_at_mask=True)
    close(adv, FIX["older"]["0.8.0/rpp/interior/adv"])
    close(ret, FIX["older"]["0.8.0/rpp/interior/returns"])


def test_helpers_and_kl_match_verl_091(case):
    i, o = case
    m = i["mask"]
    close(R.masked_whiten(i["x"], m) * m, o["whiten"])
    close(R.entropy_from_logits(i["logits"]), o["entropy"])
    for k in ["k1", "abs", "k2", "k3", "k1+", "k3+", "abs+"]:
        lp = i["logp"].clone().requires_grad_(True)
        v = R.kl_penalty(lp, i["ref"], k)
        (v * m).sum().backward()
        close(v.detach(), o[f"kl/{k}"])
        close(lp.grad, o[f"kl_grad/{k}"])


def test_advantages_match_verl_091(case):
    i, o = case
    m, g = i["mask"], i["group_ids"]
    adv, ret = R.gae(i["token_rewards"], i["values"], m, 0.9, 0.8)
    close(adv, o["gae/adv"])
    close(ret, o["gae/returns"])
    close(R.grpo(i["token_rewards"], g, m)[0], o["grpo/True"])
    close(R.grpo(i["token_rewards"], g, m, norm_by_std=False)[0], o["grpo/False"])
    close(R.rloo(i["token_rewards"], g, m)[0], o["rloo"])
    for name in ("mask", "interior"):  # right padding, and a masked span inside a response
        adv, ret = R.reinforce_pp(i["rpp_rewards"], i[name], 0.9)
        close(adv, o[f"rpp/{name}/adv"])
        close(ret, o[f"rpp/{name}/returns"])
    close(R.reinforce_pp_baseline(i["token_rewards"], g, m)[0], o["rpp_baseline"])


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_ppo_and_value_loss_match_verl_091(case, mode):
    i, o = case
    m = i["mask"]
    lp = i["logp"].clone().requires_grad_(True)
    loss, met = R.ppo_clip_loss(lp, i["old"], o["ppo_adv"], m, 0.2, 0.28, clip_c=3.0, agg=mode)
    loss.backward()
    atol = 1e-8 if mode == "seq-mean-token-mean" else 1e-9
    close(loss.detach(), o[f"ppo/{mode}"], atol)
    close(lp.grad, o[f"ppo_grad/{mode}"], atol)
    close(torch.stack([met["clipfrac"], met["clipfrac_lower"]]), o[f"ppo_clipfrac/{mode}"], 1e-6)
    vl, _ = R.value_loss(i["vpred"], o["value_returns"], i["values"], m, clip=0.5)
    close(vl, o["value_loss"])
