"""reasonrl: small, fast, hackable reinforcement learning for reasoning models."""

__version__ = "0.1.0"

_API = ("config_from", "train", "evaluate", "reward_function")


def __getattr__(name: str):
    """The Python API (``reasonrl.api``), imported on first use so ``import reasonrl`` stays cheap."""
    if name in _API:
        from reasonrl import api

        return getattr(api, name)
    raise AttributeError(f"module 'reasonrl' has no attribute {name!r}")
