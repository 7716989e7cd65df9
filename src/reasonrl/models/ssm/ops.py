"""State-space maths as pure functions on tensors: each layer's parallel (training) form and its
recurrent (decode) step, which must agree to float rounding (``tests/models/test_ssm_ops.py``).

Formulas are the standard ones of S4D (Gu et al. 2022, "On the Parameterization and Initialization of
Diagonal State Space Models"), Mamba (Gu & Dao 2023) and Mamba-2 / SSD (Dao & Gu 2024), as summarised
in the SSM survey arXiv 2503.11224 (docs/ssm.md). Shapes use b = batch, l = time, d = channels,
n = state size, h = heads, p = head dim, g = B/C groups.

Recurrent form (every layer): ``h_t = Ā_t h_{t-1} + B̄_t x_t``, ``y_t = C_t h_t + D x_t``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------- conv


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal convolution over time: x (b, c, l), weight (c, k) -> (y (b, c, l), state (b, c, k-1)).

    ``state`` is the last ``k-1`` inputs (zeros on the left when ``l < k-1``): exactly what
    ``causal_conv1d_step`` needs to continue the sequence token by token.
    """
    k = weight.shape[-1]
    xp = F.pad(x, (k - 1, 0))
    y = F.conv1d(xp, weight.unsqueeze(1), bias, groups=x.shape[1])
    return y, xp[:, :, xp.shape[-1] - (k - 1):]


def causal_conv1d_step(x: torch.Tensor, state: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One time step: x (b, c), state (b, c, k-1) -> (y (b, c), new state)."""
    window = torch.cat([state, x.unsqueeze(-1)], dim=-1)
    y = (window * weight).sum(-1)
    if bias is not None:
        y = y + bias
    return y, window[:, :, 1:]


# ---------------------------------------------------------------------------------------------- S4D


def s4d_kernel(log_dt: torch.Tensor, A: torch.Tensor, C: torch.Tensor, length: int) -> torch.Tensor:
    """Convolution kernel ``K_l = 2 Re Σ_n C_n B̄_n Ā_n^l`` (d, length): a Vandermonde product, O(n·l).

    ``A``/``C`` keep one of each conjugate pair, hence the factor 2 and the real part.
    """
    dtA = log_dt.exp().unsqueeze(-1) * A
    CB = C * (torch.exp(dtA) - 1.0) / A
    powers = torch.exp(dtA.unsqueeze(-1) * torch.arange(length, device=A.device))  # (d, n2, l)
    return 2.0 * torch.einsum("dn,dnl->dl", CB, powers).real


def s4d_conv(u: torch.Tensor, log_dt: torch.Tensor, A: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor) -> torch.Tensor:
    """Parallel form: ``y = K * u + D u`` with the causal convolution done by FFT in O(l log l).

    u (b, d, l) real -> y (b, d, l). Zero-padding to 2l makes the circular FFT convolution linear.
    """
    length = u.shape[-1]
    k = s4d_kernel(log_dt, A, C, length)
    n = 2 * length
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :length]
    return y + D.unsqueeze(-1) * u


def s4d_final_state(u: torch.Tensor, log_dt: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """The state after the whole sequence, ``h_L = Σ_s Ā^{L-1-s} B̄ u_s`` (b, d, n2) complex, so a
    parallel prefill can hand over to the recurrent step."""
    length = u.shape[-1]
    dtA = log_dt.exp().unsqueeze(-1) * A
    dB = (torch.exp(dtA) - 1.0) / A
    back = torch.exp(dtA.unsqueeze(-1) * torch.arange(length - 1, -1, -1, device=A.device))
    return torch.einsum("bdl,dnl->bdn", u.to(back.dtype), back) * dB


def s4d_step(u: torch.Tensor, state: torch.Tensor, log_dt: torch.Tensor, A: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Recurrent form: u (b, d), state (b, d, n2) complex -> (y (b, d), new state)."""
    dA = torch.exp(log_dt.exp().unsqueeze(-1) * A)
    dB = (dA - 1.0) / A
    state = dA * state + dB * u.unsqueeze(-1)
    y = 2.0 * (state * C).sum(-1).real + D * u
    return y, state


def s4d_init(d: int, n2: int, kind: str = "lin") -> torch.Tensor:
    """Diagonal A (d, n2) complex. S4D-Lin ``-1/2 + iπn``; S4D-Inv ``-1/2 + i(N/π)(N/(2n+1) - 1)``;
    S4D-Real ``-(n+1)`` (N = 2·n2 is the full state size)."""
    n = torch.arange(n2, dtype=torch.float32)
    if kind == "lin":
        a = torch.complex(torch.full_like(n, -0.5), math.pi * n)
    elif kind == "inv":
        big = 2 * n2
        a = torch.complex(torch.full_like(n, -0.5), big / math.pi * (big / (2 * n + 1) - 1))
    elif kind == "real":
        a = torch.complex(-(n + 1), torch.zeros_like(n))
    else:
        raise ValueError(f"S4D init must be 'lin', 'inv' or 'real', got {kind!r}")
    return a.expand(d, n2).clone()


# ------------------------------------------------------------------------------------ Mamba (S6)


class _FusedSelectiveScan(torch.autograd.Function):
    """The sequential scan with a hand-written backward, time-major and one (b, d, n) slice at a time.

    The autograd loop (``mode="autograd"``) materialises ``exp(Δ A)`` and ``Δ B u`` as (b, d, l, n)
    tensors, steps through strided slices of them and leaves autograd ~2 ops per step plus a stack to
    undo. Here each step computes its slice of ``Ā_t`` in place from contiguous (l, b, d) inputs (it stays
    in cache), writes ``h_t`` into one (l, b, d, n) buffer, and the readout ``y_t = h_t C_t`` is one bmm.
    The backward is the adjoint recurrence ``g_t = C_t gy_t + Ā_{t+1} g_{t+1}`` run in reverse with the
    same per-step recompute of ``Ā_t``, after which the gradients of B, C and ``Δ u`` are bmms over the
    stored ``g`` and ``h``, and those of Δ (through Ā) and A are reduced inside the loop:
    ``∂(Δ_t A) = g_t ⊙ Ā_t ⊙ h_{t-1}``.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        b, d, length = u.shape
        n = A.shape[-1]
        dl = delta.permute(2, 0, 1).contiguous()  # (l, b, d)
        xl = (delta * u).permute(2, 0, 1).contiguous()
        Bl, Cl = B.transpose(0, 1).contiguous(), C.transpose(0, 1).contiguous()  # (l, b, n)
        hs = u.new_empty(length, b, d, n)
        a = u.new_empty(b, d, n)
        for t in range(length):
            torch.mul(dl[t].unsqueeze(-1), A, out=a).exp_()
            if t:
                a.mul_(hs[t - 1])
                torch.baddbmm(a, xl[t].unsqueeze(-1), Bl[t].unsqueeze(1), out=hs[t])  # + outer product
            else:
                torch.bmm(xl[t].unsqueeze(-1), Bl[t].unsqueeze(1), out=hs[t])
        y = torch.bmm(hs.view(length * b, d, n), Cl.view(length * b, n, 1)).view(length, b, d)
        ctx.save_for_backward(u, delta, A, dl, xl, Bl, Cl, hs)
        return y.permute(1, 2, 0), hs[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, glast):
        u, delta, A, dl, xl, Bl, Cl, hs = ctx.saved_tensors
        length, b, d, n = hs.shape
        gyl = (gy if gy is not None else u.new_zeros(b, d, length)).permute(2, 0, 1).contiguous()
        G = torch.empty_like(hs)  # G[t] = dL/dh_t (through y_t and every later state)
        carry = glast if glast is not None else hs.new_zeros(b, d, n)  # Ā_{t+1} g_{t+1}
        a = hs.new_empty(b, d, n)
        p = hs.new_empty(b, d, n)
        g_dA = u.new_empty(length, b, d)  # dL/dΔ_t through Ā_t
        gA = torch.zeros_like(A)
        for t in range(length - 1, -1, -1):
            torch.baddbmm(carry, gyl[t].unsqueeze(-1), Cl[t].unsqueeze(1), out=G[t])
            if t == 0:
                g_dA[0].zero_()
                break
            torch.mul(dl[t].unsqueeze(-1), A, out=a).exp_()
            carry = G[t] * a
            torch.mul(carry, hs[t - 1], out=p)  # dL/d(Δ_t A)
            torch.sum(p * A, -1, out=g_dA[t])
            gA.add_((p * dl[t].unsqueeze(-1)).sum(0))
        lb = length * b
        gx = torch.bmm(G.view(lb, d, n), Bl.view(lb, n, 1)).view(length, b, d)  # dL/d(Δ u)
        gB = torch.bmm(xl.view(lb, 1, d), G.view(lb, d, n)).view(length, b, n)
        gC = torch.bmm(gyl.view(lb, 1, d), hs.view(lb, d, n)).view(length, b, n)
        gx = gx.permute(1, 2, 0)
        g_delta = gx * u + g_dA.permute(1, 2, 0)
        return gx * delta, g_delta, gA, gB.transpose(0, 1), gC.transpose(0, 1)


def _selective_scan_inference(u, delta, A, B, C) -> tuple[torch.Tensor, torch.Tensor]:
    """The same loop without autograd (prefill): one (b, d, n) state updated in place and read out every step,
    so memory stays O(b·d·n) instead of keeping every ``h_t``."""
    b, d, length = u.shape
    dl = delta.permute(2, 0, 1).contiguous()
    xl = (delta * u).permute(2, 0, 1).contiguous()
    Bl, Cl = B.transpose(0, 1).contiguous(), C.transpose(0, 1).contiguous()
    h = u.new_zeros(b, d, A.shape[-1])
    a = torch.empty_like(h)
    y = u.new_empty(length, b, d, 1)
    for t in range(length):
        h.mul_(torch.mul(dl[t].unsqueeze(-1), A, out=a).exp_())
        h.baddbmm_(xl[t].unsqueeze(-1), Bl[t].unsqueeze(1))
        torch.bmm(h, Cl[t].unsqueeze(-1), out=y[t])
    return y.squeeze(-1).permute(1, 2, 0), h


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, mode: str = "sequential") -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba's selective scan, all steps: returns ``(y (b, d, l), last state (b, d, n))``.

    u, delta (b, d, l) with delta already positive (softplus applied); A (d, n) (negative real);
    B, C (b, l, n) shared across channels. ``Ā_t = exp(Δ_t A)``, ``B̄_t = Δ_t B_t`` (Euler for B).

    ``mode="sequential"`` (the default) loops over time with a hand-written backward
    (``_FusedSelectiveScan``; O(l) work, on CPU the fastest), or without autograd a loop that keeps only
    the current state (``_selective_scan_inference``); ``mode="autograd"`` is the same loop left to
    autograd (the plain reference the tests compare against); ``mode="parallel"`` is the associative
    scan over pairs ``(a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2)`` in ⌈log2 l⌉ doubling rounds
    (Hillis-Steele: O(l log l) work, O(log l) depth; the form a GPU kernel parallelises).
    """
    if mode == "sequential" and u.shape[-1]:
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C))
        y, last = (_FusedSelectiveScan.apply if needs_grad else _selective_scan_inference)(u, delta, A, B, C)
    elif mode in ("sequential", "autograd"):
        dA = torch.exp(delta.unsqueeze(-1) * A.unsqueeze(1))  # (b, d, l, n)
        dBu = (delta * u).unsqueeze(-1) * B.unsqueeze(1)  # (b, d, l, n)
        # unbind, not dA[:, :, t]: the backward of one unbind is one stack, while each indexing
        # op's backward would materialise a full-size zero gradient (quadratic in l)
        h = u.new_zeros(u.shape[0], u.shape[1], A.shape[-1])
        hs = []
        for a_t, b_t in zip(dA.unbind(2), dBu.unbind(2)):
            h = a_t * h + b_t
            hs.append(h)
        y = torch.einsum("bdln,bln->bdl", torch.stack(hs, dim=2), C) if hs else u.new_zeros(u.shape)
        last = h
    elif mode == "parallel":
        a, s = torch.exp(delta.unsqueeze(-1) * A.unsqueeze(1)), (delta * u).unsqueeze(-1) * B.unsqueeze(1)
        off = 1
        while off < u.shape[-1]:
            s = torch.cat([s[:, :, :off], a[:, :, off:] * s[:, :, :-off] + s[:, :, off:]], dim=2)
            a = torch.cat([a[:, :, :off], a[:, :, off:] * a[:, :, :-off]], dim=2)
            off *= 2
        y = torch.einsum("bdln,bln->bdl", s, C)
        last = s[:, :, -1] if u.shape[-1] else u.new_zeros(u.shape[0], u.shape[1], A.shape[-1])
    else:
        raise ValueError(f"selective_scan mode must be 'sequential', 'autograd' or 'parallel', got {mode!r}")
    if D is not None:
        y = y + D.unsqueeze(-1) * u
    return y, last


def selective_step(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step: u, delta (b, d); B, C (b, n); state (b, d, n) -> (y (b, d), new state)."""
    dA = torch.exp(delta.unsqueeze(-1) * A)
    state = dA * state + (delta * u).unsqueeze(-1) * B.unsqueeze(1)
    y = torch.matmul(state, C.unsqueeze(-1)).squeeze(-1)  # (b, d, n) @ (b, n, 1): one bmm, cheaper than einsum
    if D is not None:
        y = y + D * u
    return y, state


# ------------------------------------------------------------------------------------ Mamba-2 (SSD)


def segsum(a: torch.Tensor) -> torch.Tensor:
    """``S[..., i, j] = Σ_{k=j+1..i} a_k`` for i >= j, ``-inf`` above the diagonal (so exp gives the
    1-semiseparable mask ``L``). Built by a masked cumsum rather than ``cumsum_i - cumsum_j``, which
    loses precision when the running sum is large."""
    q = a.shape[-1]
    e = a.unsqueeze(-1).expand(*a.shape, q)  # e[..., k, j] = a_k
    strict = torch.tril(torch.ones(q, q, dtype=torch.bool, device=a.device), diagonal=-1)
    s = e.masked_fill(~strict, 0.0).cumsum(dim=-2)
    keep = torch.tril(torch.ones(q, q, dtype=torch.bool, device=a.device))
    return s.masked_fill(~keep, -torch.inf)


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk: int, initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-2's SSD by chunks: ``(y (b, l, h, p), final state (b, h, p, n))``, no D term.

    x (b, l, h, p); dt (b, l, h) positive; A (h,) negative scalars; B, C (b, l, g, n), g dividing h.
    Per head ``H_t = a_t H_{t-1} + x_t B_tᵀ`` (H is p×n), ``y_t = H_t C_t``, ``a_t = exp(Δ_t A)``, input
    scaled by Δ_t. Four steps per chunk of length Q: (1) intra-chunk outputs by the quadratic
    "attention" form ``(L ∘ C Bᵀ) x``; (2) each chunk's final state from zero; (3) a scan over the
    l/Q chunk states; (4) the carried-in state's contribution to each chunk's outputs.
    """
    b, length, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    hg = h // g
    pad = (-length) % chunk
    if pad:  # dt = 0 on the padding: a = 1 and no input, so the final state is unchanged
        x, dt = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, 0, 0, pad)), F.pad(C, (0, 0, 0, 0, 0, pad))
    nc = x.shape[1] // chunk
    # layout (b, g, h/g, c, q, ·): heads grouped under their B/C group, so C Bᵀ is computed once per group
    # and broadcast over its heads, and every contraction below is one batched matmul
    xd = (x * dt.unsqueeze(-1)).view(b, nc, chunk, g, hg, p).permute(0, 3, 4, 1, 2, 5)  # (b, g, hg, c, q, p)
    Bc = B.view(b, nc, chunk, g, n).permute(0, 3, 1, 2, 4).unsqueeze(2)  # (b, g, 1, c, q, n)
    Cc = C.view(b, nc, chunk, g, n).permute(0, 3, 1, 2, 4).unsqueeze(2)
    la = (dt * A).view(b, nc, chunk, g, hg).permute(0, 3, 4, 1, 2)  # (b, g, hg, c, q) log-decays
    cum = la.cumsum(-1)
    # (1) intra-chunk: (L ∘ C Bᵀ) x
    y = (torch.matmul(Cc, Bc.transpose(-1, -2)) * torch.exp(segsum(la))) @ xd
    # (2) chunk-final states from a zero start: Σ_j decay(j → end) x_j B_jᵀ
    to_end = torch.exp(cum[..., -1:] - cum)  # (b, g, hg, c, q)
    states = (xd * to_end.unsqueeze(-1)).transpose(-1, -2) @ Bc  # (b, g, hg, c, p, n)
    # (3) scan over chunks
    chunk_decay = torch.exp(cum[..., -1])  # (b, g, hg, c)
    carry = x.new_zeros(b, g, hg, p, n) if initial_state is None else initial_state.to(x.dtype).view(b, g, hg, p, n)
    starts = []
    for c in range(nc):
        starts.append(carry)
        carry = chunk_decay[..., c, None, None] * carry + states[:, :, :, c]
    # (4) carried-in state -> outputs: C_i · start, decayed to position i
    start = torch.stack(starts, dim=3)  # (b, g, hg, c, p, n)
    y = y + (Cc @ start.transpose(-1, -2)) * torch.exp(cum).unsqueeze(-1)
    y = y.permute(0, 3, 4, 1, 2, 5).reshape(b, nc * chunk, h, p)
    return y[:, :length], carry.reshape(b, h, p, n)


def ssd_step(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step: x (b, h, p), dt (b, h), B, C (b, g, n), state (b, h, p, n) -> (y (b, h, p), state)."""
    b, h, p = x.shape
    g, n = B.shape[1], B.shape[2]
    a = torch.exp(dt * A)
    # heads grouped as (g, h/g) so B and C broadcast over a group's heads without a copy
    st = state.view(b, g, h // g, p, n)
    xs = (dt.unsqueeze(-1) * x).view(b, g, h // g, p, 1)
    st = a.view(b, g, h // g, 1, 1) * st + xs * B.view(b, g, 1, 1, n)
    y = torch.matmul(st, C.view(b, g, 1, n, 1)).view(b, h, p)
    return y, st.view(b, h, p, n)


# ---------------------------------------------------------------------------------------------- norms


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm computed in fp32 and cast back before the scale (HF's Llama/Mamba convention); in fp32
    the fused ``F.rms_norm`` computes the same expression in one op."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def gated_rms_norm(x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float, groups: int) -> torch.Tensor:
    """Mamba-2's output norm: ``x · SiLU(gate)`` normalised per group of channels, then scaled."""
    dtype = x.dtype
    h = x.float() * F.silu(gate.float())
    shp = h.shape
    h = h.view(*shp[:-1], groups, shp[-1] // groups)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.view(shp).to(dtype)
