"""SSM blocks and LM: step-wise decoding equals the full forward, left padding is exact, our Mamba /
Mamba-2 mixers equal transformers' ``MambaMixer`` / ``Mamba2Mixer`` (torch path) with copied weights,
HF-format save/load, and HF Mamba checkpoints through ``load_policy`` + ``recurrent_view``."""

import pytest
import torch
from transformers import Mamba2Config, MambaConfig

from reasonrl.models.ssm import SSMConfig, SSMForCausalLM, is_recurrent_model, recurrent_view
from reasonrl.models.ssm import kernels
from reasonrl.models.ssm.layers import Mamba2Mixer, MambaMixer

TINY = {
    "mamba": dict(mixer="mamba", state_size=8),
    "mamba2": dict(mixer="mamba2", state_size=8, head_dim=8, chunk_size=8),
    "s4d": dict(mixer="s4d", state_size=8),
}


def tiny_lm(mixer: str, seed: int = 0, **kw) -> SSMForCausalLM:
    torch.manual_seed(seed)
    cfg = SSMConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, **{**TINY[mixer], **kw})
    return SSMForCausalLM(cfg).eval()


def assert_cached_decoding_matches(rec, full: torch.Tensor, ids: torch.Tensor, prefix: int) -> None:
    """``rec.prefill`` on the first ``prefix`` tokens, then ``rec.step`` token by token, reproduce the full
    forward's logits ``full`` at every position (fp32 tolerance)."""
    logits, states = rec.prefill(ids[:, :prefix])
    torch.testing.assert_close(logits, full[:, prefix - 1], rtol=1e-4, atol=1e-4)
    for t in range(prefix, ids.shape[1]):
        logits, states = rec.step(ids[:, t], states)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mixer", sorted(TINY))
def test_stepwise_decoding_equals_full_forward(mixer):
    m = tiny_lm(mixer)
    ids = torch.randint(0, 40, (3, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = m(ids).logits
        assert_cached_decoding_matches(m, full, ids, 5)
        # from the zero state, token by token
        states = m.init_state(3)
        for t in range(21):
            logits, states = m.step(ids[:, t], states)
        torch.testing.assert_close(logits, full[:, -1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mixer", sorted(TINY))
def test_left_padding_is_exact(mixer):
    m = tiny_lm(mixer, seed=3)
    ids = torch.randint(1, 40, (1, 9), generator=torch.Generator().manual_seed(2))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 4), torch.ones(1, 9)], 1).long()
    with torch.no_grad():
        a = m(ids).logits
        b = m(padded, attention_mask=mask).logits[:, 4:]
        la, sa = m.prefill(ids)
        lb, sb = m.prefill(padded, mask)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-5)
    for x, y in zip(sa, sb):
        for u, v in zip(x, y):
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)


def test_parallel_and_sequential_scan_modes_agree():
    a, b = tiny_lm("mamba", scan_mode="sequential"), tiny_lm("mamba", scan_mode="parallel")
    ids = torch.randint(0, 40, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(a(ids).logits, b(ids).logits, rtol=1e-5, atol=1e-5)


def test_scan_modes_give_the_same_parameter_gradients():
    """The hand-written scan backward inside the whole LM (masked, left-padded batch): every parameter's
    gradient equals the autograd loop's (fp32)."""
    ids = torch.randint(0, 40, (3, 13), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    grads = []
    for mode in ("autograd", "sequential"):
        m = tiny_lm("mamba", scan_mode=mode).train()
        m(ids, attention_mask=mask).logits.log_softmax(-1)[:, :, 3].sum().backward()
        grads.append({k: p.grad for k, p in m.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-4, atol=1e-6, msg=k)


def _hf_mixer_case(kind: str):
    from transformers.models.mamba.modeling_mamba import MambaMixer as HFMamba
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer as HFMamba2

    torch.manual_seed(0)
    if kind == "mamba":
        hcfg = MambaConfig(vocab_size=40, hidden_size=24, state_size=6, num_hidden_layers=1, expand=2)
        hf, ours_cls = HFMamba(hcfg, layer_idx=0), MambaMixer
    else:
        hcfg = Mamba2Config(vocab_size=40, hidden_size=24, state_size=6, num_hidden_layers=1, expand=2,
                            num_heads=6, head_dim=8, n_groups=2, chunk_size=5)
        hf, ours_cls = HFMamba2(hcfg, layer_idx=0), Mamba2Mixer
    with torch.no_grad():  # move every parameter off its init so nothing matches by accident
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = ours_cls(SSMConfig.from_hf(hcfg))
    ours.load_state_dict(hf.state_dict(), strict=True)
    return hf.eval(), ours.eval()


@pytest.mark.parametrize("kind", ["mamba", "mamba2"])
def test_mixer_equals_hf_mixer_with_copied_weights(kind):
    hf, ours = _hf_mixer_case(kind)
    x = torch.randn(2, 13, 24)
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, :4] = 0  # left padding on row 1
    with torch.no_grad():
        ref = hf(x, attention_mask=mask)
        got = ours(x, mask.float())
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), hf(x), rtol=1e-5, atol=1e-5)


def test_hf_mamba_checkpoint_loads_and_runs_recurrently(tmp_path):
    """A randomly initialised HF MambaForCausalLM saved to disk goes through ``load_policy``; our
    recurrent view shares its parameters and its step-wise logits equal HF's forward."""
    from transformers import MambaForCausalLM, Mamba2ForCausalLM

    from reasonrl.models.loading import load_policy
    from ssm_helpers import save_tokenizer

    for cls, cfg in ((MambaForCausalLM, MambaConfig(vocab_size=48, hidden_size=32, state_size=8,
                                                     num_hidden_layers=2)),
                     (Mamba2ForCausalLM, Mamba2Config(vocab_size=48, hidden_size=32, state_size=8,
                                                      num_hidden_layers=2, num_heads=8, head_dim=8, n_groups=1,
                                                      chunk_size=4))):
        torch.manual_seed(0)
        d = tmp_path / cfg.model_type
        cls(cfg).save_pretrained(d)
        save_tokenizer(d)
        model, tok = load_policy(d)
        assert type(model) is cls and is_recurrent_model(model)
        view = recurrent_view(model)
        assert view.backbone.layers[1].mixer.in_proj.weight is model.backbone.layers[1].mixer.in_proj.weight
        ids = torch.randint(0, 48, (2, 11))
        with torch.no_grad():
            assert_cached_decoding_matches(view, model(ids).logits, ids, 3)


def test_save_and_load_through_load_policy(tmp_path):
    from reasonrl.models.loading import load_policy
    from ssm_helpers import save_tokenizer

    m = tiny_lm("mamba2")
    m.save_pretrained(tmp_path)
    save_tokenizer(tmp_path)
    loaded, _ = load_policy(tmp_path)
    assert isinstance(loaded, SSMForCausalLM) and loaded.config.mixer == "mamba2"
    ids = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, m(ids).logits)
    assert loaded.lm_head.weight is loaded.backbone.embeddings.weight


def test_kernel_selection_falls_back_on_cpu(monkeypatch):
    """CPU tensors never take the kernel path, and a missing package means no kernels; the layer
    then runs the pure-PyTorch reference (the CUDA path itself is untested on this machine)."""
    x = torch.zeros(1)
    assert kernels.kernels_for(x) is None and kernels.kernels_for(x, enabled=False) is None
    kernels._load.cache_clear()
    monkeypatch.setenv("REASONRL_SSM_KERNELS", "0")
    assert kernels._load() is None
    kernels._load.cache_clear()
    monkeypatch.delenv("REASONRL_SSM_KERNELS")
    import importlib.util

    have = importlib.util.find_spec("mamba_ssm") is not None and importlib.util.find_spec("causal_conv1d") is not None
    assert (kernels._load() is not None) == have
    kernels._load.cache_clear()
    m = tiny_lm("mamba", use_kernels=True)
    with torch.no_grad():
        assert torch.isfinite(m(torch.randint(0, 40, (1, 6))).logits).all()


def test_bad_mixer_is_refused():
    with pytest.raises(ValueError, match="mixer must be one of"):
        SSMConfig(mixer="transformer")
