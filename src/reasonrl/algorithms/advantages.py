"""Advantage estimators (spec §6.1–§6.5, §6.7) and entropy-based shaping (spec §3).

"veRL" below means the veRL 0.9.1 wheel (``verl/trainer/ppo/core_algos.py``) unless another version
is named. Every estimator runs under ``torch.no_grad`` and returns ``(advantages, returns)``, both (B, T) and
zero on masked positions. Outcome estimators take the scalar score per sequence ``scores`` (B,);
a (B, T) token-reward tensor is accepted too and summed per row (``s_i = Σ_t r[i,t]``, spec §0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .core import group_mean_std, masked_whiten

__all__ = [
    "gae",
    "grpo",
    "rloo",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "entropy_shaped",
    "dapo_overlong_penalty",
]


def _scores(scores: Tensor) -> Tensor:
    s = scores.sum(dim=-1) if scores.dim() == 2 else scores
    if s.dim() != 1:
        raise ValueError(f"scores must be (B,) or (B, T), got shape {tuple(scores.shape)}")
    return s


def _out_dtype(*xs: Tensor) -> torch.dtype:
    for x in xs:
        if x.is_floating_point():
            return x.dtype
    return torch.get_default_dtype()


def _whiten_or_zero(x: Tensor, mask: Tensor) -> Tensor:
    """Batch whitening; a batch with < 2 valid tokens carries no relative signal → zeros.

    (veRL 0.9.1's ``masked_var`` raises there; a step with all-empty responses should be a no-op, not a crash.)
    """
    m = mask.bool()
    if int(m.sum()) < 2:
        return torch.zeros_like(x)
    return torch.where(m, masked_whiten(x, m), torch.zeros_like(x))


@torch.no_grad()
def gae(token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 1.0,
        whiten: bool = True) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2015, arXiv 1506.02438; spec §6.1).

    Backward pass with masked positions skipped: V_next and Â_next are taken at the next *valid*
    token, so tool/observation spans inside a response neither bootstrap nor discount (veRL ≥ 0.6.1;
    0.4.1 did not skip). ``returns = Â + V`` before whitening; advantages are whitened over all valid
    tokens of the batch. Equals veRL 0.9.1's ``compute_gae_advantage_return`` on valid tokens (veRL
    leaves carried values on masked ones, we write 0). Defaults γ = λ = 1 as veRL 0.9.1's config and
    the entropy-advantage paper's PPO runs.
    """
    m = mask.bool()
    b, t_len = values.shape
    next_v = values.new_zeros(b)
    next_a = values.new_zeros(b)
    adv = torch.zeros_like(values)
    for t in reversed(range(t_len)):
        mt = m[:, t]
        delta = token_rewards[:, t] + gamma * next_v - values[:, t]
        a_t = torch.where(mt, delta + gamma * lam * next_a, 0.0)
        adv[:, t] = a_t
        next_v = torch.where(mt, values[:, t], next_v)
        next_a = torch.where(mt, a_t, next_a)
    returns = torch.where(m, adv + values, 0.0)
    if whiten:
        adv = _whiten_or_zero(adv, mask)
    return adv, returns


@torch.no_grad()
def grpo(scores: Tensor, group_ids: Tensor, mask: Tensor, norm_by_std: bool = True,
         eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """GRPO outcome advantage (Shao et al. 2024, arXiv 2402.03300; spec §6.2).

    ``A_i = (s_i − μ_G)/(σ_G + eps)`` with the unbiased (N−1) group std; ``norm_by_std=False`` is
    Dr.GRPO's ``s_i − μ_G`` (Liu et al. 2025, arXiv 2503.20783). Equals veRL 0.9.1's
    ``compute_grpo_outcome_advantage`` except: singleton group A = s exactly (veRL's μ=0, σ=1 gives
    s/(1+eps), a 1e-6 relative difference); all-equal group exactly 0 (veRL: float round-off).
    Broadcast over the response mask; returns = advantages.
    """
    s = _scores(scores)
    mean, std, counts, equal = group_mean_std(s, group_ids, unbiased=True)
    single = counts == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    a = s.to(torch.float64) - mean
    if norm_by_std:
        a = torch.where(single, a, a / (std + eps))
    a = torch.where(equal & ~single, torch.zeros_like(a), a)
    out = a.to(_out_dtype(scores)).unsqueeze(-1) * mask.to(_out_dtype(scores))
    return out, out.clone()


@torch.no_grad()
def rloo(scores: Tensor, group_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """RLOO leave-one-out baseline (Ahmadian et al. 2024, arXiv 2402.14740; spec §6.4).

    ``A_i = s_i − mean_{j≠i} s_j = N/(N−1)·(s_i − μ_G)``; a singleton group gets A = s.
    All-equal groups give exactly 0. Equals veRL 0.9.1's ``compute_rloo_outcome_advantage``.
    """
    s = _scores(scores)
    mean, _, counts, equal = group_mean_std(s, group_ids, unbiased=True)
    n = counts.to(torch.float64)
    single = counts == 1
    a = torch.where(single, s.to(torch.float64), (s.to(torch.float64) - mean) * n / (n - 1).clamp_min(1))
    a = torch.where(equal & ~single, torch.zeros_like(a), a)
    out = a.to(_out_dtype(scores)).unsqueeze(-1) * mask.to(_out_dtype(scores))
    return out, out.clone()


@torch.no_grad()
def reinforce_pp(token_rewards: Tensor, mask: Tensor, gamma: float = 1.0,
                 reset_at_mask: bool = False) -> tuple[Tensor, Tensor]:
    """REINFORCE++ (Hu 2025, arXiv 2501.03262; spec §6.5): whitened discounted return-to-go.

    ``G_t = r_t + γ G_{t+1}`` over valid tokens; advantages = batch-whitened G × mask,
    returns = G × mask. Masked tokens (tool/observation spans) are skipped: the running return is
    carried through them unchanged (no discount, their rewards ignored), so an outcome reward still
    reaches earlier turns — veRL 0.9.1's ``compute_reinforce_plus_plus_outcome_advantage``.
    ``reset_at_mask=True`` restarts the return at 0 after every masked token, as veRL 0.4.1–0.8.0
    did. Both agree for right-padded masks. KL, if any, is expected in ``token_rewards`` already
    (``kl_in_reward``).
    """
    m = mask.bool()
    running = token_rewards.new_zeros(token_rewards.shape[0])
    ret = torch.zeros_like(token_rewards)
    for t in reversed(range(token_rewards.shape[1])):
        mt = m[:, t]
        new = token_rewards[:, t] + gamma * running
        ret[:, t] = torch.where(mt, new, 0.0)
        running = torch.where(mt, new, 0.0 if reset_at_mask else running)
    return _whiten_or_zero(ret, mask), ret


@torch.no_grad()
def reinforce_pp_baseline(scores: Tensor, group_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """REINFORCE++-baseline (spec §6.5): ``s_i − μ_G`` broadcast, then global whitening × mask.

    Equals veRL 0.9.1's ``compute_reinforce_plus_plus_baseline_outcome_advantage``. Singleton
    group: μ=0 (as veRL), so its row carries the raw score into the whitening.
    """
    s = _scores(scores)
    mean, _, counts, equal = group_mean_std(s, group_ids, unbiased=True)
    single = counts == 1
    a = torch.where(single, s.to(torch.float64), s.to(torch.float64) - mean)
    a = torch.where(equal & ~single, torch.zeros_like(a), a)
    dt = _out_dtype(scores)
    tok = a.to(dt).unsqueeze(-1) * mask.to(dt)
    out = _whiten_or_zero(tok, mask)
    return out, out.clone()


@torch.no_grad()
def entropy_shaped(adv: Tensor, entropy: Tensor, mask: Tensor, alpha: float, kappa: float = 2.0) -> Tensor:
    """Entropy-based advantage shaping (Cheng et al., arXiv 2506.14758, Eq. 4–7; spec §3).

    ``A + min(α·sg(H), |A|/κ)``, × mask. ψ ≥ 0 and ≤ |A|/κ with κ > 1, so the sign of A is kept
    and A = 0 stays 0 (shaping cannot revive zero-advantage groups). Paper defaults: κ = 2,
    α = 0.4 (GRPO) / 0.1 (PPO). ``entropy`` must be the *current* policy's token entropy from the
    training forward pass; it is detached (a bonus on A, not an entropy regulariser).
    """
    if kappa <= 1:
        raise ValueError(f"kappa must be > 1 to preserve the advantage sign, got {kappa}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    a = adv.detach()
    psi = torch.minimum(alpha * entropy.detach().clamp_min(0), a.abs() / kappa)
    return (a + psi) * mask.to(a.dtype)


@torch.no_grad()
def dapo_overlong_penalty(lengths: Tensor, max_len: int, buffer_len: int, factor: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment (Yu et al. 2025, arXiv 2503.14476; spec §6.7), per sequence.

    ``min(−(L − (L_max − L_buf))/L_buf · factor, 0)``: 0 up to L_max − L_buf, then linear to
    −factor at L_max (not clamped beyond). Add it to the scalar score. Same formula as veRL 0.9.1's
    ``DAPORewardManager``; the DAPO recipe script uses L_max 20480, L_buf 4096, factor 1.0.
    """
    if not 0 < buffer_len <= max_len:
        raise ValueError(f"need 0 < buffer_len <= max_len, got buffer_len={buffer_len}, max_len={max_len}")
    expected = max_len - buffer_len
    pen = -(lengths.to(torch.get_default_dtype()) - expected) / buffer_len * factor
    return pen.clamp_max(0.0)
