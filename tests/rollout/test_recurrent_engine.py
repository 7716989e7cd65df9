"""The recurrent (SSM) engine: greedy output independent of slot count (continuous batching with
refills and compaction), equal to naive full-forward greedy decoding, rollout log-probs equal to the
learner's parallel-form ``sequence_logprobs``, HF Mamba through the same engine, factory selection."""

from types import SimpleNamespace

import pytest
import torch

from reasonrl.models.ssm import SSMConfig, SSMForCausalLM
from reasonrl.rollout.logprobs import sequence_logprobs
from reasonrl.rollout.recurrent_engine import RecurrentEngine
from reasonrl.rollout.sampling import SamplingParams

from rollout_tiny import CHARS, EOS, SPECIALS

VOCAB = len(SPECIALS) + len(CHARS)
PROMPTS = ["12+3=", "a", "7*8-1=", "hello world", "9"]
MIXERS = {
    "mamba": dict(mixer="mamba", state_size=8),
    "mamba2": dict(mixer="mamba2", state_size=8, head_dim=8, chunk_size=4),
    "s4d": dict(mixer="s4d", state_size=8),
}


def ssm(mixer: str, seed: int = 0) -> SSMForCausalLM:
    torch.manual_seed(seed)
    cfg = SSMConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, initializer_range=0.3,
                    pad_token_id=0, bos_token_id=1, eos_token_id=EOS, **MIXERS[mixer])
    return SSMForCausalLM(cfg).eval()


# several frequent stop ids so rows end at different lengths and slots get refilled
STOPS = list(range(4, 12))


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_greedy_is_independent_of_slot_count(tok, mixer):
    m = ssm(mixer)
    p = SamplingParams(n=2, greedy=True, max_new_tokens=12)
    outs = [RecurrentEngine(m, tok, slots=s, stop_token_ids=STOPS).generate(PROMPTS, p) for s in (None, 1, 3)]
    ref = outs[0]
    assert len(set(ref.loss_mask.sum(1).tolist())) > 1, "rows should end at different lengths"
    for o in outs[1:]:
        assert torch.equal(o.response_ids, ref.response_ids) and o.response_text == ref.response_text
        torch.testing.assert_close(o.rollout_logp, ref.rollout_logp, rtol=1e-5, atol=1e-5)
        assert o.info["finish_reason"] == ref.info["finish_reason"]


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_greedy_equals_naive_full_forward_decoding(tok, mixer):
    m = ssm(mixer, seed=1)
    out = RecurrentEngine(m, tok, slots=2, eos_token_ids=[]).generate(
        PROMPTS[:3], SamplingParams(greedy=True, max_new_tokens=10))
    for i, prompt in enumerate(PROMPTS[:3]):
        ids = tok(prompt)["input_ids"]
        with torch.no_grad():
            for _ in range(10):
                ids.append(int(m(torch.tensor([ids])).logits[0, -1].argmax()))
        assert out.response_ids[i].tolist() == ids[-10:]


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_rollout_logprobs_match_parallel_training_form(tok, mixer):
    m = ssm(mixer, seed=2)
    p = SamplingParams(n=3, temperature=0.7, top_k=20, max_new_tokens=14, seed=5)
    ro = RecurrentEngine(m, tok, slots=4, stop_token_ids=STOPS).generate(PROMPTS, p)
    with torch.no_grad():
        logp, _ = sequence_logprobs(m, ro, temperature=p.logp_temperature)
    mask = ro.loss_mask.bool()
    assert (ro.rollout_logp[mask] < 0).all()
    assert float((logp - ro.rollout_logp).abs()[mask].max()) < 1e-4
    assert ro.group_ids.tolist() == [i for i in range(len(PROMPTS)) for _ in range(3)]


def test_hf_mamba_runs_through_the_recurrent_engine(tok):
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    hf = MambaForCausalLM(MambaConfig(vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=2,
                                      pad_token_id=0, bos_token_id=1, eos_token_id=EOS)).eval()
    eng = RecurrentEngine(hf, tok, slots=3, stop_token_ids=STOPS)
    ro = eng.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=8, seed=1))
    with torch.no_grad():
        logp, _ = sequence_logprobs(hf, ro, temperature=1.0)
    mask = ro.loss_mask.bool()
    assert float((logp - ro.rollout_logp).abs()[mask].max()) < 1e-4
    # learner updates are seen without a weight copy: the view shares the HF parameters
    with torch.no_grad():
        hf.backbone.embeddings.weight.mul_(3.0)
    ro2 = eng.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=8, seed=1))
    with torch.no_grad():
        logp2, _ = sequence_logprobs(hf, ro2, temperature=1.0)
    assert float((logp2 - ro2.rollout_logp).abs()[ro2.loss_mask.bool()].max()) < 1e-4


def test_factory_picks_the_recurrent_engine_for_ssm_policies(tok, model):
    from reasonrl.rollout.factory import make_engine
    from reasonrl.rollout.hf_engine import HFEngine

    cfg = SimpleNamespace(rollout=SimpleNamespace(engine="hf", micro_batch=4, decode_graph="off"))
    eng = make_engine(cfg, ssm("mamba2"), tok)
    assert isinstance(eng, RecurrentEngine) and eng.slots == 4
    cfg.rollout.engine = "native"
    assert isinstance(make_engine(cfg, ssm("mamba"), tok), RecurrentEngine)
    cfg.rollout.engine = "hf"
    assert isinstance(make_engine(cfg, model, tok), HFEngine)  # a transformer is untouched
    with pytest.raises(ValueError, match="needs an SSM policy"):
        RecurrentEngine(model, tok)


def test_state_size_does_not_grow_with_generation_length(tok):
    m = ssm("mamba2")
    eng = RecurrentEngine(m, tok, eos_token_ids=[])
    sizes = []
    for n_new in (4, 64):
        eng.generate(["1+1="], SamplingParams(greedy=True, max_new_tokens=n_new))
        sizes.append(eng.last_stats["state_bytes"])
        assert eng.last_stats["gen_tokens"] == n_new
    assert sizes[0] == sizes[1] > 0
