"""Action tokens: per-dimension normalisation and uniform binning, chunks, and the finish-step mask.

Following SimpleVLA-RL / OpenVLA (spec §2.1): each action dimension is normalised to [-1, 1] with
bounds (q01/q99 of the demonstrations, or the action space's bounds), clipped, and mapped to one of
``n_bins`` uniformly spaced values; a bin index is a token. De-normalisation is
``a = 0.5 (x + 1)(high - low) + low``. A policy call emits one *chunk*: ``chunk_len`` actions of
``action_dim`` tokens, laid out step-major, so a trajectory's concatenated tokens put env step ``s``
at positions ``[s*action_dim, (s+1)*action_dim)`` whatever the chunking, which is what makes the
finish-step mask a single comparison.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class ActionTokenizer:
    low: np.ndarray  # (A,) value mapped to -1 (q01 or the action-space minimum)
    high: np.ndarray  # (A,) value mapped to +1
    n_bins: int = 256

    def __post_init__(self) -> None:
        self.low = np.asarray(self.low, dtype=np.float64)
        self.high = np.asarray(self.high, dtype=np.float64)
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {self.n_bins}")
        if self.low.shape != self.high.shape or not np.all(self.high > self.low):
            raise ValueError(f"action bounds need high > low per dimension, got low={self.low} high={self.high}")

    @classmethod
    def from_quantiles(cls, actions: np.ndarray, n_bins: int = 256, min_range: float = 1e-3) -> "ActionTokenizer":
        """q01/q99 per dimension of ``actions`` (N, A); a constant dimension gets a ``min_range`` band."""
        a = np.asarray(actions, dtype=np.float64).reshape(-1, np.shape(actions)[-1])
        lo, hi = np.quantile(a, 0.01, axis=0), np.quantile(a, 0.99, axis=0)
        mid, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, min_range / 2)
        return cls(mid - half, mid + half, n_bins)

    @property
    def action_dim(self) -> int:
        return int(self.low.shape[0])

    def normalise(self, a: np.ndarray) -> np.ndarray:
        return np.clip(2.0 * (np.asarray(a, dtype=np.float64) - self.low) / (self.high - self.low) - 1.0, -1.0, 1.0)

    def denormalise(self, x: np.ndarray) -> np.ndarray:
        return 0.5 * (np.asarray(x, dtype=np.float64) + 1.0) * (self.high - self.low) + self.low

    def encode(self, a: np.ndarray) -> np.ndarray:
        """Actions (..., A) -> bin indices (..., A) in [0, n_bins)."""
        x = self.normalise(a)
        return np.rint((x + 1.0) / 2.0 * (self.n_bins - 1)).astype(np.int64)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Bin indices (..., A) -> actions (..., A) at the bin values (float32)."""
        t = np.clip(np.asarray(tokens), 0, self.n_bins - 1)
        return self.denormalise(t / (self.n_bins - 1) * 2.0 - 1.0).astype(np.float32)

    def token_pieces(self, ids: list[int]) -> list[str]:
        """Display text of action tokens for the sample browser (``trainer.logging.token_details``): bin numbers."""
        return [f"{int(t)} " for t in ids]

    def state_dict(self) -> dict:
        return {"low": self.low.tolist(), "high": self.high.tolist(), "n_bins": self.n_bins}

    # The trainer treats this as the run's tokenizer: it pads rows with ``pad_token_id`` and saves it next
    # to the weights in every checkpoint (``save_pretrained``), as it would a text tokenizer.
    pad_token_id = 0
    FILE = "action_tokenizer.json"

    def save_pretrained(self, path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / self.FILE).write_text(json.dumps(self.state_dict()))

    @classmethod
    def from_pretrained(cls, path) -> "ActionTokenizer":
        d = json.loads((Path(path) / cls.FILE).read_text())
        return cls(np.array(d["low"]), np.array(d["high"]), int(d["n_bins"]))


def chunk_tokens(tokens: np.ndarray) -> np.ndarray:
    """(chunk_len, A) bin indices -> flat step-major (chunk_len * A,) token row of one policy call."""
    return np.asarray(tokens).reshape(-1)


def unchunk_tokens(flat: np.ndarray, action_dim: int) -> np.ndarray:
    """Inverse of ``chunk_tokens``: (..., chunk_len * A) -> (..., chunk_len, A)."""
    flat = np.asarray(flat)
    return flat.reshape(*flat.shape[:-1], -1, action_dim)


def finish_step_mask(finish_step: torch.Tensor, action_dim: int, width: int) -> torch.Tensor:
    """Loss mask (B, width): 1 on tokens of executed env steps, ``t < finish_step * action_dim``.

    Tokens a chunk emitted after the episode ended (success mid-chunk, or the step limit) were never
    executed, so they carry no credit for the outcome and are masked (SimpleVLA-RL's finish_step).
    """
    t = torch.arange(width, device=finish_step.device)
    return (t[None, :] < (finish_step.long() * action_dim)[:, None]).float()
