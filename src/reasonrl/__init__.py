"""reasonrl: small, fast, hackable reinforcement learning for reasoning models."""

__version__ = "0.1.0"
