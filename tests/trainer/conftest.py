"""Session fixtures for trainer tests."""

from pathlib import Path

import pytest
from trainer_fixtures import make_tiny_model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random (untrained) built-in-style model saved in HF format."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_model"))
