"""NativeEngine: HF-generate-identical greedy output, sane sampling, continuous batching, log-probs
equal to the learner's, weight freshness, and clear refusals."""

import pytest
import torch
from rollout_tiny import BOS, EOS, PAD, build_model, chi2_ok

from reasonrl.rollout import Engine, HFEngine, SamplingParams, sequence_logprobs
from reasonrl.rollout.native_engine import NativeEngine, UnsupportedModelError, rms_norm

PROMPTS = ["ab", "1+2=", "compute 7*8.", "q", "hello there world", "9"]


def _valid(r, i):
    return r.response_ids[i, : int(r.loss_mask[i].sum())].tolist()


def _hf_generate_rows(model, tok, prompts, max_new):
    """Reference continuations from ``model.generate`` (greedy, one prompt at a time, no padding)."""
    out = []
    for p in prompts:
        enc = tok([p], return_tensors="pt")
        with torch.no_grad():
            g = model.generate(**enc, do_sample=False, max_new_tokens=max_new, pad_token_id=PAD, eos_token_id=EOS)
        seq = g[0, enc["input_ids"].shape[1]:].tolist()
        out.append(seq[: seq.index(EOS) + 1] if EOS in seq else seq)
    return out


def _qwen2(seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=46, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
    m = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # non-zero q/k/v biases, so a dropped bias would show
        for blk in m.model.layers:
            for lin in (blk.self_attn.q_proj, blk.self_attn.k_proj, blk.self_attn.v_proj):
                lin.bias.normal_(0, 0.5)
        m.model.embed_tokens.weight.mul_(5)
    m.generation_config.eos_token_id = EOS
    m.generation_config.pad_token_id = PAD
    return m.eval()


def test_is_an_engine(model, tok):
    eng = NativeEngine(model, tok)
    assert isinstance(eng, Engine) and eng.tokenizer is tok


@pytest.mark.parametrize("slots", [None, 1, 4])
def test_greedy_identical_to_hf_generate(eos_model, tok, slots):
    r = NativeEngine(eos_model, tok, slots=slots).generate(PROMPTS, SamplingParams(n=2, greedy=True, max_new_tokens=14))
    ref = _hf_generate_rows(eos_model, tok, PROMPTS, 14)
    for i in range(len(r)):
        assert _valid(r, i) == ref[i // 2], i
    reasons = r.info["finish_reason"]
    assert "eos" in reasons and len(set(r.loss_mask.sum(1).tolist())) > 2  # ragged, early EOS
    assert r.truncated.tolist() == [x == "length" for x in reasons]


def test_qwen2_with_qkv_bias_matches_hf(tok):
    m = _qwen2()
    r = NativeEngine(m, tok, slots=3).generate(PROMPTS, SamplingParams(greedy=True, max_new_tokens=12))
    ref = _hf_generate_rows(m, tok, PROMPTS, 12)
    assert [_valid(r, i) for i in range(len(r))] == ref
    with torch.no_grad():
        lp, _ = sequence_logprobs(m, r, 1.0)
    torch.testing.assert_close(lp, r.rollout_logp, atol=2e-5, rtol=0)


def test_same_output_as_hf_engine_with_stop_strings(model, tok):
    """Stop strings (no EOS) follow HFEngine's rule exactly: the row ends with the token completing it."""
    kw = dict(eos_token_ids=[])
    full = HFEngine(model, tok, **kw).generate(PROMPTS, SamplingParams(greedy=True, max_new_tokens=20))
    stop = [full.response_text[0][4:6], full.response_text[2][7:9]]
    p = SamplingParams(n=2, greedy=True, max_new_tokens=20, stop=stop)
    a = NativeEngine(model, tok, slots=3, **kw).generate(PROMPTS, p)
    b = HFEngine(model, tok, **kw).generate(PROMPTS, p)
    assert a.response_text == b.response_text and a.info["finish_reason"] == b.info["finish_reason"]
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.loss_mask, b.loss_mask)
    assert a.info["finish_reason"].count("stop") >= 4
    torch.testing.assert_close(a.rollout_logp, b.rollout_logp, atol=1e-5, rtol=0)


def test_layout_matches_hf_engine(eos_model, tok):
    p = SamplingParams(n=3, greedy=True, max_new_tokens=6)
    a = NativeEngine(eos_model, tok, slots=5).generate(PROMPTS[:4], p, task_index=[10, 11, 12, 13])
    b = HFEngine(eos_model, tok, micro_batch=5).generate(PROMPTS[:4], p, task_index=[10, 11, 12, 13])
    for f in ("prompt_ids", "prompt_mask", "response_ids", "loss_mask", "group_ids", "truncated"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
        assert getattr(a, f).dtype == getattr(b, f).dtype, f
    assert a.task_index == b.task_index and a.info["prompt"] == b.info["prompt"]
    assert a.response_text == b.response_text
    assert (a.response_ids[a.loss_mask == 0] == PAD).all() and (a.rollout_logp[a.loss_mask == 0] == 0).all()


def test_continuous_batching_is_slot_count_independent(tok):
    """More rows than slots: refilled slots give exactly the all-slots result (greedy), and the slots
    stay busy while the queue is non-empty."""
    eos_model = build_model(seed=1, eos_bias=1.0)  # greedy lengths 3..16 on these prompts
    prompts = [f"compute {a}*{b}." for a in range(7) for b in range(3)]  # 21 prompts x 2 = 42 rows
    p = SamplingParams(n=2, greedy=True, max_new_tokens=16)
    runs = {}
    for slots in (None, 1, 5, 16):
        eng = NativeEngine(eos_model, tok, slots=slots)
        runs[slots] = eng.generate(prompts, p)
        if slots == 5:
            # 42 rows of mixed length through 5 slots: far fewer decode steps than 42 rows one by one
            st = eng.last_stats
            assert st["gen_tokens"] == float(runs[slots].loss_mask.sum())
            assert st["slot_busy"] > 0.8 and st["prefill_prompts"] == 21
    base = runs[None]
    assert len(set(base.loss_mask.sum(1).tolist())) > 3
    for slots, r in runs.items():
        assert torch.equal(r.response_ids, base.response_ids), slots
        assert r.info["finish_reason"] == base.info["finish_reason"]
        torch.testing.assert_close(r.rollout_logp, base.rollout_logp, atol=1e-5, rtol=0)


@pytest.mark.parametrize("params_kw", [{"temperature": 0.7}, {"temperature": 1.0, "top_k": 8},
                                       {"temperature": 1.3, "top_p": 0.9}, {"greedy": True}])
def test_rollout_logp_equals_learner(eos_model, tok, params_kw):
    params = SamplingParams(n=3, max_new_tokens=16, seed=11, **params_kw)
    r = NativeEngine(eos_model, tok, slots=7).generate(PROMPTS, params)
    lengths = r.loss_mask.sum(1)
    assert (lengths < 16).sum() >= 3 and lengths.max() > lengths.min()
    for i in range(len(r)):
        n = int(lengths[i])
        if r.info["finish_reason"][i] == "eos":
            assert r.response_ids[i, n - 1] == EOS
        assert EOS not in r.response_ids[i, : n - 1].tolist()
    with torch.no_grad():
        lp, _ = sequence_logprobs(eos_model, r, params.logp_temperature)
    m = r.loss_mask.bool()
    torch.testing.assert_close(lp[m], r.rollout_logp[m], atol=1e-5, rtol=0)


def test_one_step_distribution_matches_softmax(model, tok):
    n = 4000
    prompt = "1+2="
    r = NativeEngine(model, tok, eos_token_ids=[], slots=512).generate([prompt], SamplingParams(n=n, max_new_tokens=1, seed=9))
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1].double(), -1)
    counts = torch.bincount(r.response_ids[:, 0], minlength=probs.numel()).double()
    chi2_ok(counts, probs)
    torch.testing.assert_close(r.rollout_logp[:, 0], probs.log().float()[r.response_ids[:, 0]], atol=1e-5, rtol=0)


def test_later_steps_sample_the_conditional(model, tok):
    """Second token, given a forced first one: counts follow the model's conditional softmax, top-k
    truncation included (nothing outside the top 5 is ever drawn)."""
    first = NativeEngine(model, tok, eos_token_ids=[]).generate(["ab"], SamplingParams(greedy=True, max_new_tokens=1))
    t0 = int(first.response_ids[0, 0])
    eng = NativeEngine(model, tok, eos_token_ids=[], stop_token_ids=[], slots=256)
    r = eng.generate(["ab"], SamplingParams(n=3000, max_new_tokens=2, top_k=5, seed=4))
    with torch.no_grad():
        ids = torch.tensor([tok("ab")["input_ids"]])
        z1 = model(input_ids=ids).logits[0, -1].double()
    p1 = torch.softmax(z1, -1)
    keep1 = p1 >= torch.topk(p1, 5).values[-1]
    q1 = torch.where(keep1, p1, 0.0)
    q1 /= q1.sum()
    chi2_ok(torch.bincount(r.response_ids[:, 0], minlength=p1.numel()).double(), q1)
    rows = r.response_ids[:, 0] == t0
    assert int(rows.sum()) > 300
    with torch.no_grad():
        z2 = model(input_ids=torch.cat([ids, torch.tensor([[t0]])], 1)).logits[0, -1].double()
    p2 = torch.softmax(z2, -1)
    q2 = torch.where(p2 >= torch.topk(p2, 5).values[-1], p2, 0.0)
    q2 /= q2.sum()
    chi2_ok(torch.bincount(r.response_ids[rows, 1], minlength=p2.numel()).double(), q2)


def test_seeded_determinism(eos_model, tok):
    eng = NativeEngine(eos_model, tok, slots=5)
    p = SamplingParams(n=4, max_new_tokens=12, seed=123)
    a, b = eng.generate(PROMPTS, p), eng.generate(PROMPTS, p)
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.rollout_logp, b.rollout_logp)
    c = eng.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=12, seed=124))
    assert c.response_text != a.response_text


def test_sees_in_place_updates_and_load_weights(tok):
    """The engine reads the module's parameters: an optimizer-style in-place update is picked up at
    the next call (fused copies rebuilt), and load_weights accepts a module or a state dict."""
    a = build_model(seed=5)
    eng = NativeEngine(a, tok, eos_token_ids=[])
    p = SamplingParams(greedy=True, max_new_tokens=8)
    a.train()
    ra = eng.generate(PROMPTS, p)
    assert a.training
    b = build_model(seed=6)
    with torch.no_grad():
        for pa, pb in zip(a.parameters(), b.parameters()):
            pa.copy_(pb)
    rb = eng.generate(PROMPTS, p)
    ref = HFEngine(b, tok, eos_token_ids=[]).generate(PROMPTS, p)
    assert torch.equal(rb.response_ids, ref.response_ids) and not torch.equal(ra.response_ids, rb.response_ids)
    eng.load_weights(build_model(seed=5).state_dict())
    assert torch.equal(eng.generate(PROMPTS, p).response_ids, ra.response_ids)
    eng.load_weights(b)
    assert torch.equal(eng.generate(PROMPTS, p).response_ids, rb.response_ids) and eng.weight_version == 2


def test_eos_on_first_token_and_extra_stop_ids(tok):
    always_eos = build_model(seed=4, eos_bias=30.0)
    r = NativeEngine(always_eos, tok).generate(PROMPTS, SamplingParams(n=2, max_new_tokens=3, seed=0))
    assert (r.response_ids[:, 0] == EOS).all() and r.loss_mask.sum(1).eq(1).all()
    assert not r.truncated.any() and r.response_text == [""] * len(r)
    m = build_model(seed=0)
    full = NativeEngine(m, tok, eos_token_ids=[]).generate(["ab"], SamplingParams(greedy=True, max_new_tokens=12))
    sid = int(full.response_ids[0, 3])
    r2 = NativeEngine(m, tok, stop_token_ids=[sid]).generate(["ab"], SamplingParams(greedy=True, max_new_tokens=12))
    assert _valid(r2, 0)[-1] == sid and r2.info["finish_reason"][0] == "eos"


def test_rms_norm_matches_hf_formula():
    torch.manual_seed(0)
    x, w = torch.randn(5, 3, 64) * 3, torch.randn(64)
    h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(rms_norm(x, w, 1e-6), w * h, atol=1e-6, rtol=1e-6)
    xb, wb = x.bfloat16(), w.bfloat16()
    hb = xb.float() * torch.rsqrt(xb.float().pow(2).mean(-1, keepdim=True) + 1e-6)
    assert torch.equal(rms_norm(xb, wb, 1e-6), wb * hb.bfloat16())


def test_refuses_unsupported_models_and_bad_options(model, tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=46, n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(UnsupportedModelError, match="rollout.engine=hf"):
        NativeEngine(gpt2, tok)
    with pytest.raises(ValueError, match="CUDA"):
        NativeEngine(model, tok, graph="cuda_graph")
    with pytest.raises(ValueError, match="slots"):
        NativeEngine(model, tok, slots=0)
    eng = NativeEngine(model, tok)
    assert len(eng.generate([], SamplingParams())) == 0
    with pytest.raises(ValueError, match="no tokens"):
        NativeEngine(model, tok, add_special_tokens=False).generate([""], SamplingParams())
    with pytest.raises(ValueError, match="task_index"):
        eng.generate(PROMPTS, SamplingParams(), task_index=[0])


@pytest.mark.slow
def test_compiled_decode_step_matches_eager(eos_model, tok):
    p = SamplingParams(n=2, greedy=True, max_new_tokens=10)
    a = NativeEngine(eos_model, tok, slots=4).generate(PROMPTS, p)
    b = NativeEngine(eos_model, tok, slots=4, graph="compile").generate(PROMPTS, p)
    assert torch.equal(a.response_ids, b.response_ids)
    torch.testing.assert_close(a.rollout_logp, b.rollout_logp, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_smollm2_greedy_identical_to_hf_generate():
    """The real 135M model (chat template, 30 layers, GQA 9/3): greedy tokens equal HF generate and
    log-probs equal the learner's."""
    from reasonrl.models.loading import load_policy

    model, tok = load_policy("builtin:smollm2")
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in ("What is 12 + 30?", "Name a colour.", "Write one word.")]
    eng = NativeEngine(model, tok, slots=2, add_special_tokens=False)
    r = eng.generate(prompts, SamplingParams(greedy=True, max_new_tokens=24))
    eos = sorted(set(eng.stop_token_ids))
    for i, p in enumerate(prompts):
        enc = tok([p], return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            g = model.generate(**enc, do_sample=False, max_new_tokens=24, eos_token_id=eos, pad_token_id=tok.pad_token_id)
        seq = g[0, enc["input_ids"].shape[1]:].tolist()
        cut = next((k + 1 for k, t in enumerate(seq) if t in eos), len(seq))
        assert _valid(r, i) == seq[:cut], i
    with torch.no_grad():
        lp, _ = sequence_logprobs(model, r, 1.0)
    m = r.loss_mask.bool()
    torch.testing.assert_close(lp[m], r.rollout_logp[m], atol=1e-4, rtol=0)


@pytest.mark.parametrize("params_kw", [{"greedy": True}, {"temperature": 1.0, "seed": 5}])
def test_lean_decode_equals_reference_decode(eos_model, tok, monkeypatch, params_kw):
    """The lean decode step (default: flat K/V writes, LM head in vocabulary blocks) gives exactly the
    reference step's tokens and log-probs, with slot refills (3 slots for 12 rows) and early EOS. A
    block of 8 rows splits the 46-token head into 6 calls, so the blocked head runs here too."""
    import reasonrl.rollout.native_engine as ne

    monkeypatch.setattr(ne, "HEAD_ROWS", 8)
    p = SamplingParams(n=2, max_new_tokens=12, **params_kw)
    ref = NativeEngine(eos_model, tok, slots=3, decode="reference").generate(PROMPTS, p)
    lean = NativeEngine(eos_model, tok, slots=3).generate(PROMPTS, p)
    assert torch.equal(lean.response_ids, ref.response_ids) and torch.equal(lean.loss_mask, ref.loss_mask)
    assert torch.equal(lean.rollout_logp, ref.rollout_logp)
    assert len(set(ref.loss_mask.sum(1).tolist())) > 2  # ragged rows: refills happened mid-run
    with pytest.raises(ValueError, match="decode must be"):
        NativeEngine(eos_model, tok, decode="fast")
