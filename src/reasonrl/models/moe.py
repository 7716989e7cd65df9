"""Top-k mixture of experts: routing maths as pure functions, one reusable layer.

Used by the DriveMoE stand-in (``reasonrl.driving``) for both its camera/view router (top-1 over
views) and its skill-routed action MoE (top-k over FFN experts plus a shared expert), but nothing here
knows about driving. Formulas follow DriveMoE's released code (spec §3.1): softmax over router
logits divided by a temperature, top-k, renormalise over the chosen k; focal loss with
inverse-frequency class weights for router supervision; hard Gumbel-softmax straight-through
(tau = 1) for end-to-end router training in stage 2; teacher forcing by labels in stage 1. The
Switch-Transformer load-balancing term (Fedus et al. 2021, ``E * sum_e f_e * P_e``) is optional:
DriveMoE's code does not use one.

Routing modes (``route(..., mode=)``):

- ``"topk"``: soft top-k (differentiable through the k renormalised weights); inference default.
- ``"teacher"``: the label's expert gets weight 1; the weights are constants, so the task loss gives
  the router no gradient (stage 1: the router learns only from its supervised loss).
- ``"gumbel"``: Gumbel-perturbed logits; for k = 1 a hard one-hot whose gradient is the soft
  sample's (straight-through), so the task loss reaches the router (stage 2). For k > 1: noisy top-k
  with renormalised soft weights (already differentiable).
- ``"argmax"``: hard top-1 without noise (inference for selection routers: one expert/view runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("topk", "teacher", "gumbel", "argmax")


@dataclass
class Routing:
    """One routing decision per row: ``weights`` (N, E) with at most k non-zeros summing to one (before
    capacity drops), ``idx`` (N, k) chosen experts best first, ``probs`` (N, E) the plain softmax (for
    balance losses and metrics), ``logits`` (N, E) as given (for the supervised router loss)."""

    weights: torch.Tensor
    idx: torch.Tensor
    probs: torch.Tensor
    logits: torch.Tensor
    dropped: torch.Tensor | None = None  # (N, k) bool: assignment dropped by the capacity limit
    dense: bool = False  # straight-through: every expert must run so each weight's gradient exists


def route(logits: torch.Tensor, k: int = 1, *, mode: str = "topk", temperature: float | torch.Tensor = 1.0,
          labels: torch.Tensor | None = None, tau: float = 1.0, generator: torch.Generator | None = None) -> Routing:
    """Turn router logits (N, E) into sparse mixing weights (see the module docstring for the modes)."""
    if mode not in MODES:
        raise ValueError(f"routing mode {mode!r} is unknown; use one of {MODES}")
    n, e = logits.shape
    if not 1 <= k <= e:
        raise ValueError(f"top-k must lie in [1, {e}] (the number of experts), got k={k}")
    z = logits / temperature
    probs = z.softmax(-1)
    if mode == "teacher":
        if labels is None:
            raise ValueError("routing mode 'teacher' needs labels (one expert index per row)")
        idx = labels.long().view(n, 1)
        w = F.one_hot(idx[:, 0], e).to(logits.dtype)
        return Routing(w, idx, probs, logits)
    if mode == "argmax":
        idx = z.argmax(-1, keepdim=True)
        return Routing(F.one_hot(idx[:, 0], e).to(logits.dtype), idx, probs, logits)
    if mode == "gumbel":
        u = torch.rand(z.shape, generator=generator, dtype=z.dtype).clamp_(1e-10, 1 - 1e-10).to(z.device)
        soft = ((z - torch.log(-torch.log(u))) / tau).softmax(-1)
        idx = soft.topk(k, -1).indices
        if k == 1:
            hard = F.one_hot(idx[:, 0], e).to(soft.dtype)
            return Routing(hard - soft.detach() + soft, idx, probs, logits, dense=True)
        src = soft
    else:
        src = probs
        idx = src.topk(k, -1).indices
    top = src.gather(-1, idx)
    w = torch.zeros_like(src).scatter(-1, idx, top / top.sum(-1, keepdim=True))
    return Routing(w, idx, probs, logits)


def apply_capacity(r: Routing, capacity: int) -> Routing:
    """Keep at most ``capacity`` assignments per expert; rows are served in order (first come, as in
    Switch Transformer), the k-th choices of all rows after the first choices. A dropped assignment's
    weight becomes 0 and is NOT renormalised onto the others: that row's output for the dropped share
    comes from the shared expert / residual only, which is what a capacity overflow means. Meant for
    the sparse modes (``topk``/``argmax``/``teacher``)."""
    n, k = r.idx.shape
    e = r.weights.shape[1]
    order = r.idx.t().reshape(-1)  # choice-major: all first choices, then all second ...
    onehot = F.one_hot(order, e)
    pos = (onehot.cumsum(0) * onehot).sum(-1) - 1  # position of each assignment in its expert's queue
    dropped = (pos >= capacity).view(k, n).t()
    keep = torch.ones_like(r.weights).scatter(-1, r.idx, (~dropped).to(r.weights.dtype))
    return Routing(r.weights * keep, r.idx, r.probs, r.logits, dropped, r.dense)


def capacity_for(n: int, k: int, n_experts: int, factor: float) -> int:
    """Switch-style capacity: ``ceil(factor * n * k / E)`` assignments per expert (factor <= 0: unlimited)."""
    return n * k if factor <= 0 else max(1, math.ceil(factor * n * k / n_experts))


def class_weights(counts, power: float = 1.0) -> torch.Tensor:
    """Focal-loss alpha ``count_c ** -power``, normalised to sum to one (an unseen class is counted as 1
    occurrence). ``power=1``: DriveMoE's inverse frequency; ``0.5``: tempered (square-root inverse
    frequency); ``0``: uniform. With heavily skewed labels (e.g. 6 of 960 samples in one class) full
    inverse frequency makes a rare class ~100x as costly to miss, which pushed our routers' predictions
    to the rare classes and below the majority-label rate (benchmarks/drivemoe)."""
    c = torch.as_tensor(counts, dtype=torch.float32).clamp_min(1.0)
    w = c ** -float(power)
    return w / w.sum()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: torch.Tensor | None = None,
               reduction: str = "mean") -> torch.Tensor:
    """``-alpha_y (1 - p_y)^gamma log p_y`` (Lin et al. 2017), averaged over rows; ``alpha`` (E,) per class."""
    logp = logits.log_softmax(-1).gather(-1, target.long().view(-1, 1))[:, 0]
    loss = -((1 - logp.exp()) ** gamma) * logp
    if alpha is not None:
        loss = loss * alpha.to(loss)[target.long()]
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def load_balance_loss(r: Routing) -> torch.Tensor:
    """Switch Transformer's auxiliary loss ``E * sum_e f_e * P_e``: f_e the fraction of rows whose first
    choice is e (no gradient), P_e the mean router probability of e; equals 1 when perfectly balanced."""
    e = r.probs.shape[1]
    f = F.one_hot(r.idx[:, 0], e).float().mean(0)
    return e * (f * r.probs.mean(0)).sum()


def expert_usage(r: Routing) -> dict[str, object]:
    """Metrics: per-expert share of (kept) assignments, router entropy, drop fraction."""
    e = r.weights.shape[1]
    counts = torch.zeros(e).index_add_(0, r.idx.reshape(-1).cpu(), torch.ones(r.idx.numel()))
    if r.dropped is not None:
        counts -= torch.zeros(e).index_add_(0, r.idx[r.dropped].cpu(), torch.ones(int(r.dropped.sum())))
    ent = -(r.probs * r.probs.clamp_min(1e-12).log()).sum(-1).mean()
    return {"usage": (counts / counts.sum().clamp_min(1)).tolist(), "entropy": float(ent),
            "dropped_frac": float(r.dropped.float().mean()) if r.dropped is not None else 0.0}


class FFN(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.up, self.down = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Router(nn.Module):
    """Bias-free linear router with a learnable temperature (DriveMoE's ``mlp_router``); with
    ``trajectory=True`` the per-token logits are averaged over the sequence (mask-aware): one decision
    per sample, shared by every token and every MoE layer that uses it."""

    def __init__(self, d: int, n_experts: int, learn_temperature: bool = True):
        super().__init__()
        self.proj = nn.Linear(d, n_experts, bias=False)
        self.log_temp = nn.Parameter(torch.zeros(())) if learn_temperature else None

    @property
    def temperature(self) -> torch.Tensor | float:
        return self.log_temp.exp() if self.log_temp is not None else 1.0

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None, trajectory: bool = True) -> torch.Tensor:
        z = self.proj(h)
        if not trajectory or h.dim() == 2:
            return z
        if mask is None:
            return z.mean(1)
        m = mask.to(z.dtype).unsqueeze(-1)
        return (z * m).sum(1) / m.sum(1).clamp_min(1.0)


class MoELayer(nn.Module):
    """``y = sum_k w_k Expert_k(x) + sum_s Shared_s(x)`` with sparse dispatch: each expert runs only on
    the rows routed to it (and kept by the capacity limit).

    ``forward(x, routing)`` takes a precomputed :class:`Routing` (trajectory-level: one row per sample,
    x of shape (B, T, d); token-level: one row per token, x of shape (N, d)), so one router can drive
    several MoE layers, as in DriveMoE's last four action-expert layers. ``forward_routed`` computes the
    routing with this layer's own router.
    """

    def __init__(self, d: int, hidden: int, n_experts: int, k: int = 1, n_shared: int = 1,
                 capacity_factor: float = 0.0, trajectory: bool = True):
        super().__init__()
        self.experts = nn.ModuleList(FFN(d, hidden) for _ in range(n_experts))
        self.shared = nn.ModuleList(FFN(d, hidden) for _ in range(n_shared))
        self.router = Router(d, n_experts)
        self.k, self.capacity_factor, self.trajectory = k, capacity_factor, trajectory
        self.last: Routing | None = None

    def route(self, x: torch.Tensor, mask: torch.Tensor | None = None, **kw) -> Routing:
        logits = self.router(x, mask, self.trajectory)
        r = route(logits, kw.pop("k", self.k), temperature=self.router.temperature, **kw)
        if self.capacity_factor > 0:
            r = apply_capacity(r, capacity_for(len(logits), r.idx.shape[1], len(self.experts), self.capacity_factor))
        return r

    def forward(self, x: torch.Tensor, r: Routing) -> torch.Tensor:
        self.last = r
        rows = x.reshape(len(r.weights), -1, x.shape[-1])  # (N, T, d); T = 1 for token-level rows
        out = torch.zeros_like(rows)
        for s in self.shared:
            out = out + s(rows)
        active = torch.ones_like(r.weights, dtype=torch.bool) if r.dense else r.weights != 0
        for e, expert in enumerate(self.experts):
            sel = active[:, e].nonzero().flatten()
            if len(sel):
                out = out.index_add(0, sel, r.weights[sel, e].view(-1, 1, 1).to(rows) * expert(rows[sel]))
        return out.reshape(x.shape)

    def forward_routed(self, x: torch.Tensor, mask: torch.Tensor | None = None, **kw) -> tuple[torch.Tensor, Routing]:
        r = self.route(x, mask, **kw)
        return self(x, r), r
