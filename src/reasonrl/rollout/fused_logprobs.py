"""Per-token log-prob and entropy of chosen tokens without keeping the (N, V) logits for backward.

The reference (``logprobs.sequence_logprobs`` with ``chunk_tokens=0``) materialises the float32
logits, their log-softmax and, with entropy, ``exp`` of it, all kept alive by autograd until the
backward: three (B, T, V) float32 tensors, the learner's largest activations for any real
vocabulary (SmolLM2: 49 k entries per token). ``chosen_logprob_entropy`` instead takes the final
hidden states of the N scored tokens and the LM head, computes the logits ``chunk`` tokens at a time,
keeps only the per-token log-sum-exp and entropy, and recomputes each chunk's logits in the backward
(one extra LM-head matmul per chunk: the "chunked cross-entropy" idea used by Liger-Kernel and
torchtune's chunked loss; written here from the formulas below, no code taken).

For ``z = (h W^T + b) / tau``, ``p = softmax(z)``, ``H = -sum p log p``:
``d logp_y / dz = onehot(y) - p`` and ``dH / dz_j = -p_j (log p_j + H)``; both go through ``/tau``
into ``dh = dz W`` and ``dW = dz^T h``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """Temperature-scaled logits of one chunk in float32 (float64 for float64 inputs), the matmul in
    ``h``'s dtype (as the LM head runs under autocast)."""
    with torch.autocast(h.device.type, enabled=False):
        z = F.linear(h, w.to(h.dtype), None if b is None else b.to(h.dtype))
    return z.to(torch.promote_types(h.dtype, torch.float32)) / temperature


class _ChosenLogprobEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, b, targets, temperature: float, chunk: int):
        n = h.shape[0]
        logp = torch.empty(n, dtype=torch.promote_types(h.dtype, torch.float32), device=h.device)
        ent = torch.empty_like(logp)
        lse = torch.empty_like(logp)
        for s in range(0, n, chunk):
            z = _logits(h[s:s + chunk], w, b, temperature)
            m = torch.logsumexp(z, dim=-1)
            logz = z - m[:, None]
            logp[s:s + chunk] = logz.gather(-1, targets[s:s + chunk, None]).squeeze(-1)
            ent[s:s + chunk] = -(logz.exp() * logz).sum(-1)
            lse[s:s + chunk] = m
        ctx.save_for_backward(h, w, b, targets, lse, ent)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not zeros
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        h, w, b, targets, lse, ent = ctx.saved_tensors
        tau, chunk = ctx.temperature, ctx.chunk
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        gh = torch.empty_like(h) if need_h else None
        acc = lse.dtype
        gw = torch.zeros(w.shape, dtype=acc, device=w.device) if need_w else None
        gb = torch.zeros(b.shape, dtype=acc, device=b.device) if need_b else None
        wf = w.to(acc)
        for s in range(0, h.shape[0], chunk):
            hc = h[s:s + chunk]
            logz = _logits(hc, w, b, tau) - lse[s:s + chunk, None]
            p = logz.exp()
            dz = torch.zeros_like(p)
            if g_logp is not None:
                gl = g_logp[s:s + chunk].to(acc)
                dz = -p * gl[:, None]
                dz.scatter_add_(-1, targets[s:s + chunk, None], gl[:, None])
            if g_ent is not None:
                ge = g_ent[s:s + chunk].to(acc)
                dz = dz - p * (logz + ent[s:s + chunk, None]) * ge[:, None]
            dz = dz / tau
            if need_h:
                gh[s:s + chunk] = (dz @ wf).to(h.dtype)
            if need_w:
                gw += dz.t() @ hc.to(acc)
            if need_b:
                gb += dz.sum(0)
        return (gh, None if gw is None else gw.to(w.dtype), None if gb is None else gb.to(b.dtype), None, None, None)


def chosen_logprob_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           targets: torch.Tensor, temperature: float, chunk: int = 256
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp, entropy)`` (N,) float32 (float64 for float64 inputs) of ``targets`` (N,) under ``softmax((hidden W^T + b) / temperature)``.

    ``hidden`` (N, d) is the final (post-norm) hidden state before each target; ``weight`` (V, d) and
    ``bias`` (V,) are the LM head's. At most ``chunk`` x V logits exist at once, forward or backward.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be (N, d) and targets (N,), got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    return _ChosenLogprobEntropy.apply(hidden, weight, bias, targets.long(), float(temperature), int(chunk))
