"""FlowRL: reward-distribution matching with a trajectory-balance loss (arXiv 2509.15207; spec §1).

Per sequence ``L = w·δ²`` with ``δ = log Z_φ(x) + ā_θ − β·r̂ − ā_ref`` where ā are length-normalised
(token-mean) log-probs of the response and r̂ the GRPO-normalised outcome reward. ``log Z`` comes
from :class:`LogZHead` on the mean prompt hidden state of the policy itself.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LogZHead", "pool_prompt", "flowrl_loss", "FLOWRL_WEIGHT_MODES"]

FLOWRL_WEIGHT_MODES = ("paper_clip", "none", "cap")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def pool_prompt(hidden_states: Tensor, prompt_mask: Tensor, exclude_last: bool = False) -> Tensor:
    """Mean of the prompt tokens' final-layer hidden states, (B, Tp, d) → (B, d).

    ``exclude_last=True`` drops each row's last real prompt token, reproducing the released code's
    off-by-one slice (spec §1.2); the paper averages all prompt tokens (default). An empty prompt
    pools to the zero vector. Not detached: the TB gradient reaches the backbone, as in the code.
    """
    m = prompt_mask.bool()
    if exclude_last:
        pos = torch.arange(m.shape[1], device=m.device).expand_as(m)
        last = torch.where(m, pos, torch.full_like(pos, -1)).max(dim=1).values
        m = m & (pos != last.unsqueeze(1))
    w = m.to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * w).sum(dim=1) / w.sum(dim=1).clamp_min(1)


class LogZHead(nn.Module):
    """``log Z_φ(x)``: (num_layers−1) × [Linear(d,d) → GELU → LayerNorm(d) → Dropout] → Linear(d,1).

    Spec §1.2 (code ``ProjZModule``, ``porj_layer=3``): output is log Z directly (no exp/softplus),
    PyTorch default init, trained with the policy's optimiser and lr.
    """

    pool_prompt = staticmethod(pool_prompt)

    def __init__(self, hidden_size: int, num_layers: int = 3, dropout: float = 0.1):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        for _ in range(num_layers - 1):
            layers += [nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.LayerNorm(hidden_size), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden_size, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, pooled: Tensor) -> Tensor:
        """(B, d) pooled prompt state → (B,) log Z (input cast to the head's dtype)."""
        dtype = self.net[-1].weight.dtype
        return self.net(pooled.to(dtype)).squeeze(-1)


def _up(x: Tensor) -> Tensor:
    return x.float() if x.dtype in _LOW_PRECISION else x


def flowrl_loss(
    logz: Tensor,
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    rhat: Tensor,
    beta: float = 15.0,
    weight_mode: str = "paper_clip",
    clip_eps: float = 0.2,
    cap: float = 10.0,
    drop_empty: bool = True,
    num_seqs: int | float | Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Trajectory-balance loss of FlowRL, mean over sequences of ``w_i·δ_i²`` (spec §1.1, §1.3, §1.5).

    * ``ā_θ = (1/L)Σ_t m_t logp_t`` (same for ref); ``rhat`` is (B,) or a (B, T) advantage tensor
      reduced by masked token-mean (the code passes GRPO advantages).
    * ``w`` is detached and built from the *full* sequence log-ratio ``Σ_t m_t(logp − old)`` in
      ≥ fp32 (half inputs are upcast), clamped in log space before ``exp``: ``paper_clip`` = clip(ρ, 1−ε, 1+ε) (paper);
      ``none`` = ρ (original code, Xuekai-Zhu/FlowRL @ decbc57; log-ratio capped at ±20 only to stay
      finite); ``cap`` = min(ρ, cap) (verl-recipe @ 48ea0a7 port, cap 10).
    * Empty responses (L = 0) are excluded from the mean when ``drop_empty`` (their δ carries no
      policy term). ``num_seqs`` overrides the divisor for exact micro-batch accumulation.
    * A group with identical rewards has r̂ = 0 but a non-zero loss: it anchors ā_θ to ā_ref − log Z.

    Closed-form gradients (per kept sequence, before the 1/N mean): ∂L/∂log Z = 2wδ and
    ∂L/∂logp_t = 2wδ·m_t/L.
    """
    if weight_mode not in FLOWRL_WEIGHT_MODES:
        raise ValueError(f"unknown weight_mode {weight_mode!r}; expected one of {FLOWRL_WEIGHT_MODES}")
    m = mask.bool()
    mf = m.to(torch.float32 if logp.dtype in _LOW_PRECISION else logp.dtype)
    zero = torch.zeros((), dtype=mf.dtype, device=mf.device)
    lengths = mf.sum(dim=-1)
    inv_len = 1.0 / lengths.clamp_min(1)
    logp_u, ref_u = _up(logp), _up(ref_logp)
    mean_logp = torch.where(m, logp_u, zero).sum(-1) * inv_len
    mean_ref = torch.where(m, ref_u, zero).sum(-1) * inv_len
    r = _up(rhat.detach())
    if r.dim() == 2:
        r = torch.where(m, r, zero).sum(-1) * inv_len

    with torch.no_grad():
        log_w = torch.where(m, _up(logp) - _up(old_logp), 0.0).sum(-1)  # ≥ fp32
        if weight_mode == "paper_clip":
            if not 0 < clip_eps < 1:
                raise ValueError(f"clip_eps must be in (0, 1), got {clip_eps}")
            lo, hi = math.log1p(-clip_eps), math.log1p(clip_eps)
        elif weight_mode == "cap":
            if cap <= 0:
                raise ValueError(f"cap must be > 0, got {cap}")
            lo, hi = -20.0, math.log(cap)
        else:
            lo, hi = -20.0, 20.0
        w = torch.exp(log_w.clamp(lo, hi))
        w_clipped = (log_w < lo) | (log_w > hi)
        w = w.to(mf.dtype)

    delta = _up(logz) + mean_logp - beta * r - mean_ref
    per_seq = w * delta.square()
    keep = lengths > 0 if drop_empty else torch.ones_like(lengths, dtype=torch.bool)
    den = torch.as_tensor(keep.sum() if num_seqs is None else num_seqs, dtype=mf.dtype, device=mf.device).clamp_min(1)
    loss = torch.where(keep, per_seq, zero).sum() / den

    with torch.no_grad():
        k = keep.to(mf.dtype)
        nk = k.sum().clamp_min(1)

        def kmean(x: Tensor) -> Tensor:
            return (x.detach().to(mf.dtype) * k).sum() / nk

        metrics = {
            "tb_loss": loss.detach(),
            "log_z": kmean(_up(logz)),
            "logpf": kmean(mean_logp),
            "logp_ref": kmean(mean_ref),
            "log_reward": kmean(beta * r),
            "delta_abs": kmean(delta.abs()),
            "w_mean": kmean(w),
            "w_clipfrac": kmean(w_clipped.to(mf.dtype)),
            "empty_frac": (lengths == 0).to(mf.dtype).mean() if lengths.numel() else zero,
        }
    return loss, metrics
