"""Regenerate ``verl_fixtures.pt``: outputs of veRL's own functions on fixed inputs (spec §7).

No veRL code lives in this repository. This script reads the function definitions out of unpacked
veRL wheels at generation time (``ast``; decorators dropped, veRL's heavy imports replaced by the
few names the functions use), runs them on the spec §7 random batch and saves inputs and outputs.
``tests/algorithms/test_verl_oracle.py`` then compares reasonrl against the saved outputs.

    pip download --no-deps verl==0.9.1 -d /tmp/w091 && unzip -q /tmp/w091/*.whl -d /tmp/v091
    (same for 0.8.0 and 0.7.0)
    PYTHONPATH=src python tests/algorithms/verl_oracle/make_fixtures.py /tmp/v091 /tmp/v080 /tmp/v070
"""

import ast
import sys
import types
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _algo_data import make_random_batch  # noqa: E402

TF = ["masked_sum", "masked_mean", "masked_var", "masked_whiten", "entropy_from_logits", "clip_by_value"]
CA = ["agg_loss", "kl_penalty", "kl_penalty_forward", "compute_gae_advantage_return", "compute_grpo_outcome_advantage",
      "compute_rloo_outcome_advantage", "compute_reinforce_plus_plus_outcome_advantage",
      "compute_reinforce_plus_plus_baseline_outcome_advantage", "compute_policy_loss_vanilla", "compute_value_loss"]
KL = ["k1", "abs", "k2", "k3", "k1+", "k3+", "abs+"]
AGG = ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


class AlgoConfig:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class ActorConfig(dict):
    def __getattr__(self, k):
        return self[k]


def load(root: Path, names: list[str], module: str, ns: dict) -> dict:
    tree = ast.parse((root / "verl" / module).read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            node.decorator_list = []
            exec(compile(ast.Module(body=[node], type_ignores=[]), module, "exec"), ns)
    return ns


def verl(root: Path, ca_names=CA) -> dict:
    tf = load(root, [n for n in TF], "utils/torch_functional.py", {"torch": torch})
    vf = types.SimpleNamespace(**{k: tf[k] for k in TF if k in tf})
    ns = {"torch": torch, "np": np, "defaultdict": defaultdict, "Optional": Optional, "Any": Any, "Callable": Callable,
          "verl_F": vf, "AlgoConfig": AlgoConfig, "ActorConfig": ActorConfig}
    return load(root, ca_names, "trainer/ppo/core_algos.py", ns)


def batch_inputs(seed: int) -> dict:
    b = make_random_batch(seed, V=8)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(12, 16, dtype=torch.float64, generator=g)
    interior = b.mask.clone()
    interior[5, 4:7] = 0  # a masked (tool) span inside the full-length row
    rewards = b.token_rewards.clone()
    rewards[3, 0] += 0.5  # a mid-sequence reward so discounting matters
    return {"x": x, "mask": b.mask, "interior": interior, "logp": b.logp, "old": b.old_logp, "ref": b.ref_logp,
            "token_rewards": b.token_rewards, "rpp_rewards": rewards, "group_ids": b.group_ids, "values": b.values,
            "logits": b.logits, "vpred": b.values + 0.7 * torch.randn(12, 16, dtype=torch.float64, generator=g)}


def outputs_091(C: dict, i: dict) -> dict:
    m, x = i["mask"], i["x"]
    uid = np.array([str(int(u)) for u in i["group_ids"]], dtype=object)
    out = {}
    for mode in AGG:
        out[f"agg/{mode}"] = C["agg_loss"](x, m, mode)
        out[f"agg_global/{mode}"] = C["agg_loss"](x, m, mode, dp_size=2, batch_num_tokens=40, global_batch_size=20,
                                                  loss_scale_factor=9)
    out["whiten"] = C["verl_F"].masked_whiten(x, m) * m
    out["entropy"] = C["verl_F"].entropy_from_logits(i["logits"])
    for k in KL:
        lp = i["logp"].clone().requires_grad_(True)
        v = C["kl_penalty"](lp, i["ref"], k)
        (v * m).sum().backward()
        out[f"kl/{k}"], out[f"kl_grad/{k}"] = v.detach(), lp.grad
    adv, ret = C["compute_gae_advantage_return"](i["token_rewards"], i["values"], m, 0.9, 0.8)
    out["gae/adv"], out["gae/returns"] = adv * m, ret * m
    for std in (True, False):
        out[f"grpo/{std}"] = C["compute_grpo_outcome_advantage"](i["token_rewards"], m, uid, 1e-6, std)[0]
    out["rloo"] = C["compute_rloo_outcome_advantage"](i["token_rewards"], m, uid)[0]
    for name in ("mask", "interior"):
        a, r = C["compute_reinforce_plus_plus_outcome_advantage"](i["rpp_rewards"], i[name], AlgoConfig(gamma=0.9))
        out[f"rpp/{name}/adv"], out[f"rpp/{name}/returns"] = a, r * i[name]
    out["rpp_baseline"] = C["compute_reinforce_plus_plus_baseline_outcome_advantage"](i["token_rewards"], m, uid)[0]
    adv = out["grpo/True"] + 0.3 * x * m
    out["ppo_adv"] = adv
    cfg = ActorConfig(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0, global_batch_info={})
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        lp = i["logp"].clone().requires_grad_(True)
        loss, met = C["compute_policy_loss_vanilla"](i["old"], lp, adv, m, mode, cfg)
        loss.backward()
        out[f"ppo/{mode}"], out[f"ppo_grad/{mode}"] = loss.detach(), lp.grad
        out[f"ppo_clipfrac/{mode}"] = torch.tensor([met["actor/pg_clipfrac"], met["actor/pg_clipfrac_lower"]])
    ret = i["values"] + 0.5 * x
    out["value_returns"] = ret
    out["value_loss"] = C["compute_value_loss"](i["vpred"], ret, i["values"], m, 0.5, "token-mean")[0]
    return out


def main(v091: str, v080: str, v070: str) -> None:
    C = verl(Path(v091))
    C["verl_F"] = types.SimpleNamespace(**load(Path(v091), TF, "utils/torch_functional.py", {"torch": torch}))
    seeds = {}
    for seed in range(2):
        i = batch_inputs(seed)
        seeds[seed] = {"inputs": i, "outputs": {k: v.detach().clone() for k, v in outputs_091(C, i).items()}}
    old = {}
    i = seeds[0]["inputs"]
    C080 = verl(Path(v080), ["compute_reinforce_plus_plus_outcome_advantage"])
    a, r = C080["compute_reinforce_plus_plus_outcome_advantage"](i["rpp_rewards"], i["interior"], AlgoConfig(gamma=0.9))
    old["0.8.0/rpp/interior/adv"], old["0.8.0/rpp/interior/returns"] = a, r * i["interior"]
    C070 = verl(Path(v070), ["agg_loss"])
    old["0.7.0/agg/seq-mean-token-sum-norm"] = C070["agg_loss"](i["x"], i["mask"], "seq-mean-token-sum-norm")
    torch.save({"verl": "0.9.1", "seeds": seeds, "older": old}, HERE / "verl_fixtures.pt")


if __name__ == "__main__":
    main(*sys.argv[1:4])
