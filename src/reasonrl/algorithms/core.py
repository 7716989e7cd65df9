"""Masked statistics, log-prob/entropy helpers and loss aggregation (spec §0, §6.11, §6.12).

"veRL" in these docstrings means the veRL 0.9.1 wheel (``verl/utils/torch_functional.py``,
``verl/trainer/ppo/core_algos.py``) unless another version is named.

Conventions: tensors are (B, T), right-padded; ``mask`` is 1 on tokens that count (generated tokens,
tool/observation tokens excluded) and may be bool or float 0/1. Masked positions are *selected out*
with ``torch.where`` rather than multiplied, so a ``-inf``/NaN sitting on padding never leaks.
"""

from __future__ import annotations

import torch
from torch import Tensor

AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _fmask(mask: Tensor, like: Tensor) -> Tensor:
    return mask.to(like.dtype) if like.is_floating_point() else mask.float()


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Σ over positions where ``mask`` is set (whole tensor when ``dim`` is None)."""
    sel = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return sel.sum() if dim is None else sel.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Masked mean with veRL 0.9.1's ``+1e-8`` denominator, so an empty row gives 0 rather than NaN."""
    m = _fmask(mask, x)
    den = m.sum() if dim is None else m.sum(dim)
    return masked_sum(x, mask, dim) / (den + 1e-8)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance over all masked positions (Bessel-corrected by default, as veRL 0.9.1's whitening).

    Raises ValueError when there are too few tokens to define it (≤1 unbiased, 0 biased) instead of
    silently returning NaN/inf that would poison a whole batch of advantages.
    """
    n = float(_fmask(mask, x).sum())
    if unbiased and n <= 1:
        raise ValueError(f"masked_var(unbiased=True) needs at least 2 masked elements, got {n:g}")
    if n == 0:
        raise ValueError("masked_var needs at least 1 masked element, got 0")
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        var = var * (n / (n - 1))
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """``(x − μ)·rsqrt(σ² + 1e-8)`` with μ, σ² over the masked positions (Bessel variance), as veRL 0.9.1.

    ``shift_mean=False`` restores the mean afterwards (scale-only whitening). Padding positions are
    transformed too; callers multiply by the mask when they need zeros there.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Per-position entropy ``logsumexp(z) − Σ softmax(z)·z`` over the last dim (spec §0).

    Half-precision logits are upcast to fp32: in bf16 the two terms cancel catastrophically.
    Pass temperature-scaled logits (the trainer divides by the rollout temperature first).
    """
    z = logits.float() if logits.dtype in _LOW_PRECISION else logits
    p = torch.softmax(z, dim=-1)
    return torch.logsumexp(z, dim=-1) - (p * z).sum(dim=-1)


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """``log softmax(z)[label]`` as ``z[label] − logsumexp(z)``.

    Avoids materialising the full (…, V) log-softmax tensor, which dominates memory for large
    vocabularies. Half-precision logits are upcast to fp32 for the logsumexp.
    """
    z = logits.float() if logits.dtype in _LOW_PRECISION else logits
    picked = torch.gather(z, -1, labels.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(z, dim=-1)


def _count(value, like: Tensor) -> Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return t.clamp_min(1)


SUM_NORM_DIVISORS = ("nonempty", "rows", "none")


def agg_loss(
    loss_mat: Tensor,
    mask: Tensor,
    mode: str = "token-mean",
    *,
    num_tokens: int | float | Tensor | None = None,
    num_seqs: int | float | Tensor | None = None,
    loss_scale_factor: float | None = None,
    batch_divisor: str = "nonempty",
    dp_size: int = 1,
) -> Tensor:
    """Reduce a per-token loss (B, T) to a scalar (spec §6.11); checked against veRL 0.9.1's ``agg_loss``.

    Modes:

    * ``token-mean``: Σ m·ℓ / N_tok. ``num_tokens`` is the token count of the *whole mini-batch*
      (all micro-batches, all ranks; veRL's ``batch_num_tokens``); summing the micro-batch results
      then gives exactly Σm·ℓ/Σm over the mini-batch — DAPO's token-level loss.
    * ``seq-mean-token-sum``: Σ_i (Σ_t m·ℓ) / N_seq, N_seq = non-empty rows or ``num_seqs``.
    * ``seq-mean-token-mean``: Σ_i (Σ_t m·ℓ / L_i) / N_seq (GRPO paper).
    * ``seq-mean-token-sum-norm`` (Dr.GRPO): Σ_i (Σ_t m·ℓ) / N_seq / ``loss_scale_factor``
      (default T, the padded width; prefer a constant such as max_response_length). ``batch_divisor``
      picks N_seq for this mode only:

      - ``"nonempty"`` (default): non-empty rows, or ``num_seqs`` when given (veRL's
        ``global_batch_size``) — veRL 0.7.1–0.9.1. Example: ones(3, 4) with row lengths 2, 1, 0
        gives (2 + 1) / 2 / 4 = 0.375.
      - ``"rows"``: all B rows, empty ones included, or ``num_seqs`` — the Dr.GRPO paper's
        1/(B·T_max) and TRL 1.16's ``loss_type="dr_grpo"`` (``size(0) · max_completion_length``).
      - ``"none"``: no division by rows, Σ m·ℓ / T — veRL 0.4.x–0.7.0 (checked 0.4.1, 0.5.0,
        0.6.x, 0.7.0), where the trainer's micro/mini scaling supplied the batch factor; the same
        example gives 0.75.

    Normalisers use the exact counts (no ``+1e-8``) clamped to ≥1: an all-masked input yields 0
    with a defined (zero) gradient. ``dp_size`` multiplies the result when global counts are
    given, undoing DDP's gradient averaging across ranks (as veRL's ``dp_size``).
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; expected one of {AGG_MODES}")
    if batch_divisor not in SUM_NORM_DIVISORS:
        raise ValueError(f"unknown batch_divisor {batch_divisor!r}; expected one of {SUM_NORM_DIVISORS}")
    m = _fmask(mask, loss_mat)
    scale_by_dp = False
    if mode == "token-mean":
        den = _count(m.sum() if num_tokens is None else num_tokens, loss_mat)
        scale_by_dp = num_tokens is not None
        out = masked_sum(loss_mat, mask) / den
    elif mode == "seq-mean-token-sum-norm" and batch_divisor == "none":
        out = masked_sum(loss_mat, mask) / _scale_factor(loss_mat, loss_scale_factor)
    else:
        lengths = m.sum(dim=-1)
        seq = masked_sum(loss_mat, mask, dim=-1)
        if mode == "seq-mean-token-mean":
            seq = seq / lengths.clamp_min(1)
        if num_seqs is not None:
            count = num_seqs
        elif mode == "seq-mean-token-sum-norm" and batch_divisor == "rows":
            count = loss_mat.shape[0] if loss_mat.dim() > 1 else 1
        else:
            count = (lengths > 0).to(loss_mat.dtype).sum()
        scale_by_dp = num_seqs is not None
        out = seq.sum() / _count(count, loss_mat)
        if mode == "seq-mean-token-sum-norm":
            out = out / _scale_factor(loss_mat, loss_scale_factor)
    return out * dp_size if scale_by_dp and dp_size != 1 else out


def _scale_factor(loss_mat: Tensor, loss_scale_factor: float | None) -> float:
    factor = float(loss_mat.shape[-1]) if loss_scale_factor is None else float(loss_scale_factor)
    if factor <= 0:
        raise ValueError(f"loss_scale_factor must be > 0, got {factor}")
    return factor


def group_index(group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Map arbitrary group ids to ``(inverse (B,), counts (G,))`` with dense group indices."""
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    return inverse, counts


def group_mean_std(scores: Tensor, group_ids: Tensor, unbiased: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-row ``(group mean, group std, group size, group all-equal flag)``, all (B,).

    Computed in float64. The all-equal flag comes from max == min, not std == 0: a float mean of
    equal values can be off by an ulp, and spec §6.2 demands exactly zero advantage for such groups.
    Unbiased std of a singleton group is reported as 0.
    """
    s = scores.to(torch.float64)
    inv, counts = group_index(group_ids)
    g = counts.numel()
    sums = torch.zeros(g, dtype=torch.float64, device=s.device).index_add_(0, inv, s)
    mean = sums / counts
    sq = torch.zeros(g, dtype=torch.float64, device=s.device).index_add_(0, inv, (s - mean[inv]) ** 2)
    den = (counts - 1).clamp_min(1) if unbiased else counts
    std = torch.sqrt(sq / den)
    if unbiased:
        std = torch.where(counts > 1, std, torch.zeros_like(std))
    gmax = torch.full((g,), -torch.inf, dtype=torch.float64, device=s.device).scatter_reduce(0, inv, s, "amax")
    gmin = torch.full((g,), torch.inf, dtype=torch.float64, device=s.device).scatter_reduce(0, inv, s, "amin")
    equal = gmax == gmin
    return mean[inv], std[inv], counts[inv], equal[inv]
