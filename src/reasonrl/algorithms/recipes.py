"""Named recipes: each algorithm is a short declaration on the unified policy-gradient estimator.

A recipe says which advantage estimator runs (``prepare``), which loss terms it sums (``loss``),
which rows it keeps (``filter_rows``), and which extra modules it owns (``modules``). The trainer
calls these hooks and never branches on a recipe's name; adding an algorithm means adding one class
here (or in its own file) and registering it with ``@register``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reasonrl.batch import Rollouts


class RecipeParams(BaseModel):
    """Parameters every recipe shares (paper defaults where a paper sets them)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    loss_agg: Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = Field(
        "token-mean", description="Loss aggregation over the mini-batch (spec §6.11); token-mean uses the global token count.")
    kl_coef: float = Field(0.0, ge=0, description="Weight of the KL-to-reference loss term (0 = no reference model).")
    kl_type: str = Field("k3", description="KL estimator for the loss term: k1, k2, k3, abs, k1+, k3+.")
    entropy_coef: float = Field(0.0, description="Entropy bonus weight (subtracted from the loss).")


@dataclass
class ForwardOut:
    """What the learner's forward produced for one micro-batch."""

    logp: torch.Tensor
    entropy: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    modules: dict[str, torch.nn.Module] = field(default_factory=dict)


@dataclass
class StepContext:
    """What a recipe may ask of the trainer while preparing a batch (all without gradients).

    ``forward(batch)`` runs the current policy (and the recipe's modules) on a batch and returns a
    ``ForwardOut`` with hidden states; ``demo_rows(task_indices)`` builds rows whose response is the
    task's worked demonstration (for SFT terms such as HPT's); ``tasks`` maps ``batch.task_index``.
    ``reference(batch)`` gives reference log-probs for rows a recipe adds (None without a reference);
    ``max_new_tokens`` is the response limit (DAPO's overlong shaping scales with it); ``pad_id``
    pads prompts when a recipe concatenates rows.
    """

    forward: Callable[[Rollouts], ForwardOut]
    demo_rows: Callable[[list[int]], Rollouts]
    tasks: list
    step: int
    reference: Callable[[Rollouts], torch.Tensor] | None = None
    max_new_tokens: int = 0
    pad_id: int = 0


@dataclass
class Norm:
    """Normalisers of the whole mini-batch, so micro-batch losses sum to the exact mini-batch loss."""

    num_tokens: float
    num_seqs: float
    loss_scale_factor: float
    batch: Rollouts | None = None  # the whole mini-batch, for normalisers over a row subset (HPT's demos)


class Recipe:
    name: ClassVar[str]
    paper: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    Params: ClassVar[type[RecipeParams]] = RecipeParams

    def __init__(self, params: RecipeParams):
        self.p = params

    # hooks, all optional except loss
    def modules(self, policy: torch.nn.Module) -> dict[str, torch.nn.Module]:
        return {}

    def needs_reference(self) -> bool:
        return self.p.kl_coef > 0

    def needs_entropy(self) -> bool:
        return True

    def needs_hidden(self) -> bool:
        return False

    def filter_rows(self, batch: Rollouts) -> torch.Tensor | None:
        return None

    @property
    def max_gen_batches(self) -> int:
        """Generation rounds the trainer may run to refill rows ``filter_rows`` dropped (<= 0: unlimited).
        One round unless a recipe filters and resamples (DAPO's dynamic sampling)."""
        return 1

    def prepare(self, batch: Rollouts, ctx: StepContext) -> Rollouts:
        return batch

    def row_active(self, batch: Rollouts) -> torch.Tensor:
        """Rows whose loss can be non-zero; others are counted in the normaliser but not forwarded."""
        return torch.ones(len(batch), dtype=torch.bool)

    def loss(self, mb: Rollouts, out: ForwardOut, norm: Norm) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # shared helpers for recipes
    def agg(self, loss_mat: torch.Tensor, mask: torch.Tensor, norm: Norm) -> torch.Tensor:
        from reasonrl.algorithms.core import agg_loss

        return agg_loss(loss_mat, mask, self.p.loss_agg, num_tokens=norm.num_tokens, num_seqs=norm.num_seqs,
                        loss_scale_factor=norm.loss_scale_factor)

    def regularisers(self, mb: Rollouts, out: ForwardOut, norm: Norm) -> tuple[torch.Tensor, dict[str, float]]:
        """KL-to-reference loss and entropy bonus, shared by every recipe."""
        from reasonrl.algorithms.losses import kl_penalty

        mask = mb.loss_mask.to(out.logp.dtype)
        total = out.logp.new_zeros(())
        metrics: dict[str, float] = {}
        if self.p.kl_coef > 0:
            kl = kl_penalty(out.logp, mb.ref_logp, self.p.kl_type)
            kl_term = self.agg(kl, mask, norm)
            total = total + self.p.kl_coef * kl_term
            metrics["actor/kl"] = kl_term.item()
        if self.p.entropy_coef and out.entropy is not None:
            ent = self.agg(out.entropy, mask, norm)
            total = total - self.p.entropy_coef * ent
        return total, metrics


REGISTRY: dict[str, type[Recipe]] = {}


def register(cls: type[Recipe]) -> type[Recipe]:
    REGISTRY[cls.name] = cls
    return cls


def validate_algorithm_params(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate ``algorithm:`` against the named recipe's parameter model; returns the filled dict."""
    from reasonrl.errors import ConfigError

    name = raw.get("name")
    if name not in REGISTRY:
        raise ConfigError(f"algorithm.name={name!r} is unknown; valid names: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    try:
        params = cls.Params.model_validate(raw)
    except ValidationError as e:
        lines = [f"invalid algorithm parameters for {name!r}:"]
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            hint = "unknown parameter for this recipe" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  algorithm.{loc}: {hint}")
        valid = ", ".join(f for f in cls.Params.model_fields if f != "name")
        lines.append(f"  valid parameters of {name}: {valid}")
        raise ConfigError("\n".join(lines)) from None
    return params.model_dump()


def make_recipe(raw: dict[str, Any]) -> Recipe:
    cls = REGISTRY[raw["name"]]
    return cls(cls.Params.model_validate(raw))


# --------------------------------------------------------------------------------------------------
# Recipes


class GRPOParams(RecipeParams):
    norm_by_std: bool = Field(True, description="Divide group-centred rewards by the group std (False = Dr.GRPO).")
    eps: float = Field(1e-6, gt=0, description="Std epsilon in the advantage.")
    clip_low: float = Field(0.2, ge=0, description="PPO clip epsilon below 1.")
    clip_high: float = Field(0.28, ge=0, description="PPO clip epsilon above 1 (DAPO clip-higher).")
    clip_c: float | None = Field(None, description="Dual-clip constant c > 1 for negative advantages (None = off).")


@register
class GRPO(Recipe):
    name = "grpo"
    paper = "DeepSeekMath, arXiv 2402.03300; clip-higher and token-mean from DAPO, arXiv 2503.14476"
    formula = "A_i=(r_i-mean_G)/(std_G+eps); L=agg(-min(rho*A, clip(rho,1-el,1+eh)*A)) [+ kl_coef*KL]"
    Params = GRPOParams
    p: GRPOParams

    def prepare(self, batch: Rollouts, ctx: StepContext) -> Rollouts:
        from reasonrl.algorithms.advantages import grpo

        adv, _ = grpo(self.scores(batch), batch.group_ids, batch.loss_mask.float(),
                      norm_by_std=self.p.norm_by_std, eps=self.p.eps)
        batch.advantages = adv
        return batch

    def scores(self, batch: Rollouts) -> torch.Tensor:
        """The per-row scores the advantage estimator sees (a recipe may shape them; rewards stay as scored)."""
        return batch.rewards.float()

    def loss_advantages(self, mb: Rollouts, out: ForwardOut) -> torch.Tensor:
        """The per-token advantages of the policy loss (a recipe may reshape them with the current forward)."""
        return mb.policy_advantages

    def row_active(self, batch: Rollouts) -> torch.Tensor:
        if self.p.kl_coef > 0 or self.p.entropy_coef:
            return torch.ones(len(batch), dtype=torch.bool)
        return batch.policy_advantages.abs().sum(dim=1) > 0

    def loss(self, mb: Rollouts, out: ForwardOut, norm: Norm) -> tuple[torch.Tensor, dict[str, float]]:
        from reasonrl.algorithms.losses import ppo_clip_loss

        mask = mb.loss_mask.to(out.logp.dtype)
        old = mb.rollout_logp if mb.old_logp is None else mb.old_logp
        pg, m = ppo_clip_loss(out.logp, old, self.loss_advantages(mb, out), mask, clip_low=self.p.clip_low,
                              clip_high=self.p.clip_high, clip_c=self.p.clip_c, agg=self.p.loss_agg,
                              num_tokens=norm.num_tokens, num_seqs=norm.num_seqs,
                              loss_scale_factor=norm.loss_scale_factor)
        reg, rm = self.regularisers(mb, out, norm)
        metrics = {"actor/pg_loss": pg.item(), **{f"actor/{k}": float(v) for k, v in m.items()}, **rm}
        return pg + reg, metrics


@register
class SFT(Recipe):
    name = "sft"
    paper = "supervised fine-tuning; the unified-estimator view of HPT, arXiv 2509.04419"
    formula = "L=agg(-log pi(y_t)) on the task's demonstration (A=1, pi_ref=pi_theta, no mask)"

    def prepare(self, batch: Rollouts, ctx: StepContext) -> Rollouts:
        """One demonstration row per prompt of the step: the rollouts only choose the prompts."""
        gid = batch.group_ids
        first = [i for i in range(len(batch)) if i == 0 or gid[i] != gid[i - 1]]
        demo = ctx.demo_rows([batch.task_index[i] for i in first])
        if batch.ref_logp is not None and ctx.reference is not None:
            demo.ref_logp = ctx.reference(demo)
        return demo

    def loss(self, mb: Rollouts, out: ForwardOut, norm: Norm) -> tuple[torch.Tensor, dict[str, float]]:
        from reasonrl.algorithms.losses import sft_nll

        mask = mb.loss_mask.to(out.logp.dtype)
        nll = sft_nll(out.logp, mask, self.p.loss_agg, num_tokens=norm.num_tokens, num_seqs=norm.num_seqs,
                      loss_scale_factor=norm.loss_scale_factor)
        reg, rm = self.regularisers(mb, out, norm)
        return nll + reg, {"actor/sft_loss": nll.item(), **rm}


@register
class RFT(SFT):
    """SFT's loss on the policy's own correct samples instead of demonstrations."""

    name = "rft"
    paper = "rejection-sampling fine-tuning / expert iteration (STaR, arXiv 2203.14465; RAFT, arXiv 2304.06767)"
    formula = "L=agg(-log pi(y_t)) over the policy's own correct samples only (wrong samples are masked out)"

    def prepare(self, batch: Rollouts, ctx: StepContext) -> Rollouts:
        correct = torch.tensor([bool(c) for c in batch.info["correct"]], dtype=batch.loss_mask.dtype)
        batch.valid_mask = batch.response_valid.clone()
        batch.loss_mask = batch.loss_mask * correct[:, None]
        return batch

    def row_active(self, batch: Rollouts) -> torch.Tensor:
        return batch.loss_mask.sum(dim=1) > 0


# registry completion: recipes declared in their own files register on import (after the bases above exist)
from reasonrl.algorithms import zoo  # noqa: E402,F401
