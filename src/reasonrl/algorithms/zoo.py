"""The named recipes of the unified policy-gradient core, each a short declaration (issue 3).

Every recipe below only *composes* the tested pure functions of ``advantages``, ``losses``,
``flowrl``, ``hpt`` and ``filters``; formulas, defaults and paper-vs-code notes are in
``specs/algorithms.md`` and ``docs/algorithms/``. GRPO, SFT and RFT live in ``recipes.py``; this
module is imported at the end of it so the registry is complete whichever module is imported first.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from reasonrl.algorithms.recipes import GRPO, ForwardOut, GRPOParams, Norm, RecipeParams, StepContext, register
from reasonrl.algorithms import advantages as A
from reasonrl.algorithms.filters import keep_mixed_groups
from reasonrl.algorithms.flowrl import FLOWRL_WEIGHT_MODES, LogZHead, flowrl_loss, pool_prompt
from reasonrl.algorithms.hpt import HPT_SOFT_TABLES, hpt_soft_coefficients, hpt_switch
from reasonrl.algorithms.losses import KL_KINDS, AdaptiveKL, FixedKL, gspo_loss, kl_in_reward, ppo_clip_loss, sft_nll, value_loss
from reasonrl.batch import Rollouts, concat

AggMode = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
Metrics = dict[str, float]


# ------------------------------------------------------------------------------------------ shared pieces
class ClipParams(RecipeParams):
    clip_low: float = Field(0.2, ge=0, description="PPO clip epsilon below 1.")
    clip_high: float = Field(0.28, ge=0, description="PPO clip epsilon above 1 (DAPO clip-higher; 0.2 = symmetric).")
    clip_c: float | None = Field(None, description="Dual-clip constant c > 1 for negative advantages (None = off).")


def _item(m: dict[str, Any], prefix: str = "actor/") -> Metrics:
    return {f"{prefix}{k}": float(v) for k, v in m.items()}


def _agg_kw(norm: Norm) -> dict[str, float]:
    return {"num_tokens": norm.num_tokens, "num_seqs": norm.num_seqs, "loss_scale_factor": norm.loss_scale_factor}


def _response_hidden(hidden: torch.Tensor, batch: Rollouts) -> torch.Tensor:
    """(B, Tp+Tr, d) → (B, Tr, d): the state *before* each response token (where V(s_t) lives)."""
    tp, tr = batch.prompt_ids.shape[1], batch.response_ids.shape[1]
    return hidden[:, tp - 1: tp - 1 + tr]


def _correct(batch: Rollouts) -> torch.Tensor:
    return torch.tensor([bool(c) for c in batch.info["correct"]], dtype=torch.float32)


class ValueHead(nn.Module):
    """Linear critic V(s_t) on the policy's last hidden state: PPO's critic without a second model."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.v = nn.Linear(hidden_size, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.v(h.to(self.v.weight.dtype)).squeeze(-1)


class _EntropyAdv:
    """Mixin: shape the advantage with the *current* forward's token entropy (arXiv 2506.14758, spec §3)."""

    def loss_advantages(self, mb: Rollouts, out: ForwardOut) -> torch.Tensor:
        return A.entropy_shaped(super().loss_advantages(mb, out), out.entropy, mb.loss_mask, self.p.alpha, self.p.kappa)


# ------------------------------------------------------------------------------------------ PPO
class PPOParams(ClipParams):
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount (veRL 0.9.1 default 1).")
    lam: float = Field(1.0, ge=0, le=1, description="GAE lambda (veRL 0.9.1 default 1).")
    vf_coef: float = Field(0.5, ge=0, description="Weight of the clipped value loss.")
    vf_clip: float | None = Field(0.5, description="Value clip range around the rollout-time values (None = off).")
    value_detach: bool = Field(True, description="Stop value-loss gradients at the hidden states, so the critic "
                                                 "never moves the policy (veRL uses a separate critic model).")


@register
class PPO(GRPO):
    name = "ppo"
    paper = "PPO, Schulman et al., arXiv 1707.06347; GAE, arXiv 1506.02438"
    formula = "A=whiten(GAE(r,V;gamma,lam)); L=agg(-min(rho*A, clip(rho)*A)) + vf_coef*0.5*agg(max((V-R)^2, (clip V-R)^2))"
    Params = PPOParams
    p: PPOParams

    def modules(self, policy: nn.Module) -> dict[str, nn.Module]:
        return {"value_head": ValueHead(policy.config.hidden_size).to(next(policy.parameters()).device)}

    def needs_hidden(self) -> bool:
        return True

    def prepare(self, batch: Rollouts, ctx: StepContext) -> Rollouts:
        fwd = ctx.forward(batch)
        with torch.no_grad():  # rollout-time values are constants (GAE targets, the value clip's centre), no graph
            values = fwd.modules["value_head"](_response_hidden(fwd.hidden, batch)).float() * batch.response_valid
        adv, ret = A.gae(batch.token_rewards(), values, batch.loss_mask, self.p.gamma, self.p.lam)
        batch.advantages = adv
        batch.extras.update(returns=ret, values=values)
        return batch

    def row_active(self, batch: Rollouts) -> torch.Tensor:
        return torch.ones(len(batch), dtype=torch.bool)  # the critic learns from every row

    def loss(self, mb: Rollouts, out: ForwardOut, norm: Norm) -> tuple[torch.Tensor, Metrics]:
        pg, metrics = super().loss(mb, out, norm)
        h = _response_hidden(out.hidden, mb)
        v = out.modules["value_head"](h.detach() if self.p.value_detach else h)
        vl, vm = value_loss(v, mb.extras["returns"], mb.extras["values"], mb.loss_mask.to(v.dtype), clip=self.p.vf_clip,
                            agg=self.p.loss_agg, **_agg_kw(norm))
        return pg + self.p.vf_coef * vl, {**metrics, "critic/vf_loss": vl.item(), **_item(vm, "critic/")}


class PPOEntParams(PPOParams):
    alpha: float = Field(0.1, ge=0, description="Entropy-advantage scale alpha (paper: 0.1 for PPO).")
    kappa: float = Field(2.0, gt=1, description="Cap |A|/kappa on the entropy term (kappa > 1 keeps A's sign).")


@register
class PPOEntropyAdv(_EntropyAdv, PPO):
    name = "ppo_entropy_adv"
    paper = "Reasoning with Exploration: An Entropy Perspective, Cheng et al., arXiv 2506.14758"
    formula = "PPO with A_t <- A_t + min(alpha*sg(H_t), |A_t|/kappa), H of the current forward; alpha=0.1, kappa=2"
    Params = PPOEntParams


# ------------------------------------------------------------------------------------------ GRPO family
class GRPOEntParams(GRPOParams):
    alpha: float = Field(0.4, ge=0, description="Entropy-advantage scale alpha (paper: 0.4 for GRPO).")
    kappa: float = Field(2.0, gt=1, description="Cap |A|/kappa on the entropy term (kappa > 1 keeps A's sign).")


@register
class GRPOEntropyAdv(_EntropyAdv, GRPO):
    name = "grpo_entropy_adv"
    paper = "Reasoning with Exploration: An Entropy Perspective, Cheng et al., arXiv 2506.14758"
    formula = "GRPO with A_t <- A_t + min(alpha*sg(H_t), |A_t|/kappa), H of the current forward; alpha=0.4, kappa=2"
    Params = GRPOEntParams


class DrGRPOParams(GRPOParams):
    norm_by_std: bool = Field(False, description="Divide by the group std (Dr.GRPO: no).")
    loss_agg: AggMode = Field("seq-mean-token-sum-norm", description="Sum over tokens / T_max (T_max = rollout.max_new_tokens).")
    divide_by_batch: bool = Field(True, description="Also divide by the mini-batch's row count B, empty rows included "
                                                    "(paper; TRL 1.16 dr_grpo; veRL 0.7.1-0.9.1, whose trainer passes "
                                                    "global_batch_size = mini-batch rows); False = sum/T_max of veRL 0.4-0.7.0.")


@register
class DrGRPO(GRPO):
    name = "dr_grpo"
    paper = "Understanding R1-Zero-Like Training (Dr. GRPO), Liu et al., arXiv 2503.20783"
    formula = "A_i=r_i-mean_G (no std); L=-(1/(B*T_max)) sum_i,t min(rho*A, clip(rho)*A)"
    Params = DrGRPOParams
    p: DrGRPOParams

    def loss(self, mb: Rollouts, out: ForwardOut, norm: Norm) -> tuple[torch.Tensor, Metrics]:
        if self.p.loss_agg != "seq-mean-token-sum-norm":
            return super().loss(mb, out, norm)
        # num_seqs is agg_loss's row divisor: every row of the mini-batch, or 1 for veRL <= 0.7.0's sum/T_max
        rows = len(norm.batch) if norm.batch is not None else len(mb)
        return super().loss(mb, out, dataclasses.replace(norm, num_seqs=float(rows if self.p.divide_by_batch else 1)))


class DAPOParams(GRPOParams):
    max_gen_batches: int = Field(10, description="Generation rounds allowed to fill the batch with mixed groups (<= 0 = unlimited).")
    filter_metric: Literal["acc", "score"] = Field("acc", description="Group statistic for dynamic sampling: "
                                                   "correctness, or the raw reward (before overlong shaping).")
    overlong: bool = Field(True, description="Apply DAPO's soft overlong punishment to the reward.")
    overlong_max_len: int | None = Field(None, ge=1, description="L_max of the punishment (None = rollout.max_new_tokens).")
    overlong_buffer_len: int | None = Field(None, ge=1, description="L_buf (None = L_max/5, DAPO's 4096/20480 ratio).")
    overlong_factor: float = Field(1.0, ge=0, description="Penalty reached at L_max.")


@register
class DAPO(GRPO):
    name = "dapo"
    paper = "DAPO, Yu et al., arXiv 2503.14476"
    formula = ("GRPO + clip-higher (0.2/0.28) + token-mean + dynamic sampling (drop zero-variance groups, resample) "
               "+ r += min(-(L-(L_max-L_buf))/L_buf*f, 0)")
    Params = DAPOParams
    p: DAPOParams

    def filter_rows(self, batch: Rollouts) -> torch.Tensor:
        metric = _correct(batch) if self.p.filter_metric == "acc" else batch.rewards
        return keep_mixed_groups(metric, batch.group_ids)

    def prepare(self, batch: Rollouts, ctx: StepContext) -> Rollouts:
        if self.p.overlong:
            lmax = self.p.overlong_max_len or ctx.max_new_tokens
            buf = min(self.p.overlong_buffer_len or max(1, lmax // 5), lmax)
            pen = A.dapo_overlong_penalty(batch.response_valid.sum(1), lmax, buf, self.p.overlong_factor)
            batch.extras["overlong_penalty"] = pen
        return super().prepare(batch, ctx)

    def scores(self, batch: Rollouts) -> torch.Tensor:
        pen = batch.extras.get("overlong_penalty")
        return batch.rewards.float() if pen is None else batch.rewards.float() + pen

    @property
    def max_gen_batches(self) -> int:
        return self.p.max_gen_batches


@register
class RLOO(GRPO):
    name = "rloo"
    paper = "Back to Basics: REINFORCE Style Optimization (RLOO), Ahmadian et al., arXiv 2402.14740"
    formula = "A_i=r_i-mean_{j!=i} r_j; L=agg(-min(rho*A, clip(rho)*A))"
    Params = ClipParams

    def prepare(self, batch: Rollouts, ctx: StepContext) -> Rollouts:
        batch.advantages = A.rloo(self.scores(batch), batch.group_ids, batch.loss_mask.float())[0]
        return batch


class RPPParams(ClipParams):
    gamma: float = Field(1.0, ge=0, le=1, description="Discount of the return-to-go.")
    kl_reward_coef: float = Field(0.001, ge=0, description="beta of the KL penalty folded into the token rewards (0 = off, no reference).")
    kl_reward_type: Literal[KL_KINDS] = Field("k1", description="KL estimator in the reward (veRL 0.9.1 algorithm.kl_penalty, default kl = k1).")
    kl_adaptive: bool = Field(False, description="Adaptive beta (Ziegler et al.) instead of a fixed one.")
    kl_target: float = Field(0.1, gt=0, description="Target KL of the adaptive controller.")
    kl_horizon: int = Field(10000, gt=0, description="Horizon of the adaptive controller.")


@register
class ReinforcePP(GRPO):
    name = "reinforce_pp"
    paper = "REINFORCE++, Hu, arXiv 2501.03262"
    formula = "r'_t=r_t-beta*KL_t(pi_old||pi_ref); A=whiten_batch(sum_{s>=t} gamma^(s-t) r'_s); L=agg(-min(rho*A, clip(rho)*A))"
    Params = RPPParams
    p: RPPParams

    def __init__(self, params: RPPParams):
        super().__init__(params)
        p = params
        self.kl_ctl = AdaptiveKL(p.kl_reward_coef, p.kl_target, p.kl_horizon) if p.kl_adaptive else FixedKL(p.kl_reward_coef)
        self.prep_metrics: Metrics = {}

    def needs_reference(self) -> bool:
        return self.p.kl_reward_coef > 0 or self.p.kl_coef > 0

    def token_rewards(self, batch: Rollouts) -> torch.Tensor:
        r = batch.token_rewards()
        if self.p.kl_reward_coef > 0:
            r, kl = kl_in_reward(r, batch.rollout_logp, batch.ref_logp, batch.loss_mask, self.kl_ctl.value,
                                 self.p.kl_reward_type)
            self.prep_metrics = {"actor/kl_in_reward": float(kl), "actor/kl_reward_coef": self.kl_ctl.value}
            self.kl_ctl.update(float(kl), len(batch))
        return r

    def prepare(self, batch: Rollouts, ctx: StepContext) -> Rollouts:
        batch.advantages = A.reinforce_pp(self.token_rewards(batch), batch.loss_mask.float(), self.p.gamma)[0]
        return batch

    def loss(self, mb: Rollouts, out: ForwardOut, norm: Norm) -> tuple[torch.Tensor, Metrics]:
        loss, m = super().loss(mb, out, norm)
        return loss, {**m, **self.prep_metrics}

    def state_dict(self) -> dict[str, Any]:
        return {"kl_ctl": self.kl_ctl.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "kl_ctl" in state:
            self.kl_ctl.load_state_dict(state["kl_ctl"])


@register
class ReinforcePPBaseline(ReinforcePP):
    name = "reinforce_pp_baseline"
    paper = "REINFORCE++ (group-baseline variant), Hu, arXiv 2501.03262"
    formula = "s_i=sum_t r'_t (KL in reward); A=whiten_batch(s_i-mean_G); L=agg(-min(rho*A, clip(rho)*A))"

    def prepare(self, batch: Rollouts, ctx: StepContext) -> Rollouts:
        batch.advantages = A.reinforce_pp_baseline(self.token_rewards(batch), batch.group_ids,
                                                   batch.loss_mask.float())[0]
        return batch


class GSPOParams(RecipeParams):
    loss_agg: AggMode = Field("seq-mean-token-mean", description="Sequence mean of token means = sequence-level GSPO.")
    norm_by_std: bool = Field(True, description="Divide group-centred rewards by the group std.")
    eps: float = Field(1e-6, gt=0, description="Std epsilon in the advantage.")
    clip_low: float = Field(3e-4, ge=0, description="Clip of the length-normalised sequence ratio below 1 (paper).")
    clip_high: float = Field(4e-4, ge=0, description="Clip of the sequence ratio above 1 (paper).")


@register
class GSPO(GRPO):
    name = "gspo"
    paper = "Group Sequence Policy Optimization, Zheng et al., arXiv 2507.18071"
    formula = "s_i=exp(mean_t(logp-logp_old)); A=GRPO; L=mean_i(-min(s_i*A_i, clip(s_i,1-3e-4,1+4e-4)*A_i))"
    Params = GSPOParams
    p: GSPOParams

    def loss(self, mb: Rollouts, out: ForwardOut, norm: Norm) -> tuple[torch.Tensor, Metrics]:
        old = mb.rollout_logp if mb.old_logp is None else mb.old_logp
        pg, m = gspo_loss(out.logp, old, self.loss_advantages(mb, out), mb.loss_mask.to(out.logp.dtype), self.p.clip_low,
                          self.p.clip_high, agg=self.p.loss_agg, **_agg_kw(norm))
        reg, rm = self.regularisers(mb, out, norm)
        return pg + reg, {"actor/pg_loss": pg.item(), **_item(m), **rm}


# ------------------------------------------------------------------------------------------ FlowRL
class FlowRLParams(RecipeParams):
    beta: float = Field(15.0, gt=0, description="Reward temperature beta of the target exp(beta*r)*pi_ref (paper 15).")
    weight_mode: Literal[FLOWRL_WEIGHT_MODES] = Field("paper_clip", description="Importance weight w: paper_clip = "
                                                      "clip(rho,1-eps,1+eps) (paper), none = rho (original code), cap = min(rho,cap) (verl recipe).")
    clip_eps: float = Field(0.2, gt=0, lt=1, description="eps of paper_clip.")
    cap: float = Field(10.0, gt=0, description="Cap of the 'cap' mode.")
    eps: float = Field(1e-6, gt=0, description="Std epsilon of the group-normalised reward.")
    z_layers: int = Field(3, ge=1, description="Layers of the log Z MLP (paper: 3).")
    z_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout inside the log Z MLP (paper: 0.1).")
    pool_exclude_last: bool = Field(False, description="Pool prompt states without the last prompt token (released code).")


@register
class FlowRL(GRPO):
    name = "flowrl"
    paper = "FlowRL: Matching Reward Distributions for LLM Reasoning, arXiv 2509.15207"
    formula = "L=mean_i w_i*(logZ(x)+mean_t logp - beta*rhat_i - mean_t logp_ref)^2, rhat=GRPO-normalised r, w=sg(clip(seq ratio))"
    Params = FlowRLParams
    p: FlowRLParams

    def modules(self, policy: nn.Module) -> dict[str, nn.Module]:
        head = LogZHead(policy.config.hidden_size, self.p.z_layers, self.p.z_dropout)
        return {"log_z": head.to(next(policy.parameters()).device)}

    def needs_reference(self) -> bool:
        return True

    def needs_hidden(self) -> bool:
        return True

    def prepare(self, batch: Rollouts, ctx: StepContext) -> Rollouts:
        ones = torch.ones(len(batch), 1)
        batch.extras["rhat"] = A.grpo(batch.rewards.float(), batch.group_ids, ones, eps=self.p.eps)[0][:, 0]
        return batch

    def row_active(self, batch: Rollouts) -> torch.Tensor:
        return torch.ones(len(batch), dtype=torch.bool)  # equal-reward groups still anchor log Z and pi to pi_ref

    def loss(self, mb: Rollouts, out: ForwardOut, norm: Norm) -> tuple[torch.Tensor, Metrics]:
        pooled = pool_prompt(out.hidden[:, :mb.prompt_ids.shape[1]], mb.prompt_mask, self.p.pool_exclude_last)
        logz = out.modules["log_z"](pooled)
        tb, m = flowrl_loss(logz, out.logp, mb.rollout_logp if mb.old_logp is None else mb.old_logp, mb.ref_logp,
                            mb.loss_mask, mb.extras["rhat"], self.p.beta, self.p.weight_mode, self.p.clip_eps,
                            self.p.cap, num_seqs=norm.num_seqs)
        reg, rm = self.regularisers(mb, out, norm)
        return tb + reg, {**_item(m), **rm}


# ------------------------------------------------------------------------------------------ HPT
class HPTParams(DrGRPOParams):
    gamma: int = Field(0, ge=0, description="SFT when at most gamma of the n rollouts are correct (Qwen 0, LLaMA 2 of 8).")
    sft_coef: float = Field(1.0, ge=0, description="Weight of the SFT term.")
    soft: Literal[tuple(HPT_SOFT_TABLES)] | None = Field(None, description="Soft variant: per-prompt (rl, sft) weights "
                                                         "from the released code's table (needs rollout.n=8); None = hard switch.")


@register
class HPT(DrGRPO):
    name = "hpt"
    paper = "Towards a Unified View of LLM Post-Training (HPT), arXiv 2509.04419"
    formula = ("per prompt: #correct<=gamma -> SFT on its demonstration (-mean_t log pi(y*_t)), else Dr.GRPO on its "
               "rollouts; demos excluded from group statistics")
    Params = HPTParams
    p: HPTParams

    def prepare(self, batch: Rollouts, ctx: StepContext) -> Rollouts:
        _, inv, size = torch.unique_consecutive(batch.group_ids, return_inverse=True, return_counts=True)
        n_ok = torch.zeros(len(size)).index_add_(0, inv, _correct(batch)).long()
        if self.p.soft:  # the code's count includes the always-correct demonstration row
            rl_w, _, sft_w = hpt_soft_coefficients((n_ok + 1).clamp_max(8), int(size.max()), self.p.soft)
        else:
            sft = hpt_switch(n_ok, self.p.gamma)
            rl_w, sft_w = (~sft).float(), sft.float()
        keep = (rl_w[inv] > 0).nonzero().flatten()
        rl = batch.select(keep)
        if len(rl):  # group statistics over on-policy rows only
            rl = super().prepare(rl, ctx)
        else:
            rl.advantages = torch.zeros_like(rl.loss_mask, dtype=torch.float32)
        rl.shaped_advantages = rl.advantages * rl_w[inv[keep]].unsqueeze(1)
        rl.is_demo, rl.sft_weight = torch.zeros(len(rl)), torch.zeros(len(rl))
        dg = (sft_w > 0).nonzero().flatten()
        if not len(dg):
            return rl
        first = torch.cat([size.new_zeros(1), size.cumsum(0)])[dg]
        demo = ctx.demo_rows([batch.task_index[int(i)] for i in first])
        demo.is_demo, demo.sft_weight = torch.ones(len(demo)), sft_w[dg] * self.p.sft_coef
        if rl.ref_logp is not None:
            demo.ref_logp = ctx.reference(demo)
        for k in rl.set_fields():  # advantages and any other per-token field are 0 on demos
            if getattr(demo, k) is None and k != "valid_mask":
                setattr(demo, k, torch.zeros(demo.response_ids.shape))
        for k, v in rl.extras.items():  # so is any recipe-private extra
            demo.extras[k] = torch.zeros(demo.response_ids.shape[:v.dim()])
        out = concat([rl, demo], ctx.pad_id)  # each demo goes right after its prompt's (kept) rollouts
        return out.select(torch.argsort(torch.cat([2 * inv[keep], 2 * dg + 1]), stable=True))

    def row_active(self, batch: Rollouts) -> torch.Tensor:
        return super().row_active(batch) | (batch.is_demo > 0)

    def loss(self, mb: Rollouts, out: ForwardOut, norm: Norm) -> tuple[torch.Tensor, Metrics]:
        full, demo = norm.batch if norm.batch is not None else mb, mb.is_demo > 0
        fd, fm = full.is_demo > 0, full.loss_mask.float()
        rl_rows, mask = float((~fd).sum()), mb.loss_mask.to(out.logp.dtype)
        n_seq = float((fm[~fd].sum(1) > 0).sum())
        if self.p.loss_agg == "seq-mean-token-sum-norm":  # every RL row, or none (the code's sum/T_max)
            n_seq = rl_rows if self.p.divide_by_batch else 1.0
        rl_norm = Norm(num_tokens=float(fm[~fd].sum()), num_seqs=n_seq, loss_scale_factor=norm.loss_scale_factor)
        pg, m = ppo_clip_loss(out.logp, mb.rollout_logp if mb.old_logp is None else mb.old_logp, self.loss_advantages(mb, out),
                              mask * ~demo[:, None], self.p.clip_low, self.p.clip_high, self.p.clip_c, self.p.loss_agg,
                              **_agg_kw(rl_norm))
        sft = sft_nll(out.logp * mb.sft_weight[:, None].to(out.logp.dtype), mask * demo[:, None], "token-mean",
                      num_tokens=float(fm[fd].sum()))
        reg, rm = self.regularisers(mb, out, norm)
        return pg + sft + reg, {"actor/pg_loss": pg.item(), "actor/sft_loss": sft.item(), **_item(m), **rm}
