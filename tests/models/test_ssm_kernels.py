"""Kernel dispatch (``models/ssm/kernels.py``) on a CPU machine: fake ``mamba_ssm`` / ``causal_conv1d``
modules injected into ``sys.modules`` record their calls and delegate to the pure-PyTorch reference, so the
selection rules and the layers' glue around the kernels (argument layouts, returned states) are checked
without a GPU. The real kernels never ran here."""

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from reasonrl.models.ssm import SSMConfig, SSMForCausalLM, kernels, ops


@pytest.fixture
def fake_kernels(monkeypatch):
    """Install fake kernel packages; returns the list of recorded calls ``(name, shapes)``."""
    calls = []

    def conv(x, weight, bias=None, activation=None):
        calls.append(("conv", tuple(x.shape)))
        assert activation == "silu" and weight.dim() == 2
        return F.silu(ops.causal_conv1d(x, weight, bias)[0])

    def scan(u, delta, A, B, C, D=None, return_last_state=False):
        calls.append(("scan", tuple(u.shape), tuple(B.shape)))
        assert B.shape[1] == A.shape[1] and B.shape[2] == u.shape[2]  # (b, n, l) as mamba-ssm takes it
        y, last = ops.selective_scan(u, delta, A, B.transpose(1, 2), C.transpose(1, 2), D)
        return (y, last) if return_last_state else y

    def ssd(x, dt, A, B, C, chunk_size, return_final_states=False):
        calls.append(("ssd", tuple(x.shape), chunk_size))
        y, final = ops.ssd_chunked(x, dt, A, B, C, chunk_size)
        return (y, final) if return_final_states else y

    mods = {"causal_conv1d": {"causal_conv1d_fn": conv}, "mamba_ssm": {}, "mamba_ssm.ops": {},
            "mamba_ssm.ops.selective_scan_interface": {"selective_scan_fn": scan}, "mamba_ssm.ops.triton": {},
            "mamba_ssm.ops.triton.ssd_combined": {"mamba_chunk_scan_combined": ssd}}
    for name, attrs in mods.items():
        mod = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delenv("REASONRL_SSM_KERNELS", raising=False)
    kernels._load.cache_clear()
    yield calls
    kernels._load.cache_clear()


def _lm(mixer: str, **kw) -> SSMForCausalLM:
    torch.manual_seed(0)
    extra = dict(head_dim=8, chunk_size=4) if mixer == "mamba2" else {}
    return SSMForCausalLM(SSMConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, mixer=mixer,
                                    state_size=4, **extra, **kw)).eval()


@pytest.mark.parametrize("mixer", ["mamba", "mamba2"])
def test_cpu_tensors_never_take_the_kernel_path(fake_kernels, mixer):
    assert kernels._load() is not None  # the packages "import"
    x = torch.zeros(2)
    assert kernels.kernels_for(x) is None
    with torch.no_grad():
        _lm(mixer)(torch.randint(0, 30, (2, 7)))
    assert fake_kernels == []


@pytest.mark.parametrize("mixer", ["mamba", "mamba2"])
def test_on_cuda_the_layers_call_the_kernels_and_match_the_reference(fake_kernels, monkeypatch, mixer):
    """With the device test standing in for CUDA the parallel form goes through the kernels (each layer:
    one conv and one scan/SSD call), gives the reference's logits and states, and the recurrent step
    continues from the kernel path's state; ``use_kernels=False`` keeps the reference."""
    ids = torch.randint(0, 30, (2, 9), generator=torch.Generator().manual_seed(1))
    m = _lm(mixer)
    with torch.no_grad():
        ref_logits = m(ids).logits
        ref_last, ref_states = m.prefill(ids)
    monkeypatch.setattr(kernels, "_on_cuda", lambda x: True)
    with torch.no_grad():
        logits = m(ids).logits
        last, states = m.prefill(ids)
        step_logits, _ = m.step(ids[:, -1], states)
        ref_step, _ = m.step(ids[:, -1], ref_states)
    kinds = [c[0] for c in fake_kernels]
    core = "scan" if mixer == "mamba" else "ssd"
    assert kinds.count("conv") == kinds.count(core) == 4  # 2 layers x (forward + prefill); the step: none
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, ref_last, rtol=1e-5, atol=1e-5)
    for a, b in zip(states, ref_states):
        for u, v in zip(a, b):
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step_logits, ref_step, rtol=1e-5, atol=1e-5)
    fake_kernels.clear()
    with torch.no_grad():
        _lm(mixer, use_kernels=False)(ids)
    assert fake_kernels == []


def test_kernels_need_both_packages_and_can_be_switched_off(fake_kernels, monkeypatch):
    monkeypatch.setattr(kernels, "_on_cuda", lambda x: True)
    x = torch.zeros(1)
    assert kernels.kernels_for(x) is not None and kernels.kernels_for(x, enabled=False) is None
    kernels._load.cache_clear()
    monkeypatch.setenv("REASONRL_SSM_KERNELS", "0")
    assert kernels.kernels_for(x) is None
    monkeypatch.delenv("REASONRL_SSM_KERNELS")
    kernels._load.cache_clear()
    monkeypatch.setitem(sys.modules, "causal_conv1d", None)  # mamba-ssm alone: no kernels at all
    assert kernels.kernels_for(x) is None
