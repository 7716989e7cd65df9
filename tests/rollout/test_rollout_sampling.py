import pytest
import torch

from rollout_tiny import chi2_ok

from reasonrl.rollout import SamplingParams, sample_next


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n": 0}, "n"),
        ({"n": 1.5}, "n"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"stop": "."}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"greedy": 1}, "greedy"),
        ({"seed": -3}, "seed"),
    ],
)
def test_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field}\b"):
        SamplingParams(**kwargs)


def test_logp_temperature():
    assert SamplingParams(temperature=0.5).logp_temperature == 0.5
    assert SamplingParams(temperature=0.5, greedy=True).logp_temperature == 1.0


def _logits(b=4, v=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, v, generator=g) * 2


def test_greedy_is_argmax_with_t1_logp():
    z = _logits()
    tok, lp = sample_next(z, SamplingParams(greedy=True, temperature=3.0))
    assert torch.equal(tok, z.argmax(-1))
    torch.testing.assert_close(lp, torch.log_softmax(z, -1).gather(-1, tok[:, None]).squeeze(-1))


@pytest.mark.parametrize("kw", [{"top_k": 1}, {"top_p": 1e-6}, {"top_k": 3, "top_p": 1e-6}])
def test_degenerate_truncation_is_greedy(kw):
    z = _logits(b=64)
    tok, _ = sample_next(z, SamplingParams(temperature=0.8, **kw), torch.Generator().manual_seed(1))
    assert torch.equal(tok, z.argmax(-1))


def test_logp_is_under_untruncated_tempered_distribution():
    z = _logits(b=32)
    p = SamplingParams(temperature=0.7, top_k=3, top_p=0.8)
    tok, lp = sample_next(z, p, torch.Generator().manual_seed(0))
    want = torch.log_softmax(z / 0.7, -1).gather(-1, tok[:, None]).squeeze(-1)
    torch.testing.assert_close(lp, want)


@pytest.mark.parametrize(
    "kw",
    [{"temperature": 1.0}, {"temperature": 0.6}, {"top_k": 3}, {"top_p": 0.7}, {"top_k": 5, "top_p": 0.6, "temperature": 1.3}],
)
def test_empirical_distribution(kw):
    v, n = 10, 20000
    z = _logits(b=1, v=v, seed=3)
    p = SamplingParams(**kw)
    tok, _ = sample_next(z.expand(n, v), p, torch.Generator().manual_seed(7))
    counts = torch.bincount(tok, minlength=v).double()
    # reference: temperature, then top-k, then top-p on the renormalised remainder
    probs = torch.softmax(z[0].double() / p.temperature, -1)
    if p.top_k:
        probs[probs < probs.topk(p.top_k).values[-1]] = 0
        probs /= probs.sum()
    if p.top_p < 1:
        order = probs.argsort(descending=True)
        before = probs[order].cumsum(0) - probs[order]
        probs[order[before >= p.top_p]] = 0
        probs /= probs.sum()
    chi2_ok(counts, probs)


def test_seeded_sampling_is_reproducible():
    z = _logits(b=16, v=30)
    p = SamplingParams()
    a, _ = sample_next(z, p, torch.Generator().manual_seed(5))
    b, _ = sample_next(z, p, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
