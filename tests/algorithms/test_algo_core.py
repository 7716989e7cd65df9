import math
import random

import pytest
import torch

from reasonrl.algorithms import (
    agg_loss,
    entropy_from_logits,
    group_mean_std,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
)

D = torch.float64

X = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], dtype=D)
# row 0: 2 tokens, row 1: 3 tokens, row 2: empty response
M = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=D)


def test_masked_sum_mean_by_hand():
    assert masked_sum(X, M).item() == 21.0
    assert masked_sum(X, M, dim=1).tolist() == [3.0, 18.0, 0.0]
    assert masked_mean(X, M).item() == pytest.approx(21 / 5)
    torch.testing.assert_close(masked_mean(X, M, dim=1), torch.tensor([1.5, 6.0, 0.0], dtype=D))


def test_masked_ops_ignore_inf_on_padding():
    x = X.clone()
    x[0, 3] = -math.inf
    x[2, 0] = math.nan
    assert masked_sum(x, M).item() == 21.0
    assert masked_mean(x, M.bool(), dim=1)[2].item() == 0.0


def test_masked_var_and_whiten_by_hand():
    x = torch.tensor([[1.0, 2, 3, 4, 99]], dtype=D)
    m = torch.tensor([[1, 1, 1, 1, 0]], dtype=D)
    assert masked_var(x, m).item() == pytest.approx(5 / 3)
    assert masked_var(x, m, unbiased=False).item() == pytest.approx(1.25)
    w = masked_whiten(x, m)
    expect = (torch.tensor([1.0, 2, 3, 4], dtype=D) - 2.5) / math.sqrt(5 / 3 + 1e-8)
    torch.testing.assert_close(w[0, :4], expect)
    torch.testing.assert_close(masked_whiten(x, m, shift_mean=False)[0, :4], expect + 2.5)


@pytest.mark.parametrize("n_valid", [0, 1])
def test_masked_var_raises_on_too_few_tokens(n_valid):
    x = torch.arange(4.0, dtype=D).reshape(1, 4)
    m = torch.zeros(1, 4, dtype=D)
    m[0, :n_valid] = 1
    with pytest.raises(ValueError):
        masked_var(x, m)
    if n_valid == 0:
        with pytest.raises(ValueError):
            masked_var(x, m, unbiased=False)
    else:
        assert masked_var(x, m, unbiased=False).item() == 0.0


def test_entropy_by_hand_and_random():
    uniform = torch.zeros(2, 4, dtype=D)
    torch.testing.assert_close(entropy_from_logits(uniform), torch.full((2,), math.log(4), dtype=D))
    z = torch.log(torch.tensor([0.5, 0.25, 0.25], dtype=D))
    assert entropy_from_logits(z).item() == pytest.approx(1.5 * math.log(2))
    logits = torch.randn(3, 5, 32, dtype=D)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(entropy_from_logits(logits), -(p * p.log()).sum(-1))
    assert entropy_from_logits(logits.bfloat16()).dtype == torch.float32


def test_logprobs_by_hand_and_random():
    logits = torch.tensor([[0.0, math.log(3)]], dtype=D)
    assert logprobs_from_logits(logits, torch.tensor([1])).item() == pytest.approx(math.log(0.75))
    logits = torch.randn(3, 5, 32, dtype=D)
    labels = torch.randint(0, 32, (3, 5))
    ref = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logprobs_from_logits(logits, labels), ref)
    assert logprobs_from_logits(logits.half(), labels).dtype == torch.float32


# ---------------------------------------------------------------- aggregation


def test_agg_modes_by_hand():
    assert agg_loss(X, M, "token-mean").item() == pytest.approx(21 / 5)
    assert agg_loss(X, M, "token-mean", num_tokens=10).item() == pytest.approx(2.1)
    assert agg_loss(X, M, "token-mean", num_tokens=10, dp_size=2).item() == pytest.approx(4.2)
    # empty row 2 is excluded from the sequence mean
    assert agg_loss(X, M, "seq-mean-token-sum").item() == pytest.approx((3 + 18) / 2)
    assert agg_loss(X, M, "seq-mean-token-mean").item() == pytest.approx((1.5 + 6) / 2)
    assert agg_loss(X, M, "seq-mean-token-mean", num_seqs=5).item() == pytest.approx(7.5 / 5)
    # Dr.GRPO: veRL 0.9.1 divides the row sums by the non-empty rows (2) and by T (4); TRL by all rows (3)
    # and T; veRL <= 0.7.0 by T only
    assert agg_loss(X, M, "seq-mean-token-sum-norm").item() == pytest.approx(21 / 2 / 4)
    assert agg_loss(X, M, "seq-mean-token-sum-norm", loss_scale_factor=7).item() == pytest.approx(21 / 2 / 7)
    assert agg_loss(X, M, "seq-mean-token-sum-norm", num_seqs=5).item() == pytest.approx(21 / 5 / 4)
    assert agg_loss(X, M, "seq-mean-token-sum-norm", batch_divisor="rows").item() == pytest.approx(21 / 12)
    assert agg_loss(X, M, "seq-mean-token-sum-norm", batch_divisor="rows", num_seqs=2).item() == pytest.approx(21 / 8)
    assert agg_loss(X, M, "seq-mean-token-sum-norm", batch_divisor="none").item() == pytest.approx(21 / 4)
    assert agg_loss(X, M, "seq-mean-token-sum-norm", batch_divisor="none", num_seqs=5).item() == pytest.approx(21 / 4)
    with pytest.raises(ValueError):
        agg_loss(X, M, "sum")
    with pytest.raises(ValueError, match="batch_divisor"):
        agg_loss(X, M, "seq-mean-token-sum-norm", batch_divisor="all")


def test_seq_mean_token_sum_norm_follows_verl_091_and_keeps_the_old_form():
    """Issue 11 item 1: ones(3, 4), row lengths 2, 1, 0. veRL 0.9.1's agg_loss: (2 + 1) / 2 non-empty
    rows / T=4 = 0.375 (verl/trainer/ppo/core_algos.py, read from the 0.9.1 wheel); veRL 0.4.1-0.7.0:
    (2 + 1) / 4 = 0.75; TRL 1.16 dr_grpo: (2 + 1) / (3 rows * 4) = 0.25."""
    x = torch.ones(3, 4, dtype=D)
    m = (torch.arange(4)[None] < torch.tensor([2, 1, 0])[:, None]).to(D)
    assert agg_loss(x, m, "seq-mean-token-sum-norm").item() == 0.375
    assert agg_loss(x, m, "seq-mean-token-sum-norm", batch_divisor="none").item() == 0.75
    assert agg_loss(x, m, "seq-mean-token-sum-norm", batch_divisor="rows").item() == 0.25
    # a global batch size passed by the trainer replaces the local count (veRL's global_batch_size)
    assert agg_loss(x, m, "seq-mean-token-sum-norm", num_seqs=6, dp_size=2).item() == pytest.approx(3 / 6 / 4 * 2)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("rows", [3, 0])
def test_agg_all_masked_is_zero_with_gradient(mode, rows):
    x = torch.randn(rows, 4, dtype=D, requires_grad=True)
    loss = agg_loss(x, torch.zeros(rows, 4, dtype=D), mode)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def _loop_agg(x, m, mode, T):
    seqs = []
    tot, ntok = 0.0, 0
    for i in range(x.shape[0]):
        s = sum(x[i, t].item() for t in range(x.shape[1]) if m[i, t])
        L = int(sum(m[i].tolist()))
        tot += s
        ntok += L
        if L > 0:
            seqs.append(s if mode == "seq-mean-token-sum" else s / L)
    if mode == "token-mean":
        return tot / ntok
    if mode == "seq-mean-token-sum-norm":
        return tot / len(seqs) / T
    return sum(seqs) / len(seqs)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_agg_matches_python_loop_on_ragged_batches(mode):
    rng = random.Random(1)
    for _ in range(5):
        B, T = rng.randint(2, 7), rng.randint(1, 9)
        lengths = [rng.randint(0, T) for _ in range(B)]
        lengths[0] = max(lengths[0], 1)
        m = (torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).to(D)
        x = torch.randn(B, T, dtype=D)
        assert agg_loss(x, m.bool(), mode).item() == pytest.approx(_loop_agg(x, m, mode, T), rel=1e-12)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_with_global_counts_sum_to_full_batch(mode):
    """3 uneven micro-batches (one with an empty row) reproduce the mini-batch loss and gradient."""
    torch.manual_seed(0)
    B, T = 9, 6
    lengths = torch.tensor([6, 1, 0, 3, 5, 2, 6, 4, 1])
    m = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).to(D)
    x = torch.randn(B, T, dtype=D, requires_grad=True)
    full = agg_loss(x, m, mode, loss_scale_factor=T)
    (g_full,) = torch.autograd.grad(full, x)
    kw = dict(num_tokens=m.sum(), num_seqs=(lengths > 0).sum(), loss_scale_factor=T)
    parts = [agg_loss(x[s], m[s], mode, **kw) for s in (slice(0, 2), slice(2, 7), slice(7, 9))]
    total = sum(parts)
    (g_micro,) = torch.autograd.grad(total, x)
    torch.testing.assert_close(total, full, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_micro, g_full, rtol=0, atol=1e-12)
    if mode == "token-mean":
        assert full.item() == pytest.approx((x * m).sum().item() / m.sum().item(), rel=1e-12)


def test_group_mean_std():
    s = torch.tensor([1.0, 0.0, 1.0, 3.0, 0.1, 0.1, 0.1])
    g = torch.tensor([7, 7, 7, 9, 4, 4, 4])
    mean, std, counts, equal = group_mean_std(s, g)
    assert mean[:4].tolist() == pytest.approx([2 / 3] * 3 + [3.0])
    assert std[:4].tolist() == pytest.approx([math.sqrt(1 / 3)] * 3 + [0.0])
    assert counts.tolist() == [3, 3, 3, 1, 3, 3, 3]
    assert equal.tolist() == [False] * 3 + [True] * 4
