"""SSM mixer blocks: S4D, Mamba (S6) and Mamba-2 (SSD), each with a parallel ``forward`` for training
and prefill and a recurrent ``step`` for decoding, over the same parameters.

Every mixer takes ``(b, l, d)`` hidden states and an optional 0/1 ``mask`` (b, l); padded positions
are zeroed before the input projection and after the convolution (as HF's Mamba does), so with left
padding the state stays exactly zero until the first real token: a left-padded row computes what the
unpadded row would. ``forward(..., return_state=True)`` also returns the state after the last
position, as a tuple of tensors whose first dimension is the batch, so a rollout engine can copy,
select and refill rows of it without knowing which mixer produced it; ``step`` continues from it.

Parameter names and shapes of ``MambaMixer``/``Mamba2Mixer`` equal those of transformers' classes of
the same names, so HF checkpoints load into them unchanged (``model.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reasonrl.models.ssm import ops
from reasonrl.models.ssm.kernels import kernels_for

State = tuple[torch.Tensor, ...]


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)


def _inv_softplus_dt(n: int, dt_min: float, dt_max: float, floor: float) -> torch.Tensor:
    """Biases whose softplus is log-uniform in [dt_min, dt_max] (Mamba's Δ init)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(x, self.weight, self.eps)


class GatedRMSNorm(nn.Module):
    """Mamba-2's ``norm(y · SiLU(z))`` with per-group statistics (HF ``Mamba2RMSNormGated``'s parameters)."""

    def __init__(self, d: int, groups: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps, self.groups = eps, groups

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return ops.gated_rms_norm(x, gate, self.weight, self.eps, self.groups)


class S4DMixer(nn.Module):
    """Gated S4D block: ``out_proj(S4D(x) · SiLU(z))`` with ``(x, z) = in_proj(u)``.

    LTI, so training uses the FFT convolution; the state is complex (b, d_inner, n/2) (one of each
    conjugate pair). A = -exp(A_real_log) + i·A_imag keeps the real part negative (stable).
    """

    def __init__(self, cfg, layer_idx: int = 0):
        super().__init__()
        d, di, n2 = cfg.hidden_size, cfg.intermediate_size, max(1, cfg.state_size // 2)
        self.di, self.n2 = di, n2
        self.in_proj = nn.Linear(d, 2 * di, bias=cfg.use_bias)
        self.log_dt = nn.Parameter(torch.empty(di))
        self.A_real_log = nn.Parameter(torch.empty(di, n2))
        self.A_imag = nn.Parameter(torch.empty(di, n2))
        self.C = nn.Parameter(torch.empty(di, n2, 2))
        self.D = nn.Parameter(torch.empty(di))
        self.out_proj = nn.Linear(di, d, bias=cfg.use_bias)
        self.cfg = cfg

    def reset_ssm_parameters(self, init) -> None:
        a = ops.s4d_init(self.di, self.n2, self.cfg.s4d_init)
        init.copy_(self.A_real_log, torch.log(-a.real))
        init.copy_(self.A_imag, a.imag)
        lo, hi = math.log(self.cfg.time_step_min), math.log(self.cfg.time_step_max)
        init.copy_(self.log_dt, torch.rand(self.di) * (hi - lo) + lo)
        init.normal_(self.C, std=0.5 ** 0.5)
        init.ones_(self.D)

    def _A_C(self) -> tuple[torch.Tensor, torch.Tensor]:
        A = torch.complex(-torch.exp(self.A_real_log.float()), self.A_imag.float())
        return A, torch.view_as_complex(self.C.float().contiguous())

    def init_state(self, batch: int, device, dtype) -> State:
        return (torch.zeros(batch, self.di, self.n2, dtype=torch.complex64, device=device),)

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None, return_state: bool = False):
        x, z = self.in_proj(_masked(u, mask)).chunk(2, dim=-1)
        x = _masked(x, mask).transpose(1, 2).float()
        A, C = self._A_C()
        y = ops.s4d_conv(x, self.log_dt.float(), A, C, self.D.float()).transpose(1, 2).to(u.dtype)
        out = self.out_proj(y * F.silu(z))
        if not return_state:
            return out
        return out, (ops.s4d_final_state(x, self.log_dt.float(), A),)

    def step(self, u: torch.Tensor, state: State):
        x, z = self.in_proj(u).chunk(2, dim=-1)
        A, C = self._A_C()
        y, s = ops.s4d_step(x.float(), state[0], self.log_dt.float(), A, C, self.D.float())
        return self.out_proj(y.to(u.dtype) * F.silu(z)), (s,)


class MambaMixer(nn.Module):
    """Mamba (S6): in_proj -> (x, z); causal depthwise conv + SiLU on x; x_proj -> (Δ low-rank, B, C);
    dt_proj + softplus -> Δ; selective scan; ``y · SiLU(z)``; out_proj. State: (conv (b, di, k-1), ssm (b, di, n))."""

    def __init__(self, cfg, layer_idx: int = 0):
        super().__init__()
        d, di, n, r, k = cfg.hidden_size, cfg.intermediate_size, cfg.state_size, cfg.time_step_rank, cfg.conv_kernel
        self.di, self.n, self.r, self.k = di, n, r, k
        self.in_proj = nn.Linear(d, 2 * di, bias=cfg.use_bias)
        self.conv1d = nn.Conv1d(di, di, k, groups=di, padding=k - 1, bias=cfg.use_conv_bias)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.A_log = nn.Parameter(torch.empty(di, n))
        self.D = nn.Parameter(torch.empty(di))
        self.out_proj = nn.Linear(di, d, bias=cfg.use_bias)
        self.cfg = cfg

    def reset_ssm_parameters(self, init) -> None:
        """S4D-Real A (``A_log = log(1..n)``), D = 1, Δ log-uniform in [dt_min, dt_max] (the Mamba paper's init)."""
        c = self.cfg
        init.copy_(self.A_log, torch.log(torch.arange(1, self.n + 1, dtype=torch.float32)).expand(self.di, -1))
        init.ones_(self.D)
        std = self.r ** -0.5
        init.uniform_(self.dt_proj.weight, -std, std)
        init.copy_(self.dt_proj.bias, _inv_softplus_dt(self.di, c.time_step_min, c.time_step_max, c.time_step_floor))
        init.kaiming_uniform_(self.conv1d.weight, a=math.sqrt(5))
        if self.conv1d.bias is not None:
            init.zeros_(self.conv1d.bias)

    def init_state(self, batch: int, device, dtype) -> State:
        return (torch.zeros(batch, self.di, self.k - 1, device=device, dtype=dtype),
                torch.zeros(batch, self.di, self.n, device=device, dtype=torch.float32))

    def _ssm_inputs(self, x: torch.Tensor):
        dt, B, C = self.x_proj(x).split([self.r, self.n, self.n], dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None, return_state: bool = False):
        x, z = self.in_proj(_masked(u, mask)).chunk(2, dim=-1)
        x = x.transpose(1, 2)  # (b, di, l)
        w = self.conv1d.weight.squeeze(1)
        kern = kernels_for(u, self.cfg.use_kernels)
        if kern is not None:
            xp = F.pad(x, (self.k - 1, 0))
            conv_state = xp[:, :, xp.shape[-1] - (self.k - 1):]
            x = kern.conv(x, w, self.conv1d.bias, activation="silu")
        else:
            x, conv_state = ops.causal_conv1d(x, w, self.conv1d.bias)
            x = F.silu(x)
        x = _masked(x.transpose(1, 2), mask)  # (b, l, di)
        delta, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        if kern is not None:
            y, last = kern.scan(x.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A,
                                B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), self.D.float(),
                                return_last_state=True)
        else:
            y, last = ops.selective_scan(x.transpose(1, 2).float(), delta.transpose(1, 2).float(), A, B.float(),
                                         C.float(), self.D.float(), mode=self.cfg.scan_mode)
        out = self.out_proj(y.transpose(1, 2).to(u.dtype) * F.silu(z))
        return (out, (conv_state, last.float())) if return_state else out

    def step(self, u: torch.Tensor, state: State):
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x, conv_state = ops.causal_conv1d_step(x, state[0], self.conv1d.weight.squeeze(1), self.conv1d.bias)
        x = F.silu(x)
        delta, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        y, ssm = ops.selective_step(x.float(), delta.float(), A, B.float(), C.float(), self.D.float(), state[1])
        return self.out_proj(y.to(u.dtype) * F.silu(z)), (conv_state, ssm)


class Mamba2Mixer(nn.Module):
    """Mamba-2: one in_proj -> (z, xBC, Δ); causal conv + SiLU over xBC; SSD with scalar A per head;
    ``+ D x``; gated RMSNorm with z; out_proj. State: (conv (b, di + 2gn, k-1), ssm (b, h, p, n))."""

    def __init__(self, cfg, layer_idx: int = 0):
        super().__init__()
        d, di, n, k = cfg.hidden_size, cfg.intermediate_size, cfg.state_size, cfg.conv_kernel
        self.di, self.n, self.k = di, n, k
        self.h, self.p, self.g = cfg.num_heads, cfg.head_dim, cfg.n_groups
        if self.h * self.p != di:
            raise ValueError(f"Mamba-2: num_heads*head_dim ({self.h}*{self.p}) must equal expand*hidden_size ({di})")
        self.conv_dim = di + 2 * self.g * n
        self.in_proj = nn.Linear(d, di + self.conv_dim + self.h, bias=cfg.use_bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, k, groups=self.conv_dim, padding=k - 1,
                                bias=cfg.use_conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(self.h))
        self.A_log = nn.Parameter(torch.empty(self.h))
        self.D = nn.Parameter(torch.empty(self.h))
        self.norm = GatedRMSNorm(di, self.g, cfg.layer_norm_epsilon)
        self.out_proj = nn.Linear(di, d, bias=cfg.use_bias)
        self.cfg = cfg
        self.dt_limit = tuple(cfg.time_step_limit)

    def reset_ssm_parameters(self, init) -> None:
        c = self.cfg
        init.copy_(self.A_log, torch.log(torch.arange(1, self.h + 1, dtype=torch.float32)))
        init.ones_(self.D)
        init.copy_(self.dt_bias, _inv_softplus_dt(self.h, c.time_step_min, c.time_step_max, c.time_step_floor))
        init.kaiming_uniform_(self.conv1d.weight, a=math.sqrt(5))
        if self.conv1d.bias is not None:
            init.zeros_(self.conv1d.bias)

    def init_state(self, batch: int, device, dtype) -> State:
        return (torch.zeros(batch, self.conv_dim, self.k - 1, device=device, dtype=dtype),
                torch.zeros(batch, self.h, self.p, self.n, device=device, dtype=torch.float32))

    def _dt(self, dt: torch.Tensor) -> torch.Tensor:
        return F.softplus(dt.float() + self.dt_bias.float()).clamp(self.dt_limit[0], self.dt_limit[1])

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None, return_state: bool = False):
        b, length, _ = u.shape
        z, xbc, dt = self.in_proj(_masked(u, mask)).split([self.di, self.conv_dim, self.h], dim=-1)
        xbc = xbc.transpose(1, 2)
        w = self.conv1d.weight.squeeze(1)
        kern = kernels_for(u, self.cfg.use_kernels)
        if kern is not None:
            xp = F.pad(xbc, (self.k - 1, 0))
            conv_state = xp[:, :, xp.shape[-1] - (self.k - 1):]
            xbc = kern.conv(xbc, w, self.conv1d.bias, activation="silu")
        else:
            xbc, conv_state = ops.causal_conv1d(xbc, w, self.conv1d.bias)
            xbc = F.silu(xbc)
        xbc = _masked(xbc.transpose(1, 2), mask)
        x, B, C = xbc.split([self.di, self.g * self.n, self.g * self.n], dim=-1)
        x4 = x.reshape(b, length, self.h, self.p)
        A = -torch.exp(self.A_log.float())
        B4, C4 = B.reshape(b, length, self.g, self.n), C.reshape(b, length, self.g, self.n)
        if kern is not None:
            y, last = kern.ssd(x4, self._dt(dt), A, B4, C4, self.cfg.chunk_size, return_final_states=True)
        else:
            y, last = ops.ssd_chunked(x4.float(), self._dt(dt), A, B4.float(), C4.float(), self.cfg.chunk_size)
        y = y + self.D.float()[:, None] * x4.float()
        out = self.out_proj(self.norm(y.reshape(b, length, self.di).to(u.dtype), z))
        return (out, (conv_state, last.float())) if return_state else out

    def step(self, u: torch.Tensor, state: State):
        b = u.shape[0]
        z, xbc, dt = self.in_proj(u).split([self.di, self.conv_dim, self.h], dim=-1)
        xbc, conv_state = ops.causal_conv1d_step(xbc, state[0], self.conv1d.weight.squeeze(1), self.conv1d.bias)
        x, B, C = F.silu(xbc).split([self.di, self.g * self.n, self.g * self.n], dim=-1)
        x3 = x.reshape(b, self.h, self.p)
        A = -torch.exp(self.A_log.float())
        y, ssm = ops.ssd_step(x3.float(), self._dt(dt), A, B.reshape(b, self.g, self.n).float(),
                              C.reshape(b, self.g, self.n).float(), state[1])
        y = y + self.D.float()[:, None] * x3.float()
        return self.out_proj(self.norm(y.reshape(b, self.di).to(u.dtype), z)), (conv_state, ssm)


MIXERS = {"s4d": S4DMixer, "mamba": MambaMixer, "mamba2": Mamba2Mixer}


class SSMBlock(nn.Module):
    """Pre-norm residual block ``u + mixer(norm(u))`` (HF ``MambaBlock`` layout: ``.norm``, ``.mixer``)."""

    def __init__(self, cfg, layer_idx: int):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.layer_norm_epsilon)
        self.mixer = MIXERS[cfg.mixer](cfg, layer_idx)

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None, return_state: bool = False):
        out = self.mixer(self.norm(u), mask, return_state)
        if return_state:
            return u + out[0], out[1]
        return u + out

    def step(self, u: torch.Tensor, state: State):
        y, state = self.mixer.step(self.norm(u), state)
        return u + y, state
