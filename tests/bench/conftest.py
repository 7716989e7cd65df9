"""Benchmarks train and evaluate the tiny random model of the trainer tests."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))

from trainer_fixtures import make_tiny_model_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random (untrained) built-in-style model saved in HF format."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_model"))
