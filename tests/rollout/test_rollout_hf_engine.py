import pytest
import torch
from rollout_tiny import BOS, EOS, PAD, build_model, chi2_ok

from reasonrl.batch import Rollouts
from reasonrl.rollout import Engine, HFEngine, SamplingParams

PROMPTS = ["ab", "1+2=", "compute 7*8.", "q"]


def _valid(r: Rollouts, i: int) -> list[int]:
    return r.response_ids[i, : int(r.loss_mask[i].sum())].tolist()


def test_is_an_engine(model, tok):
    eng = HFEngine(model, tok)
    assert isinstance(eng, Engine) and eng.tokenizer is tok


@pytest.mark.parametrize("batched", [False, True])
def test_greedy_matches_hf_generate(eos_model, tok, batched):
    eng = HFEngine(eos_model, tok)
    r = eng.generate(PROMPTS, SamplingParams(greedy=True, max_new_tokens=12))
    groups = [PROMPTS] if batched else [[p] for p in PROMPTS]
    row = 0
    for group in groups:
        tok.padding_side = "left"
        enc = tok(group, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = eos_model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=PAD, eos_token_id=EOS)
        for j in range(len(group)):
            ours = _valid(r, row)
            theirs = out[j, enc["input_ids"].shape[1]:].tolist()
            assert theirs[: len(ours)] == ours
            assert all(t == PAD for t in theirs[len(ours):])  # HF pads after EOS
            row += 1
    assert any(r.info["finish_reason"][i] == "eos" for i in range(len(r)))


@pytest.mark.parametrize("kw", [{"top_k": 1}, {"top_p": 1e-6}])
def test_degenerate_truncation_matches_greedy(eos_model, tok, kw):
    eng = HFEngine(eos_model, tok)
    g = eng.generate(PROMPTS, SamplingParams(greedy=True, max_new_tokens=10))
    s = eng.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=10, seed=3, **kw))
    for i in range(len(s)):
        assert _valid(s, i) == _valid(g, i // 2)
    # at T=1 the recorded log-probs are the greedy ones too
    torch.testing.assert_close(s.rollout_logp[::2], g.rollout_logp, atol=1e-6, rtol=0)


def test_stop_string_cuts_after_its_token(model, tok):
    eng = HFEngine(model, tok, eos_token_ids=[])
    full = eng.generate(PROMPTS, SamplingParams(greedy=True, max_new_tokens=20))
    text0 = full.response_text[0]
    stop = text0[4:6]  # occurs in row 0 by construction
    cut = eng.generate(PROMPTS, SamplingParams(greedy=True, max_new_tokens=20, stop=[stop, "never!"]))
    for i in range(len(PROMPTS)):
        t = full.response_text[i]
        k = t.find(stop)
        if k < 0:
            assert cut.response_text[i] == t and bool(cut.truncated[i]) and cut.info["finish_reason"][i] == "length"
        else:
            want = t[: k + len(stop)]  # the stop string is kept
            assert cut.response_text[i] == want
            assert int(cut.loss_mask[i].sum()) == len(want)  # one char per token
            assert _valid(cut, i) == _valid(full, i)[: len(want)]
            assert not cut.truncated[i] and cut.info["finish_reason"][i] == "stop"
            assert not cut.loss_mask[i, len(want):].any()
    assert cut.info["finish_reason"][0] == "stop"


def test_max_new_tokens_and_truncated_flag(model, tok):
    r = HFEngine(model, tok, eos_token_ids=[]).generate(PROMPTS, SamplingParams(n=2, max_new_tokens=7, seed=0))
    assert r.response_ids.shape[1] == 7 and r.loss_mask.all() and r.truncated.all()
    assert set(r.info["finish_reason"]) == {"length"}


def test_eos_on_the_last_allowed_token_is_not_truncation(tok):
    always_eos = build_model(seed=4, eos_bias=30.0)
    r = HFEngine(always_eos, tok).generate(PROMPTS, SamplingParams(n=2, max_new_tokens=1, seed=0))
    assert (r.response_ids[:, 0] == EOS).all() and r.loss_mask.sum(1).eq(1).all()
    assert not r.truncated.any() and r.response_text == [""] * len(r)


def test_extra_stop_token_ids(model, tok):
    base = HFEngine(model, tok, eos_token_ids=[])
    full = base.generate(["ab"], SamplingParams(greedy=True, max_new_tokens=12))
    stop_id = full.response_ids[0, 3].item()
    r = HFEngine(model, tok, stop_token_ids=[stop_id]).generate(["ab"], SamplingParams(greedy=True, max_new_tokens=12))
    seq = _valid(r, 0)
    assert seq[-1] == stop_id and stop_id not in seq[:-1] and len(seq) <= 4
    assert r.info["finish_reason"][0] == "eos" and not r.truncated[0]


@pytest.mark.parametrize("engine_kw", [{}, {"compact": False}, {"micro_batch": 3}])
def test_seeded_determinism(eos_model, tok, engine_kw):
    eng = HFEngine(eos_model, tok, **engine_kw)
    p = SamplingParams(n=4, max_new_tokens=12, seed=123)
    a, b = eng.generate(PROMPTS, p), eng.generate(PROMPTS, p)
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.rollout_logp, b.rollout_logp)
    assert a.response_text == b.response_text
    c = eng.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=12, seed=124))
    assert c.response_text != a.response_text
    eng.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=12))
    assert isinstance(eng.last_seed, int)


def test_grouping_and_task_index(eos_model, tok):
    eng = HFEngine(eos_model, tok, micro_batch=5)  # chunks straddle groups
    r = eng.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=6, seed=0), task_index=[10, 11, 12, 13])
    assert len(r) == 12
    assert r.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert r.task_index == [10, 10, 10, 11, 11, 11, 12, 12, 12, 13, 13, 13]
    assert r.info["prompt"] == [p for p in PROMPTS for _ in range(3)]
    for i in range(12):
        ids = r.prompt_ids[i][r.prompt_mask[i].bool()].tolist()
        assert ids == tok(PROMPTS[i // 3])["input_ids"]
        assert (r.prompt_ids[i][~r.prompt_mask[i].bool()] == PAD).all()
        assert r.prompt_mask[i, -1] == 1  # left padding
    assert r.group_ids.dtype == torch.long and r.truncated.dtype == torch.bool
    with pytest.raises(ValueError, match="task_index"):
        eng.generate(PROMPTS, SamplingParams(), task_index=[0])


def test_add_special_tokens_option(model, tok):
    with_bos = HFEngine(model, tok).generate(["ab"], SamplingParams(max_new_tokens=2, seed=0))
    without = HFEngine(model, tok, add_special_tokens=False).generate(["ab"], SamplingParams(max_new_tokens=2, seed=0))
    assert with_bos.prompt_ids[0].tolist()[0] == BOS and with_bos.prompt_ids.shape[1] == 3
    assert BOS not in without.prompt_ids[0].tolist() and without.prompt_ids.shape[1] == 2


def test_restores_train_mode_and_loads_weights(tok):
    a, b = build_model(seed=5), build_model(seed=6)
    eng = HFEngine(a, tok, eos_token_ids=[])
    a.train()
    ra = eng.generate(PROMPTS, SamplingParams(greedy=True, max_new_tokens=8))
    assert a.training
    eng.load_weights(b)
    rb = eng.generate(PROMPTS, SamplingParams(greedy=True, max_new_tokens=8))
    ref = HFEngine(b, tok, eos_token_ids=[]).generate(PROMPTS, SamplingParams(greedy=True, max_new_tokens=8))
    assert torch.equal(rb.response_ids, ref.response_ids) and not torch.equal(ra.response_ids, rb.response_ids)
    eng.load_weights(build_model(seed=5).state_dict())
    assert torch.equal(eng.generate(PROMPTS, SamplingParams(greedy=True, max_new_tokens=8)).response_ids, ra.response_ids)
    assert eng.weight_version == 2


def test_one_step_distribution_matches_softmax(model, tok):
    """T=1, one new token, thousands of samples: counts follow the model's softmax."""
    n = 4000
    prompt = "1+2="
    r = HFEngine(model, tok, eos_token_ids=[]).generate([prompt], SamplingParams(n=n, max_new_tokens=1, seed=9))
    with torch.no_grad():
        ids = torch.tensor([tok(prompt)["input_ids"]])
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].double(), -1)
    counts = torch.bincount(r.response_ids[:, 0], minlength=probs.numel()).double()
    chi2_ok(counts, probs)
    # and the recorded log-probs are the model's
    torch.testing.assert_close(r.rollout_logp[:, 0], probs.log().float()[r.response_ids[:, 0]], atol=1e-5, rtol=0)


def test_empty_and_bad_inputs(model, tok):
    eng = HFEngine(model, tok)
    r = eng.generate([], SamplingParams())
    assert len(r) == 0
    with pytest.raises(ValueError, match="no tokens"):
        HFEngine(model, tok, add_special_tokens=False).generate([""], SamplingParams())
    with pytest.raises(ValueError, match="list of strings"):
        eng.generate("ab", SamplingParams())
