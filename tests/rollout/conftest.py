import pytest
from rollout_tiny import build_model, build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model():
    return build_model()


@pytest.fixture(scope="module")
def eos_model():
    """EOS is likely (~20 %/step), so sampled batches have ragged, early-ending responses."""
    return build_model(seed=1, eos_bias=2.5)
