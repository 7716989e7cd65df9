"""Golden values for every registered recipe: one fixed batch, the loss and a few gradients pinned.

The batch: 3 prompts × 3 rollouts with ragged responses (one empty), a left-padded prompt, partial
and all-wrong groups, and old log-probs shifted so that PPO ratios leave the clip range on both
sides. The "policy" is a tiny bigram model (embedding E, output W) so gradients reach real
parameters, and the recipe's own heads (PPO's value head, FlowRL's log Z) get fixed weights.

Every recipe runs through its public API only (``make_recipe``, ``prepare``, ``loss``), with the
normalisers the trainer builds. The expected value of each recipe is written again below with
plain torch ops from the formulas of ``specs/algorithms.md`` (not by calling the library), and its
autograd gradient is the expected gradient. The expected values are also pinned as numbers, so a
sign flip or a wrong normaliser in either the recipe or this file's formula fails.
"""

import math
import types

import pytest
import torch
from torch import nn

from reasonrl.algorithms.recipes import REGISTRY, ForwardOut, Norm, StepContext, make_recipe
from reasonrl.batch import Rollouts

D = torch.float64
V, H, TP, T = 6, 3, 2, 4
T_MAX = 5  # rollout.max_new_tokens: the constant of the Σ/T_max normalisers (deliberately ≠ padded width T)

PROMPTS = [[0, 3], [2, 4], [5, 1]]  # prompt 0 is left-padded (pad id 0)
PMASK = [[0, 1], [1, 1], [1, 1]]
RESP = [[1, 4, 2, 5], [3, 3, 0, 0], [0, 0, 0, 0],
        [2, 5, 1, 0], [4, 0, 0, 0], [5, 2, 2, 3],
        [1, 3, 0, 0], [4, 4, 5, 0], [2, 0, 0, 0]]
LENGTHS = [4, 2, 0, 3, 1, 4, 2, 3, 1]  # row 2: empty response
REWARDS = [1.0, 0.0, 0.0, 0.0, 0.2, 0.0, 1.0, 0.5, 1.0]
CORRECT = [True, False, False, False, False, False, True, False, True]  # group 1 solved by nobody
GROUPS = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
SHIFT = [-0.35, 0.25, -0.15, 0.05]  # old_logp = logp - SHIFT[(i + t) % 4]: ratios 0.78 ... 1.42
DEMOS = {0: [2, 1, 5], 1: [3, 4, 4, 1], 2: [5, 5]}  # worked demonstrations per task


class Bigram(nn.Module):
    """logits_t = E[token before t] @ W; hidden state of a position = E[its token]."""

    def __init__(self, ref: bool = False):
        super().__init__()
        e = torch.sin(torch.arange(V * H, dtype=D) * 0.7 + 0.3).view(V, H) * 0.8
        w = torch.cos(torch.arange(H * V, dtype=D) * 0.9 + 0.1).view(H, V)
        if ref:  # a different, frozen reference policy
            e, w = e + 0.2 * torch.cos(torch.arange(V * H, dtype=D)).view(V, H), 0.7 * w
        self.E, self.W = nn.Parameter(e), nn.Parameter(w)
        self.config = types.SimpleNamespace(hidden_size=H)

    def forward(self, prompt_ids, response_ids):
        ctx = torch.cat([prompt_ids[:, -1:], response_ids[:, :-1]], dim=1)
        lsm = torch.log_softmax(self.E[ctx] @ self.W, dim=-1)
        logp = lsm.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
        ent = -(lsm.exp() * lsm).sum(-1)
        return logp, ent, self.E[torch.cat([prompt_ids, response_ids], dim=1)]


def _fixed_(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for k, p in enumerate(module.parameters()):
            p.copy_(torch.linspace(-0.6, 0.4, p.numel(), dtype=p.dtype).view_as(p) + 0.1 * k)
    return module


def _mask(lengths, width):
    return (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).to(D)


P_IDS = torch.tensor([PROMPTS[i // 3] for i in range(9)])
P_MASK = torch.tensor([PMASK[i // 3] for i in range(9)])
R_IDS = torch.tensor(RESP)
M = _mask(LENGTHS, T)
with torch.no_grad():
    OLD = (Bigram()(P_IDS, R_IDS)[0] - torch.tensor([[SHIFT[(i + t) % 4] for t in range(T)] for i in range(9)], dtype=D)) * M
    REF = Bigram(ref=True)(P_IDS, R_IDS)[0]


def _set_ref(batch: Rollouts, ref: torch.Tensor) -> None:
    if "ref_logp" in getattr(type(batch), "__dataclass_fields__", {}):
        batch.ref_logp = ref
    else:
        batch.extras["ref_logp"] = ref


def rollouts() -> Rollouts:
    return Rollouts(prompt_ids=P_IDS.clone(), prompt_mask=P_MASK.clone(), response_ids=R_IDS.clone(), loss_mask=M.clone(),
                    rollout_logp=OLD.clone(), group_ids=torch.tensor([i // 3 for i in range(9)]),
                    task_index=[i // 3 for i in range(9)], response_text=["r"] * 9,
                    truncated=torch.zeros(9, dtype=torch.bool), rewards=torch.tensor(REWARDS, dtype=torch.float32),
                    info={"correct": list(CORRECT)})


def demo_ids(tasks):
    width = max(len(DEMOS[k]) for k in tasks)
    ids = torch.tensor([DEMOS[k] + [0] * (width - len(DEMOS[k])) for k in tasks])
    return torch.tensor([PROMPTS[k] for k in tasks]), torch.tensor([PMASK[k] for k in tasks]), ids, \
        _mask([len(DEMOS[k]) for k in tasks], width)


def run_recipe(params: dict):
    """The trainer's sequence for one mini-batch held in one micro-batch; returns (loss, grads)."""
    rec = make_recipe(params)
    policy = Bigram()
    ref_model = Bigram(ref=True)
    mods = {k: _fixed_(m.to(D)) for k, m in rec.modules(policy).items()}

    def fwd(b, grad=True):
        with torch.set_grad_enabled(grad):
            logp, ent, hidden = policy(b.prompt_ids, b.response_ids)
        return ForwardOut(logp=logp, entropy=ent, hidden=hidden if rec.needs_hidden() else None, modules=mods)

    def demo_rows(tasks):
        p, pm, ids, m = demo_ids(list(tasks))
        with torch.no_grad():
            logp = policy(p, ids)[0] * m
        return Rollouts(prompt_ids=p, prompt_mask=pm, response_ids=ids, loss_mask=m, rollout_logp=logp,
                        group_ids=torch.tensor([-1 - k for k in tasks]), task_index=list(tasks),
                        response_text=["d"] * len(tasks), truncated=torch.zeros(len(tasks), dtype=torch.bool),
                        rewards=torch.ones(len(tasks)), info={"correct": [True] * len(tasks)})

    def reference(b):
        with torch.no_grad():
            return ref_model(b.prompt_ids, b.response_ids)[0]

    batch = rollouts()
    keep = rec.filter_rows(batch)
    if keep is not None:
        batch = batch.select(keep)
    if rec.needs_reference():
        _set_ref(batch, reference(batch))
    ctx = StepContext(forward=lambda b: fwd(b, grad=False), demo_rows=demo_rows, tasks=[], step=0,
                      reference=reference if rec.needs_reference() else None, max_new_tokens=T_MAX, pad_id=0)
    batch = rec.prepare(batch, ctx)
    mask = batch.loss_mask.float()
    norm = Norm(num_tokens=float(mask.sum()), num_seqs=float((mask.sum(1) > 0).sum()), loss_scale_factor=float(T_MAX),
                batch=batch)
    loss, _ = rec.loss(batch, fwd(batch), norm)
    loss.backward()
    grads = {"W": policy.W.grad, "E": policy.E.grad}
    grads.update({f"{k}[{j}]": p.grad for k, m in mods.items() for j, p in enumerate(m.parameters())})
    return loss.detach(), grads


# ------------------------------------------------------------------ the formulas, written again


def token_mean(x, m):
    return (x * m).sum() / m.sum()


def group_adv(s, groups, std=True, rloo=False):
    a = torch.zeros_like(s)
    for g in groups:
        x = s[g]
        if rloo:
            a[g] = (x - x.mean()) * len(g) / (len(g) - 1)
        else:
            a[g] = (x - x.mean()) / (x.std() + 1e-6) if std else x - x.mean()
    return a


def clip_loss(logp, old, adv, lo=0.2, hi=0.28):
    rho = torch.exp(logp - old)
    return torch.maximum(-adv * rho, -adv * rho.clamp(1 - lo, 1 + hi))


def whiten(x, m):
    vals = x[m > 0]
    return (x - vals.mean()) / torch.sqrt(vals.var() + 1e-8) * m


def outcome_tokens(r, m):
    out = torch.zeros_like(m)
    for i, n in enumerate(m.sum(1).long().tolist()):
        if n:
            out[i, n - 1] = r[i]
    return out


def return_to_go(r, m):
    return torch.flip(torch.cumsum(torch.flip(r * m, [1]), 1), [1]) * m


def expected(name: str):
    """(loss, grads) from the spec's formulas with plain torch ops on a fresh copy of the model."""
    policy = Bigram()
    logp, ent, hidden = policy(P_IDS, R_IDS)
    m, r = M, torch.tensor(REWARDS, dtype=D)
    lens = m.sum(1)
    nonempty = lens > 0
    heads = {}

    def grpo_pg(adv_rows, lo=0.2, hi=0.28):
        return token_mean(clip_loss(logp, OLD, adv_rows[:, None] * m, lo, hi), m)

    if name in ("grpo", "grpo_kl_ent", "grpo_sum_norm", "grpo_entropy_adv"):
        a = group_adv(r, GROUPS)[:, None] * m
        if name == "grpo_entropy_adv":
            a = (a + torch.minimum(0.4 * ent.detach(), a.abs() / 2)) * m
        tok = clip_loss(logp, OLD, a)
        if name == "grpo_sum_norm":  # veRL 0.9.1: row sums / non-empty rows / T_max
            loss = (tok * m).sum() / nonempty.sum() / T_MAX
        else:
            loss = token_mean(tok, m)
        if name == "grpo_kl_ent":
            d = REF - logp
            loss = loss + 0.1 * token_mean(torch.exp(d) - d - 1, m) - 0.01 * token_mean(ent, m)
    elif name == "dr_grpo":
        loss = (clip_loss(logp, OLD, group_adv(r, GROUPS, std=False)[:, None] * m) * m).sum() / (9 * T_MAX)
    elif name == "dapo":
        keep = [0, 1, 2, 6, 7, 8]  # group 1 has no correct sample: dropped by dynamic sampling
        pen = torch.clamp(-(lens - (T_MAX - 2)) / 2, max=0.0)  # L_max = T_MAX, L_buf = 2
        a = group_adv(r + pen, GROUPS)[:, None] * m
        mk = m[keep]
        loss = token_mean(clip_loss(logp[keep], OLD[keep], a[keep]), mk)
    elif name == "rloo":
        loss = grpo_pg(group_adv(r, GROUPS, rloo=True))
    elif name in ("reinforce_pp", "reinforce_pp_baseline"):
        tok_r = outcome_tokens(r, m) - 0.001 * (OLD - REF) * m  # k1 KL folded into the reward
        if name == "reinforce_pp":
            a = whiten(return_to_go(tok_r, m), m)
        else:
            s = tok_r.sum(1)
            a = whiten((s - torch.stack([s[g].mean() for g in GROUPS]).repeat_interleave(3))[:, None] * m, m)
        loss = token_mean(clip_loss(logp, OLD, a), m)
    elif name == "gspo":
        a = group_adv(r, GROUPS)
        s = torch.exp(((logp - OLD) * m).sum(1) / lens.clamp(min=1))
        per_seq = torch.maximum(-a * s, -a * s.clamp(1 - 3e-4, 1 + 4e-4))
        loss = per_seq[nonempty].sum() / nonempty.sum()
    elif name in ("ppo", "ppo_entropy_adv"):
        head = _fixed_(nn.Linear(H, 1).to(D))
        heads["value_head"] = head
        h = hidden[:, TP - 1: TP - 1 + T].detach()
        v_old = (h @ head.weight.detach().T).squeeze(-1).add(head.bias.detach()) * m
        ret = return_to_go(outcome_tokens(r, m), m)  # γ = λ = 1: GAE = return-to-go − V
        a = whiten((ret - v_old) * m, m)
        if name == "ppo_entropy_adv":
            a = (a + torch.minimum(0.1 * ent.detach(), a.abs() / 2)) * m
        v = (h @ head.weight.T).squeeze(-1) + head.bias
        v_clip = v_old + torch.clamp(v - v_old, -0.5, 0.5)
        vl = 0.5 * token_mean(torch.maximum((v - ret) ** 2, (v_clip - ret) ** 2), m)
        loss = token_mean(clip_loss(logp, OLD, a), m) + 0.5 * vl
    elif name == "flowrl":
        head = _fixed_(nn.Linear(H, 1).to(D))
        heads["log_z"] = head
        pm = P_MASK.to(D)
        pooled = (hidden[:, :TP] * pm[..., None]).sum(1) / pm.sum(1, keepdim=True)
        log_z = (pooled @ head.weight.T).squeeze(-1) + head.bias
        mean_logp = (logp * m).sum(1) / lens.clamp(min=1)
        mean_ref = (REF * m).sum(1) / lens.clamp(min=1)
        delta = log_z + mean_logp - 15.0 * group_adv(r, GROUPS) - mean_ref
        w = torch.exp(((logp - OLD) * m).sum(1).detach().clamp(math.log(0.8), math.log(1.2)))
        loss = (w * delta ** 2)[nonempty].sum() / nonempty.sum()
    elif name == "sft":
        p, _, ids, dm = demo_ids([0, 1, 2])
        loss = -token_mean(policy(p, ids)[0], dm)
    elif name == "rft":
        mc = m * torch.tensor(CORRECT, dtype=D)[:, None]
        loss = -token_mean(logp, mc)
    elif name == "hpt":
        rl = GROUPS[0] + GROUPS[2]  # group 1 (nobody correct) is replaced by its demonstration
        a = group_adv(r, GROUPS, std=False)[:, None] * m
        pg = (clip_loss(logp, OLD, a) * m)[rl].sum() / (len(rl) * T_MAX)
        p, _, ids, dm = demo_ids([1])
        loss = pg - token_mean(policy(p, ids)[0], dm)
    else:
        raise KeyError(name)
    loss.backward()
    grads = {"W": policy.W.grad, "E": policy.E.grad}
    grads.update({f"{k}[{j}]": p.grad for k, mod in heads.items() for j, p in enumerate(mod.parameters())})
    return loss.detach(), grads


# ------------------------------------------------------------------ cases and pinned numbers

CASES = {
    "grpo": {"name": "grpo"},
    "grpo_kl_ent": {"name": "grpo", "kl_coef": 0.1, "kl_type": "k3", "entropy_coef": 0.01},
    "grpo_sum_norm": {"name": "grpo", "loss_agg": "seq-mean-token-sum-norm"},
    "grpo_entropy_adv": {"name": "grpo_entropy_adv"},
    "dr_grpo": {"name": "dr_grpo"},
    "dapo": {"name": "dapo", "overlong_buffer_len": 2},
    "rloo": {"name": "rloo"},
    "reinforce_pp": {"name": "reinforce_pp"},
    "reinforce_pp_baseline": {"name": "reinforce_pp_baseline"},
    "gspo": {"name": "gspo"},
    "ppo": {"name": "ppo"},
    "ppo_entropy_adv": {"name": "ppo_entropy_adv"},
    "flowrl": {"name": "flowrl", "z_layers": 1},
    "sft": {"name": "sft"},
    "rft": {"name": "rft"},
    "hpt": {"name": "hpt"},
}

# (loss, dL/dW[0, 3], dL/dW[2, 5], dL/dE[4, 1], dL/d(head weight)[0, 0] or None) of the formulas above.
# Cross-checks that hold between them: grpo / grpo_sum_norm = (Σ/(8 rows·T_max)) / (Σ/20 tokens) = 2;
# ppo and ppo_entropy_adv share the value-head gradient (shaping touches the advantage only).
PINNED: dict[str, tuple] = {
    "dapo": (-0.09596851653, -0.02051932022, -0.03778694349, -0.149782533, None),
    "dr_grpo": (-0.01983150397, 2.727025166e-05, -0.002454983464, -0.01337026316, None),
    "flowrl": (138.7206869, 0.0694407687, -1.218760855, 0.5345783478, -0.3670619925),
    "grpo": (0.107594919, 0.002654783712, -0.03110495515, -0.0681150072, None),
    "grpo_entropy_adv": (-0.2868137017, -0.01761671792, -0.02163840404, -0.01600495611, None),
    "grpo_kl_ent": (0.0965784698, -0.001329556224, -0.03364344991, -0.07267274868, None),
    "grpo_sum_norm": (0.05379745952, 0.001327391856, -0.01555247757, -0.0340575036, None),
    "gspo": (0.00594048166, 0.005553187035, -0.02851309793, 0.08682217838, None),
    "hpt": (2.442790235, -0.0969595619, -0.09174512135, 0.09847127127, None),
    "ppo": (0.447873401, 0.03440411808, -0.02042250455, -0.000181324643, -0.2252963705),
    "ppo_entropy_adv": (0.3202114189, 0.02443277536, -0.02666924111, 0.007004372056, -0.2252963705),
    "reinforce_pp": (0.03754139852, 0.009054587668, -0.01956707498, -0.05132934887, None),
    "reinforce_pp_baseline": (0.03552912961, 0.01167493658, -0.0176812138, -0.1024109998, None),
    "rft": (1.954490501, -0.06880820759, -0.05132757474, -0.06624374807, None),
    "rloo": (-0.06693132589, 9.203709936e-05, -0.00828556919, -0.04512463815, None),
    "sft": (2.121396154, -0.06940876685, 0.06043039852, 0.05342282077, None),

}


def test_every_registered_recipe_has_a_golden_case():
    assert {c["name"] for c in CASES.values()} == set(REGISTRY)


@pytest.mark.parametrize("case", sorted(CASES))
def test_recipe_loss_and_gradients_match_the_spec_formulas(case):
    loss, grads = run_recipe(CASES[case])
    want_loss, want = expected(case)
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5, abs=1e-9), case  # advantages are fp32
    assert set(grads) == set(want), case
    for k in want:
        torch.testing.assert_close(grads[k], want[k], rtol=1e-5, atol=1e-8, msg=f"{case}: gradient of {k}")
    assert grads["W"].abs().sum() > 0, f"{case}: no policy gradient"


@pytest.mark.parametrize("case", sorted(CASES))
def test_spec_formulas_give_the_pinned_numbers(case):
    loss, grads = expected(case)
    head = next((g for k, g in grads.items() if k.endswith("[0]")), None)
    got = (loss.item(), grads["W"][0, 3].item(), grads["W"][2, 5].item(), grads["E"][4, 1].item(),
           None if head is None else head.flatten()[0].item())
    want = PINNED[case]
    assert got[-1] is None if want[-1] is None else got[-1] == pytest.approx(want[-1], rel=1e-7, abs=1e-12)
    assert got[:-1] == pytest.approx(want[:-1], rel=1e-7, abs=1e-12), case


def test_pinned_numbers_are_consistent_across_cases():
    assert PINNED["grpo"][0] / PINNED["grpo_sum_norm"][0] == pytest.approx(2.0, rel=1e-8)
    assert PINNED["ppo"][4] == PINNED["ppo_entropy_adv"][4]
