import pytest

from reasonrl.rewards import MathVerifier


@pytest.fixture(scope="session")
def mv():
    """One shared worker for the whole folder: each start costs about a second on a busy machine."""
    with MathVerifier(timeout_s=10.0) as v:
        yield v
