"""models/lora.py and rollout/lora_engine.py without a training loop: config validation, the merged
sampling copy, the adapter-only weight sync, the reference view, unsupported combinations."""

import sys

import pytest
import torch

from reasonrl.config import load_config
from reasonrl.errors import ConfigError

peft = pytest.importorskip("peft", reason="LoRA needs the 'lora' extra (pip install 'reasonrl[lora]')")

from reasonrl.models import lora  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from reasonrl.models.tiny import TinySpec, _tokenizer_corpus, build_model
    from reasonrl.models.tokenizer import train_tokenizer

    spec = TinySpec(hidden=32, layers=1, heads=2, ffn=64, demos=50, seed=0)
    tok = train_tokenizer(_tokenizer_corpus(spec), 128)
    return build_model(spec, tok), tok


def _lcfg(*over):
    return load_config(None, ["model.lora.rank=4", *over]).model.lora


def _wrapped(tiny, *over):
    import copy

    torch.manual_seed(0)
    model = lora.apply_lora(copy.deepcopy(tiny[0]), _lcfg(*over))
    with torch.no_grad():  # a non-zero adapter, as after some training
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("over, msg", [
    (["model.lora.rank=0"], "model.lora.rank"),
    (["model.lora.alpha=0"], "model.lora.alpha"),
    (["model.lora.dropout=1.0"], "model.lora.dropout"),
    (["model.lora.target_modules=[]"], "at least one module name"),
    (["model.lora.ranks=4"], "unknown field"),
])
def test_bad_lora_config_names_the_field(over, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, over)


def test_default_is_full_fine_tuning_and_any_field_enables_lora():
    assert load_config(None, []).model.lora is None
    lc = load_config(None, ["model.lora.target_modules=[q_proj,v_proj]"]).model.lora
    assert (lc.rank, lc.alpha, lc.dropout, lc.target_modules) == (8, 16.0, 0.0, ["q_proj", "v_proj"])


def test_unknown_target_module_lists_the_valid_names(tiny):
    with pytest.raises(ConfigError, match=r"\['nope'\].*q_proj"):
        lora.apply_lora(tiny[0], _lcfg("model.lora.target_modules=[nope,q_proj]"))


def test_fresh_adapter_is_the_base_model_and_only_adapters_train(tiny):
    import copy

    base = tiny[0].eval()
    model = lora.apply_lora(copy.deepcopy(base), _lcfg("model.lora.target_modules=[q_proj,v_proj]")).eval()
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    assert torch.equal(model(input_ids=ids).logits, base(input_ids=ids).logits)  # B = 0 at init
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(("q_proj.lora_" in n or "v_proj.lora_" in n) for n in names)


def test_merge_into_equals_peft_merge_and_reference_view_is_the_base(tiny):
    model = _wrapped(tiny).eval()
    plain = lora.merged_copy(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.mul_(-2.0)  # the adapter moves after the copy was made: merge_into must catch up
    lora.merge_into(plain, model)
    ids = torch.tensor([[1, 5, 7, 9, 11, 13]])
    torch.testing.assert_close(plain(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5, rtol=0)
    ref = lora.reference_view(model)
    assert ref.state_dict() == {}  # nothing of it goes into a checkpoint
    assert torch.equal(ref(input_ids=ids).logits, tiny[0].eval()(input_ids=ids).logits)
    assert any(p.requires_grad for p in model.parameters())  # the view froze nothing


@pytest.mark.parametrize("engine", ["hf", "native"])
def test_engines_sample_the_adapted_policy_and_sync_adapters_only(tiny, engine):
    from reasonrl.rollout.factory import make_engine
    from reasonrl.rollout.logprobs import sequence_logprobs
    from reasonrl.rollout.sampling import SamplingParams

    cfg = load_config(None, [f"rollout.engine={engine}"])
    policy = _wrapped(tiny).eval()
    eng = make_engine(cfg, policy, tiny[1])
    params = SamplingParams(n=2, max_new_tokens=8, seed=1)
    ro = eng.generate(["1+2=", "3+4="], params)
    # the sampler's log-probs are the adapted policy's (not the base's)
    lp = sequence_logprobs(policy, ro, temperature=1.0)[0]
    torch.testing.assert_close(ro.rollout_logp, lp, atol=1e-4, rtol=0)

    other = _wrapped(tiny).eval()
    with torch.no_grad():
        for p in other.parameters():
            if p.requires_grad:
                p.add_(0.3)
    sent = lora.sync_state_dict(other)
    assert sent and all("lora_" in k for k in sent)
    eng.load_weights(sent)
    assert eng.last_load_bytes == sum(v.numel() * v.element_size() for v in sent.values())
    ro2 = eng.generate(["1+2=", "3+4="], params)
    torch.testing.assert_close(ro2.rollout_logp, sequence_logprobs(other, ro2, temperature=1.0)[0], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="adapter tensors only"):
        eng.load_weights(tiny[0].state_dict())


@pytest.mark.parametrize("over, msg", [(["rollout.engine=vllm"], "vllm"), (["distributed.mode=ray"], "ray")])
def test_unsupported_combinations_fail_naming_the_field(over, msg):
    try:
        cfg = load_config(None, ["model.lora.rank=4", *over])
    except ConfigError as e:  # vllm missing on this machine: the engine field already fails at load
        assert msg in str(e)
        return
    with pytest.raises(ConfigError, match=f"model.lora with .*{msg}"):
        lora.check_supported(cfg)


def test_any_hf_causal_lm_gpt2_conv1d_merge_and_adapter_round_trip(tmp_path):
    """GPT-2 keeps its projections as transposed Conv1D layers: the merged copy and the saved adapter
    must still compute the adapted policy."""
    from peft import PeftModel
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)
    base = GPT2LMHeadModel(cfg).eval()
    base.save_pretrained(tmp_path / "base")
    assert {"c_attn", "c_fc", "c_proj"} <= set(lora.linear_module_names(base))
    model = lora.apply_lora(base, _lcfg()).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_" in n:
                p.normal_(0, 0.1)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    want = model(input_ids=ids).logits
    plain = lora.merged_copy(model)
    torch.testing.assert_close(plain(input_ids=ids).logits, want, atol=1e-5, rtol=0)
    model.save_pretrained(tmp_path / "adapter")
    again = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(tmp_path / "base"), tmp_path / "adapter").eval()
    assert torch.equal(again(input_ids=ids).logits, want)


def test_missing_peft_fails_at_load_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ConfigError, match=r"model.lora: LoRA needs the peft package: pip install 'reasonrl\[lora\]'"):
        load_config(None, ["model.lora.rank=4"])
    load_config(None, [])  # full fine-tuning needs no peft


def test_lora_scoring_runs_the_lm_head_on_response_positions_only(tiny):
    """PEFT's forward takes **kwargs: looking through the wrappers keeps ``logits_to_keep`` (the LM head
    on the response positions only) for the LoRA policy and its reference view, with equal log-probs."""
    from reasonrl.batch import Rollouts
    from reasonrl.rollout.logprobs import sequence_logprobs
    from reasonrl.rollout.lora_engine import forward_parameters

    model = _wrapped(tiny).eval()
    ref = lora.reference_view(model)
    assert "logits_to_keep" in forward_parameters(model) and "logits_to_keep" in forward_parameters(ref)
    b = Rollouts(prompt_ids=torch.randint(3, 100, (2, 9)), prompt_mask=torch.ones(2, 9, dtype=torch.long),
                 response_ids=torch.randint(3, 100, (2, 4)), loss_mask=torch.ones(2, 4),
                 rollout_logp=torch.zeros(2, 4), group_ids=torch.arange(2), task_index=[0, 1],
                 response_text=["", ""], truncated=torch.zeros(2, dtype=torch.bool))
    head = model.get_base_model().lm_head
    seen = []
    hook = head.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1]))
    try:
        got, _ = sequence_logprobs(model, b, temperature=1.0)
        got_ref, _ = sequence_logprobs(ref, b, temperature=1.0)
    finally:
        hook.remove()
    assert seen == [5, 5]  # 4 response tokens + the last prompt position, not all 13 positions
    ids = torch.cat([b.prompt_ids, b.response_ids], 1)
    full = torch.log_softmax(model(input_ids=ids).logits[:, 8:-1].float(), -1)
    torch.testing.assert_close(got, full.gather(-1, b.response_ids.unsqueeze(-1)).squeeze(-1), atol=1e-5, rtol=0)
    assert not torch.allclose(got, got_ref)  # the reference view scores the base, not the adapted policy
