import numpy as np
import pytest
import torch

from reasonrl.embodied.actions import ActionTokenizer, chunk_tokens, finish_step_mask, unchunk_tokens


def test_normalise_hand_values():
    tok = ActionTokenizer(low=[-2.0, 0.0], high=[2.0, 10.0], n_bins=5)
    # [-2, 2] -> [-1, 1]; [0, 10] -> [-1, 1]; outside the bounds clips
    assert np.allclose(tok.normalise([[0.0, 5.0], [1.0, 10.0], [-9.0, 99.0]]), [[0, 0], [0.5, 1], [-1, 1]])
    # bins at -1, -0.5, 0, 0.5, 1 -> values -2, -1, 0, 1, 2 and 0, 2.5, 5, 7.5, 10
    assert tok.encode([[0.0, 5.0]]).tolist() == [[2, 2]]
    assert tok.encode([[-2.0, 10.0]]).tolist() == [[0, 4]]
    assert np.allclose(tok.decode([[1, 3]]), [[-1.0, 7.5]])


def test_round_trip_error_is_at_most_half_a_bin():
    rng = np.random.default_rng(0)
    tok = ActionTokenizer(low=[-1, -0.5, 0, -3], high=[1, 0.5, 2, 3], n_bins=256)
    a = rng.uniform(tok.low, tok.high, size=(1000, 4))
    back = tok.decode(tok.encode(a))
    half = (tok.high - tok.low) / (tok.n_bins - 1) / 2
    assert np.all(np.abs(back - a) <= half + 1e-6)
    t = tok.encode(a)
    assert t.min() >= 0 and t.max() <= 255
    assert np.array_equal(tok.encode(tok.decode(t)), t)  # bin values are fixed points


def test_quantile_statistics():
    a = np.stack([np.arange(101.0), np.full(101, 0.3)], axis=1)
    tok = ActionTokenizer.from_quantiles(a, n_bins=256, min_range=0.1)
    assert np.allclose(tok.low, [1.0, 0.25]) and np.allclose(tok.high, [99.0, 0.35])  # q01/q99; constant dim widened
    assert tok.encode([[0.0, 0.3]])[0, 0] == 0  # below q01 clips to the first bin


def test_bad_bounds_raise():
    with pytest.raises(ValueError, match="high > low"):
        ActionTokenizer(low=[0.0], high=[0.0])


def test_chunk_layout_is_step_major():
    chunk = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    flat = chunk_tokens(chunk)
    assert flat.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert np.array_equal(unchunk_tokens(flat[None], 4)[0], chunk)


def test_finish_step_mask():
    m = finish_step_mask(torch.tensor([0, 1, 3]), action_dim=2, width=8)
    assert m.tolist() == [[0] * 8, [1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]]
