"""Sampler and learner must see the same tokens, positions and log-probs (pilot-tiny-rl.md defect).

Checked by mutation while writing: giving the prefill pad-counting positions, or letting tokens
attend to pads, moves max |rollout_logp - learner logp| from ~1e-6 to > 0.5 on these models.
"""

import pytest
import torch
from rollout_tiny import EOS, build_model

from reasonrl.rollout import HFEngine, SamplingParams, sequence_logprobs

PROMPTS = ["a", "1+2=", "compute 18*3-16+98.", "xy z", "9", "hello there world"]


def _unpadded_row_logp(model, r, i, temperature):
    """Reference: one row, no padding, no mask, default positions."""
    p = r.prompt_ids[i][r.prompt_mask[i].bool()]
    n = int(r.loss_mask[i].sum())
    resp = r.response_ids[i, :n]
    ids = torch.cat([p, resp])[None]
    logits = model(input_ids=ids).logits[0, len(p) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, resp[:, None]).squeeze(-1)


@pytest.mark.parametrize(
    "engine_kw, params_kw",
    [
        ({}, {"temperature": 0.7}),
        ({"compact": False}, {"temperature": 1.0, "top_k": 8}),
        ({"micro_batch": 5}, {"temperature": 1.3, "top_p": 0.9}),
        ({}, {"greedy": True}),
    ],
)
def test_rollout_logp_equals_learner_and_unpadded_forward(eos_model, tok, engine_kw, params_kw):
    eng = HFEngine(eos_model, tok, **engine_kw)
    params = SamplingParams(n=3, max_new_tokens=16, seed=11, **params_kw)
    r = eng.generate(PROMPTS, params)
    lengths = r.loss_mask.sum(1)
    # the batch really is ragged on both sides and has early EOS
    assert len(set(r.prompt_mask.sum(1).tolist())) > 3
    assert (lengths < 16).sum() >= 3 and lengths.max() > lengths.min()
    for i in range(len(r)):
        n = int(lengths[i])
        assert r.loss_mask[i, :n].all() and not r.loss_mask[i, n:].any()
        if r.info["finish_reason"][i] == "eos":
            assert r.response_ids[i, n - 1] == EOS and not r.truncated[i]
        assert EOS not in r.response_ids[i, : n - 1].tolist()
    with torch.no_grad():
        lp, _ = sequence_logprobs(eos_model, r, params.logp_temperature)
        lp_mb, _ = sequence_logprobs(eos_model, r, params.logp_temperature, micro_batch=4)
        m = r.loss_mask.bool()
        torch.testing.assert_close(lp[m], r.rollout_logp[m], atol=1e-5, rtol=0)
        torch.testing.assert_close(lp_mb, lp, atol=1e-5, rtol=0)
        assert (lp[~m] == 0).all() and (r.rollout_logp[~m] == 0).all()
        for i in range(len(r)):
            n = int(lengths[i])
            ref = _unpadded_row_logp(eos_model, r, i, params.logp_temperature)
            torch.testing.assert_close(r.rollout_logp[i, :n], ref, atol=1e-5, rtol=0)


def test_alignment_with_eager_attention(tok):
    model = build_model(seed=2, eos_bias=2.0, attn="eager")
    r = HFEngine(model, tok).generate(PROMPTS, SamplingParams(n=2, max_new_tokens=10, seed=0))
    with torch.no_grad():
        lp, _ = sequence_logprobs(model, r, 1.0)
    m = r.loss_mask.bool()
    torch.testing.assert_close(lp[m], r.rollout_logp[m], atol=1e-5, rtol=0)


def test_learner_path_trains_on_engine_output(eos_model, tok):
    """Engine tensors are ordinary tensors: usable in a graph (no inference-mode leak)."""
    r = HFEngine(eos_model, tok).generate(PROMPTS[:3], SamplingParams(n=2, max_new_tokens=8, seed=0))
    eos_model.train()
    try:
        lp, ent, hid = sequence_logprobs(eos_model, r, 1.0, with_entropy=True, return_hidden=True)
        loss = -(torch.exp(lp - r.rollout_logp) * r.loss_mask).sum() / r.loss_mask.sum() + hid.pow(2).mean()
        loss.backward()
        grad = eos_model.model.embed_tokens.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    finally:
        eos_model.eval()
        eos_model.zero_grad(set_to_none=True)
    assert hid.shape == (len(r), r.prompt_ids.shape[1] + r.response_ids.shape[1], 64)
    torch.testing.assert_close(
        torch.exp(lp.detach() - r.rollout_logp)[r.loss_mask.bool()], torch.ones(int(r.loss_mask.sum())),
        atol=1e-5, rtol=0,
    )
    # entropy of the tempered distribution, masked
    with torch.no_grad():
        logits = eos_model(input_ids=r.input_ids(), attention_mask=r.attention_mask(),
                           position_ids=(r.attention_mask().cumsum(1) - 1).clamp(min=0)).logits
        z = logits[:, r.prompt_ids.shape[1] - 1 : -1]
        want = torch.distributions.Categorical(logits=z).entropy() * r.loss_mask
    torch.testing.assert_close(ent.detach(), want, atol=1e-5, rtol=0)


def test_alignment_with_absolute_positions(tok):
    """RoPE hides a constant per-row position shift; GPT-2's learned positions expose it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=128,
                     bos_token_id=1, eos_token_id=EOS, pad_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    r = HFEngine(model, tok).generate(PROMPTS, SamplingParams(n=2, max_new_tokens=12, seed=4))
    with torch.no_grad():
        lp, _ = sequence_logprobs(model, r, 1.0)
        m = r.loss_mask.bool()
        torch.testing.assert_close(lp[m], r.rollout_logp[m], atol=1e-5, rtol=0)
        for i in range(len(r)):
            n = int(r.loss_mask[i].sum())
            torch.testing.assert_close(r.rollout_logp[i, :n], _unpadded_row_logp(model, r, i, 1.0), atol=1e-5, rtol=0)
