"""Sampling parameters and the one-step token sampler shared by every engine.

Log-prob convention (algorithms.md §0, veRL): the log-prob recorded for a sampled token is taken
under the **temperature-scaled full** distribution, i.e. ``log_softmax(logits / T)`` *before* any
top-k / top-p truncation. The learner recomputes ``logp`` from the same temperature-scaled logits
without truncation (``rollout.logprobs.sequence_logprobs``), so the two agree token for token and
the importance ratio is exactly 1 on-policy. The price: with truncation the recorded value is not
the probability the token was actually drawn with (that one is larger); this is the standard choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """How to sample. ``n`` samples per prompt; ``top_k=0`` and ``top_p=1`` disable truncation.

    ``greedy`` takes the argmax and records log-probs at temperature 1 (``temperature`` is ignored);
    ``logp_temperature`` is the value the learner must divide logits by to reproduce them.
    ``stop`` strings end a sample when they appear in its decoded continuation (see ``HFEngine``).
    ``seed=None`` draws a fresh seed per call; an int makes a call reproducible.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    stop: list[str] = field(default_factory=list)
    greedy: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        def is_int(x: object) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if not is_int(self.n) or self.n < 1:
            raise ValueError(f"SamplingParams.n must be an integer >= 1, got {self.n!r}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            raise ValueError(f"SamplingParams.temperature must be a number, got {self.temperature!r}")
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(
                f"SamplingParams.temperature must be finite and > 0, got {self.temperature!r} "
                "(for argmax decoding set greedy=True)"
            )
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if not is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if isinstance(self.stop, str) or not isinstance(self.stop, (list, tuple)):
            raise ValueError(f"SamplingParams.stop must be a list of strings, got {self.stop!r}")
        if any(not isinstance(s, str) or s == "" for s in self.stop):
            raise ValueError(f"SamplingParams.stop must hold non-empty strings, got {self.stop!r}")
        self.stop = list(self.stop)
        if not isinstance(self.greedy, bool):
            raise ValueError(f"SamplingParams.greedy must be a bool, got {self.greedy!r}")
        if self.seed is not None and (not is_int(self.seed) or self.seed < 0):
            raise ValueError(f"SamplingParams.seed must be None or an integer >= 0, got {self.seed!r}")

    @property
    def logp_temperature(self) -> float:
        """Temperature the recorded log-probs are under (1.0 for greedy)."""
        return 1.0 if self.greedy else float(self.temperature)


def sample_next(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of ``logits`` (B, V); return ``(token (B,) long, logp (B,) float32)``.

    ``logp`` is under ``log_softmax(logits / T)`` before truncation (module docstring explains why).
    Top-k keeps every token tied with the k-th value; top-p keeps the smallest prefix of the sorted
    distribution whose mass reaches ``top_p`` (the most likely token is always kept).
    """
    z = logits.float()
    if params.greedy:
        token = z.argmax(dim=-1)
        logp = torch.log_softmax(z, dim=-1).gather(-1, token[:, None]).squeeze(-1)
        return token, logp

    z = z / params.temperature
    logp_full = torch.log_softmax(z, dim=-1)
    filt = logp_full
    vocab = z.shape[-1]
    if 0 < params.top_k < vocab:
        kth = torch.topk(filt, params.top_k, dim=-1).values[:, -1:]
        filt = filt.masked_fill(filt < kth, -math.inf)
    if params.top_p < 1.0:
        sorted_lp, order = torch.sort(filt, dim=-1, descending=True)
        probs = sorted_lp.exp()
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= params.top_p * probs.sum(dim=-1, keepdim=True)
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        filt = filt.masked_fill(drop, -math.inf)
    probs = torch.softmax(filt, dim=-1)
    token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    logp = logp_full.gather(-1, token[:, None]).squeeze(-1)
    return token, logp
