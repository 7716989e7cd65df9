"""The learner's fast paths (fused chunked LM head, packing, checkpointing, bf16) against the reference.

The reference is ``sequence_logprobs`` with every option off: full logits, log-softmax over the
vocabulary, padded rows. In fp32 the fast paths must give the same per-token log-probs, entropies,
hidden states and parameter gradients (1e-6); bf16 must stay close and its mismatch is measured.
"""

import pytest
import torch
from rollout_tiny import build_model

from reasonrl.batch import pack_rows
from reasonrl.rollout import HFEngine, SamplingParams, sequence_logprobs
from reasonrl.rollout.fused_logprobs import chosen_logprob_entropy
from reasonrl.rollout.logprobs import enable_activation_checkpointing

PROMPTS = ["a", "1+2=", "compute 18*3-16+98.", "xy z", "9", "hello there world"]
TEMP = 0.7


@pytest.fixture(scope="module")
def batch(eos_model, tok):
    r = HFEngine(eos_model, tok).generate(PROMPTS, SamplingParams(n=3, max_new_tokens=12, seed=5, temperature=TEMP))
    lengths = r.loss_mask.sum(1)
    assert lengths.max() > lengths.min() and len(set(r.prompt_mask.sum(1).tolist())) > 3  # ragged both sides
    return r


def _ref_chosen(h, w, b, y, tau):
    lsm = torch.log_softmax(torch.nn.functional.linear(h, w, b).float() / tau, -1)
    return lsm.gather(-1, y[:, None]).squeeze(-1), -(lsm.exp() * lsm).sum(-1)


@pytest.mark.parametrize("chunk", [1, 3, 64])
@pytest.mark.parametrize("bias", [False, True])
def test_chosen_logprob_entropy_matches_log_softmax(chunk, bias):
    g = torch.Generator().manual_seed(0)
    n, d, v = 10, 8, 37
    h = torch.randn(n, d, generator=g, requires_grad=True)
    w = torch.randn(v, d, generator=g, requires_grad=True)
    b = torch.randn(v, generator=g, requires_grad=True) if bias else None
    y = torch.randint(0, v, (n,), generator=g)
    a, c = torch.randn(n, generator=g), torch.randn(n, generator=g)  # arbitrary upstream gradients
    params = [h, w] + ([b] if bias else [])
    lp, ent = chosen_logprob_entropy(h, w, b, y, 1.3, chunk)
    rlp, rent = _ref_chosen(h, w, b, y, 1.3)
    torch.testing.assert_close(lp, rlp, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ent, rent, atol=1e-6, rtol=1e-6)
    got = torch.autograd.grad((a * lp + c * ent).sum(), params)
    want = torch.autograd.grad((a * rlp + c * rent).sum(), params)
    for x, y_ in zip(got, want):
        torch.testing.assert_close(x, y_, atol=1e-6, rtol=1e-5)  # fp32: ~100 ulp
    # log-prob only: the entropy's gradient arrives as None and must not be used
    got = torch.autograd.grad(chosen_logprob_entropy(h, w, b, y, 1.3, chunk)[0].sum(), params)
    want = torch.autograd.grad(_ref_chosen(h, w, b, y, 1.3)[0].sum(), params)
    for x, y_ in zip(got, want):
        torch.testing.assert_close(x, y_, atol=1e-6, rtol=1e-5)  # fp32: ~100 ulp


def test_chosen_logprob_entropy_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 7, (5,), generator=g)

    def f(h, w, b):
        return chosen_logprob_entropy(h, w, b, y, 0.9, 2)

    assert torch.autograd.gradcheck(f, (h, w, b))


def _loss_and_grads(model, r, **kw):
    model.zero_grad(set_to_none=True)
    lp, ent, hid = sequence_logprobs(model, r, TEMP, with_entropy=True, return_hidden=True, **kw)
    adv = torch.linspace(-1, 1, len(r))[:, None]
    m = r.loss_mask.float()
    # a GRPO-like token loss with an entropy bonus and a term on the prompt hidden states (FlowRL-like)
    loss = -(adv * lp * m).sum() / m.sum() - 0.01 * (ent * m).sum() / m.sum()
    loss = loss + 1e-3 * (hid * r.attention_mask()[..., None]).sum()
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return lp.detach(), ent.detach(), hid.detach(), grads


@pytest.mark.parametrize("kw", [{"chunk_tokens": 7}, {"chunk_tokens": 1000}, {"chunk_tokens": 5, "pack": True},
                                {"chunk_tokens": 5, "pack": True, "micro_batch": 4}])
def test_fast_paths_equal_reference(eos_model, batch, kw):
    ref = _loss_and_grads(eos_model, batch)
    got = _loss_and_grads(eos_model, batch, **kw)
    m = batch.response_valid.bool()
    torch.testing.assert_close(got[0], ref[0], atol=1e-6, rtol=1e-6)  # log-probs
    assert (got[0][~m] == 0).all() and (got[1][~m] == 0).all()
    torch.testing.assert_close(got[1], ref[1], atol=1e-6, rtol=1e-6)  # entropies
    real = batch.attention_mask().bool()
    torch.testing.assert_close(got[2][real], ref[2][real], atol=1e-5, rtol=1e-5)  # hidden states (values ~3)
    assert got[3].keys() == ref[3].keys()
    for k in ref[3]:
        torch.testing.assert_close(got[3][k], ref[3][k], atol=1e-6, rtol=1e-5, msg=k)


def test_fused_path_keeps_no_vocab_sized_tensor_for_backward(eos_model, batch):
    """The reference keeps (B, T, V) float32 logits/log-softmax alive for backward; the fused path keeps
    at most hidden states (N, d) and per-token scalars."""
    v = eos_model.config.vocab_size
    assert v not in (eos_model.config.hidden_size, eos_model.config.intermediate_size)
    n_tokens = int(batch.response_valid.sum())

    def largest_vocab_tensor(**kw):
        seen = []

        def pack(t):
            if t.dim() >= 2 and t.shape[-1] == v and t.shape != (v, eos_model.config.hidden_size):
                seen.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            lp, ent = sequence_logprobs(eos_model, batch, TEMP, with_entropy=True, **kw)
        return max(seen, default=0)

    assert largest_vocab_tensor() >= n_tokens * v  # the check can see the reference's logits
    assert largest_vocab_tensor(chunk_tokens=8) == 0
    assert largest_vocab_tensor(chunk_tokens=8, pack=True) == 0


def test_pack_rows_drops_all_padding(batch):
    ids, attn = batch.input_ids(), batch.attention_mask()
    plan = pack_rows(ids, attn)
    n_real = int(attn.sum())
    assert plan.ids.numel() < ids.numel()  # fewer token slots than the padded batch
    assert plan.ids.shape[1] == int(attn.sum(1).max())
    assert torch.equal(plan.ids.flatten()[plan.dst], ids.flatten()[plan.src]) and len(plan.dst) == n_real
    # every bin's positions restart at 0 per sequence and count up by one inside it
    for row in plan.position_ids:
        starts = (row == 0).nonzero().flatten().tolist() + [len(row)]
        for a, b in zip(starts, starts[1:]):
            assert torch.equal(row[a:b], torch.arange(b - a))


def test_pack_rows_first_fit_decreasing_by_hand():
    attn = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    ids = torch.arange(16).view(4, 4)
    plan = pack_rows(ids, attn, filler_id=-1)
    # lengths 3, 2, 4, 1 -> bins [row2], [row0, row3]... first fit decreasing: 4 | 3+1 | 2
    assert plan.ids.tolist() == [[8, 9, 10, 11], [1, 2, 3, 15], [6, 7, -1, -1]]
    assert plan.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 0, 1]]
    assert plan.row_start.tolist() == [4, 8, 0, 7]


def test_activation_checkpointing_same_gradients(batch):
    plain, ckpt = build_model(seed=1, eos_bias=2.5), build_model(seed=1, eos_bias=2.5)
    enable_activation_checkpointing(ckpt)
    plain.train(), ckpt.train()
    ref = _loss_and_grads(plain, batch, chunk_tokens=16)
    got = _loss_and_grads(ckpt, batch, chunk_tokens=16)
    assert all(getattr(layer, "gradient_checkpointing", False) for layer in ckpt.model.layers)
    for k in ref[3]:
        torch.testing.assert_close(got[3][k], ref[3][k], atol=1e-6, rtol=1e-5, msg=k)


def test_activation_checkpointing_refuses_unsupported_model():
    with pytest.raises(ValueError, match="perf.activation_checkpointing"):
        enable_activation_checkpointing(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("kw", [{}, {"chunk_tokens": 16, "pack": True}])
def test_bf16_autocast_is_close_but_not_identical(eos_model, batch, kw):
    m = batch.loss_mask.bool()
    with torch.no_grad():
        ref, _ = sequence_logprobs(eos_model, batch, TEMP)
        lp, _ = sequence_logprobs(eos_model, batch, TEMP, autocast="bf16", **kw)
    assert lp.dtype == torch.float32
    gap = (lp - ref)[m].abs()
    assert 0 < gap.max() < 0.1  # bf16 really ran, and stays near the fp32 reference


def test_option_errors(eos_model, batch):
    with pytest.raises(ValueError, match="autocast"):
        sequence_logprobs(eos_model, batch, TEMP, autocast="fp16")
    with pytest.raises(ValueError, match="chunk_tokens"):
        sequence_logprobs(eos_model, batch, TEMP, pack=True)
