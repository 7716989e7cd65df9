"""SSM maths: each layer's parallel form (FFT convolution, associative/sequential scan, chunked SSD)
equals its recurrent step (fp32), hand-checked small cases, and gradients vs finite differences (float64)."""

import math

import pytest
import torch

from reasonrl.models.ssm import ops


def _gen(seed=0):
    g = torch.Generator().manual_seed(seed)
    return lambda *s, dtype=torch.float32: torch.randn(*s, generator=g, dtype=dtype)


def test_causal_conv1d_matches_step_and_hand_case():
    r = _gen()
    x, w, bias = r(2, 3, 9), r(3, 4), r(3)
    y, state = ops.causal_conv1d(x, w, bias)
    s = torch.zeros(2, 3, 3)
    steps = []
    for t in range(9):
        yt, s = ops.causal_conv1d_step(x[:, :, t], s, w, bias)
        steps.append(yt)
    torch.testing.assert_close(torch.stack(steps, -1), y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s, state)
    # hand case: weight [a, b] on inputs 1, 2, 3 -> outputs b*1, a*1 + b*2, a*2 + b*3
    y1, st = ops.causal_conv1d(torch.tensor([[[1.0, 2.0, 3.0]]]), torch.tensor([[10.0, 1.0]]), None)
    assert y1.flatten().tolist() == [1.0, 12.0, 23.0] and st.flatten().tolist() == [3.0]
    # shorter than the kernel: the state is left-padded with zeros
    _, st2 = ops.causal_conv1d(torch.tensor([[[5.0]]]), torch.ones(1, 4), None)
    assert st2.flatten().tolist() == [0.0, 0.0, 5.0]


@pytest.mark.parametrize("kind", ["lin", "inv", "real"])
def test_s4d_fft_convolution_equals_recurrence(kind):
    r = _gen(1)
    d, n2, length = 4, 8, 37
    A = ops.s4d_init(d, n2, kind)
    log_dt = torch.linspace(math.log(1e-3), math.log(1e-1), d)
    C = torch.complex(r(d, n2), r(d, n2))
    D, u = r(d), r(2, d, length)
    y = ops.s4d_conv(u, log_dt, A, C, D)
    state = torch.zeros(2, d, n2, dtype=torch.complex64)
    ys = []
    for t in range(length):
        yt, state = ops.s4d_step(u[:, :, t], state, log_dt, A, C, D)
        ys.append(yt)
    torch.testing.assert_close(torch.stack(ys, -1), y, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ops.s4d_final_state(u, log_dt, A), state, rtol=1e-4, atol=1e-4)


def test_s4d_kernel_hand_case():
    # one real mode λ = -1, Δ = 1, C = 1: K_l = 2 * (e^-1 - 1)/(-1) * e^-l
    K = ops.s4d_kernel(torch.zeros(1), torch.tensor([[-1.0 + 0j]]), torch.tensor([[1.0 + 0j]]), 3)
    expect = [2 * (1 - math.exp(-1)) * math.exp(-l) for l in range(3)]
    torch.testing.assert_close(K.flatten(), torch.tensor(expect))


def _scan_inputs(seed=2, b=2, d=5, n=4, length=23, dtype=torch.float32):
    r = _gen(seed)
    u = r(b, d, length, dtype=dtype)
    delta = torch.nn.functional.softplus(r(b, d, length, dtype=dtype))
    A = -torch.exp(r(d, n, dtype=dtype) * 0.5)
    return u, delta, A, r(b, length, n, dtype=dtype), r(b, length, n, dtype=dtype), r(d, dtype=dtype)


@pytest.mark.parametrize("mode", ["sequential", "autograd", "parallel"])
def test_selective_scan_equals_recurrent_step(mode):
    u, delta, A, B, C, D = _scan_inputs()
    y, last = ops.selective_scan(u, delta, A, B, C, D, mode=mode)
    state = torch.zeros(2, 5, 4)
    ys = []
    for t in range(u.shape[-1]):
        yt, state = ops.selective_step(u[..., t], delta[..., t], A, B[:, t], C[:, t], D, state)
        ys.append(yt)
    torch.testing.assert_close(torch.stack(ys, -1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, state, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length", [1, 2, 37])
def test_fused_scan_values_and_gradients_equal_the_autograd_loop(length):
    """``mode="sequential"`` (hand-written backward) vs the plain autograd loop, fp32, at a Mamba-like
    shape: outputs, last state and every input's gradient under a loss using both outputs."""
    base = _scan_inputs(seed=7, b=3, d=6, n=5, length=length)
    res = {}
    for mode in ("autograd", "sequential"):
        args = [t.clone().requires_grad_() for t in base]
        y, last = ops.selective_scan(*args, mode=mode)
        w = torch.linspace(-1, 1, y.numel()).view_as(y)
        ((y * w).sum() + (last ** 2).sum()).backward()
        res[mode] = (y.detach(), last.detach(), [a.grad for a in args])
    (y0, l0, g0), (y1, l1, g1) = res["autograd"], res["sequential"]
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-5)
    for name, a, b in zip("u delta A B C D".split(), g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_inference_scan_equals_the_autograd_loop():
    """Without gradients ``mode="sequential"`` keeps one state instead of every h_t; same values."""
    args = _scan_inputs(seed=8, b=2, d=4, n=3, length=19)
    y0, l0 = ops.selective_scan(*args, mode="autograd")
    with torch.no_grad():
        y1, l1 = ops.selective_scan(*[a.clone().requires_grad_() for a in args], mode="sequential")
    y2, l2 = ops.selective_scan(*args, mode="sequential")  # no input requires grad
    for y, last in ((y1, l1), (y2, l2)):
        torch.testing.assert_close(y, y0, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(last, l0, rtol=1e-5, atol=1e-5)


def test_selective_scan_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="autograd"):
        ops.selective_scan(*_scan_inputs(), mode="fast")


def test_selective_scan_hand_case():
    # d = n = 1, A = -1, Δ = ln 2 (so Ā = 1/2, B̄ = ln 2), B = C = 1, D = 0, inputs 1, 0, 0
    ln2 = math.log(2)
    y, last = ops.selective_scan(torch.tensor([[[1.0, 0.0, 0.0]]]), torch.full((1, 1, 3), ln2),
                                 torch.tensor([[-1.0]]), torch.ones(1, 3, 1), torch.ones(1, 3, 1))
    torch.testing.assert_close(y.flatten(), torch.tensor([ln2, ln2 / 2, ln2 / 4]))
    assert abs(float(last) - ln2 / 4) < 1e-7


def _ssd_inputs(seed=3, b=2, length=29, h=4, p=3, g=2, n=5, dtype=torch.float32):
    r = _gen(seed)
    x = r(b, length, h, p, dtype=dtype)
    dt = torch.nn.functional.softplus(r(b, length, h, dtype=dtype))
    A = -torch.exp(r(h, dtype=dtype) * 0.5)
    return x, dt, A, r(b, length, g, n, dtype=dtype), r(b, length, g, n, dtype=dtype)


@pytest.mark.parametrize("chunk", [1, 4, 8, 29, 64])
def test_ssd_chunked_equals_recurrent_step(chunk):
    x, dt, A, B, C = _ssd_inputs()
    y, final = ops.ssd_chunked(x, dt, A, B, C, chunk)
    state = torch.zeros(2, 4, 3, 5)
    ys = []
    for t in range(x.shape[1]):
        yt, state = ops.ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], state)
        ys.append(yt)
    torch.testing.assert_close(torch.stack(ys, 1), y, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(final, state, rtol=1e-4, atol=1e-5)


def test_ssd_initial_state_continues_a_split_sequence():
    x, dt, A, B, C = _ssd_inputs(length=20)
    y, final = ops.ssd_chunked(x, dt, A, B, C, 8)
    y1, s1 = ops.ssd_chunked(x[:, :11], dt[:, :11], A, B[:, :11], C[:, :11], 8)
    y2, s2 = ops.ssd_chunked(x[:, 11:], dt[:, 11:], A, B[:, 11:], C[:, 11:], 8, initial_state=s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(s2, final, rtol=1e-4, atol=1e-5)


def test_ssd_is_the_masked_matrix_form():
    # y = M x with M_ij = C_iᵀB_j Π_{k=j+1..i} a_k (one head, one group, Δ folded into x)
    x, dt, A, B, C = _ssd_inputs(b=1, length=7, h=1, p=1, g=1, n=3)
    y, _ = ops.ssd_chunked(x, dt, A, B, C, 4)
    a = torch.exp(dt[0, :, 0] * A[0])
    M = torch.zeros(7, 7)
    for i in range(7):
        for j in range(i + 1):
            M[i, j] = (C[0, i, 0] @ B[0, j, 0]) * torch.prod(a[j + 1: i + 1])
    torch.testing.assert_close(y[0, :, 0, 0], M @ (x[0, :, 0, 0] * dt[0, :, 0]), rtol=1e-5, atol=1e-6)


def test_segsum_values():
    s = ops.segsum(torch.tensor([1.0, 2.0, 3.0]))
    assert s[2, 0] == 5.0 and s[2, 2] == 0.0 and s[1, 0] == 2.0 and s[0, 1] == -math.inf


def test_gradients_match_finite_differences():
    dd = torch.float64
    u, delta, A, B, C, D = _scan_inputs(b=1, d=2, n=2, length=5, dtype=dd)
    for mode in ("sequential", "autograd", "parallel"):
        args = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D)]
        assert torch.autograd.gradcheck(lambda *a: ops.selective_scan(*a, mode=mode)[0], args)
    # the hand-written backward also through the returned last state (what a split prefill differentiates)
    args = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D)]
    assert torch.autograd.gradcheck(lambda *a: ops.selective_scan(*a, mode="sequential"), args)
    x, dt, A2, B2, C2 = _ssd_inputs(b=1, length=6, h=2, p=2, g=1, n=2, dtype=dd)
    args = [t.clone().requires_grad_() for t in (x, dt, A2, B2, C2)]
    assert torch.autograd.gradcheck(lambda *a: ops.ssd_chunked(*a, chunk=4)[0], args)
    r = _gen(5)
    log_dt = torch.tensor([-2.0, -3.0], dtype=dd, requires_grad=True)
    Ac = torch.complex(-torch.rand(2, 2, dtype=dd) - 0.1, torch.rand(2, 2, dtype=dd)).requires_grad_()
    Cc = torch.complex(r(2, 2, dtype=dd), r(2, 2, dtype=dd)).requires_grad_()
    uu, Dd = r(1, 2, 6, dtype=dd).requires_grad_(), r(2, dtype=dd).requires_grad_()
    assert torch.autograd.gradcheck(ops.s4d_conv, (uu, log_dt, Ac, Cc, Dd))
    xc, wc = r(1, 2, 5, dtype=dd).requires_grad_(), r(2, 3, dtype=dd).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ops.causal_conv1d(a, b, None)[0], (xc, wc))
