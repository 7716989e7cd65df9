"""The engine seam: prompts in, one ``Rollouts`` batch out; new weights in between steps.

Every engine (the CPU/HF default, a native fast one, vLLM) honours the same row layout so that the
rest of the step never asks which engine produced a batch: prompt ``i``'s ``n`` samples occupy rows
``i*n .. i*n+n-1`` (contiguous), ``group_ids[row] = i`` and ``task_index[row] = task_index[i]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch

from reasonrl.batch import Rollouts
from reasonrl.rollout.sampling import SamplingParams


class Engine(ABC):
    """Generates ``Rollouts``; the trainer pushes weights with ``load_weights`` after each update."""

    @property
    @abstractmethod
    def tokenizer(self) -> Any:
        """The tokenizer the engine encodes prompts and decodes responses with."""

    @abstractmethod
    def generate(
        self, prompts: list[str], params: SamplingParams, task_index: list[int] | None = None
    ) -> Rollouts:
        """Sample ``params.n`` responses per prompt (row layout in the module docstring).

        ``task_index`` (one per prompt; default ``range(len(prompts))``) lets the reward stage find
        each row's task without the engine knowing what a task is.
        """

    @abstractmethod
    def load_weights(self, weights: Mapping[str, torch.Tensor] | torch.nn.Module) -> None:
        """Replace the sampling policy's weights with a state dict or a module's current ones."""

    @staticmethod
    def expand_rows(
        prompts: list[str], n: int, task_index: list[int] | None
    ) -> tuple[list[int], torch.Tensor, list[int]]:
        """``(prompt_of_row, group_ids, task_index_per_row)`` for the contiguous layout; validates."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a list of strings")
        if task_index is None:
            task_index = list(range(len(prompts)))
        if len(task_index) != len(prompts):
            raise ValueError(f"task_index has {len(task_index)} entries for {len(prompts)} prompts")
        prompt_of_row = [i for i in range(len(prompts)) for _ in range(n)]
        group_ids = torch.tensor(prompt_of_row, dtype=torch.long)
        return prompt_of_row, group_ids, [int(task_index[i]) for i in prompt_of_row]
