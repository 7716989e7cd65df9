"""The engine seam: prompts in, one ``Rollouts`` batch out; new weights in between steps.

Every engine (the CPU/HF default, a native fast one, vLLM) honours the same row layout so that the
rest of the step never asks which engine produced a batch: prompt ``i``'s ``n`` samples occupy rows
``i*n .. i*n+n-1`` (contiguous), ``group_ids[row] = i`` and ``task_index[row] = task_index[i]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
import time
from typing import Any

import torch

from reasonrl.batch import Rollouts
from reasonrl.rollout.sampling import SamplingParams, sample_next


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


class ModuleEngine(Engine):
    """An engine that samples from an in-process torch module (``self.model``): the HF and native engines.

    ``weight_version`` counts syncs (for staleness bounds) and ``last_load_s`` times the copy, because
    weight sync is a cost the trainer reports (DESIGN.md, Scale).
    """

    model: torch.nn.Module
    _tokenizer: Any
    add_special_tokens: bool = True
    last_seed: int | None = None
    weight_version: int = 0
    last_load_s: float = 0.0

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_prompts(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of each prompt; an empty encoding fails (its first token would have no context)."""
        encoded = [list(self._tokenizer(p, add_special_tokens=self.add_special_tokens)["input_ids"]) for p in prompts]
        for p, ids in zip(prompts, encoded):
            if not ids:
                raise ValueError(f"prompt {p!r} encodes to no tokens; the first token would have no context")
        return encoded

    def seeded_generator(self, seed: int | None) -> torch.Generator:
        """The sampling generator on the model's device; ``None`` draws a fresh seed. ``last_seed`` records it."""
        gen = torch.Generator(device=self.device)
        self.last_seed = gen.seed() if seed is None else seed
        if seed is not None:
            gen.manual_seed(seed)
        return gen

    def assemble_rollouts(self, prompts: list[str], encoded: list[list[int]], prompt_of_row: list[int],
                          group_ids: torch.Tensor, row_tasks: list[int], raw: dict) -> Rollouts:
        """A slot-based decode loop's raw output (``tokens``/``logp`` per row, ``lengths``, ``finish``) as
        ``Rollouts``: prompts left-padded, responses cut to the longest row and padded, texts decoded."""
        tp = max(len(e) for e in encoded)
        r = len(prompt_of_row)
        prompt_ids = torch.full((r, tp), self.pad_token_id, dtype=torch.long)
        prompt_mask = torch.zeros((r, tp), dtype=torch.long)
        for i, u in enumerate(prompt_of_row):
            prompt_ids[i, tp - len(encoded[u]):] = torch.tensor(encoded[u])
            prompt_mask[i, tp - len(encoded[u]):] = 1
        lengths = raw["lengths"]
        width = int(lengths.max())
        loss_mask = (torch.arange(width)[None, :] < lengths[:, None]).float()
        tokens = raw["tokens"][:, :width].clone()
        tokens[loss_mask == 0] = self.pad_token_id
        logp = raw["logp"][:, :width].clone() * loss_mask
        texts = self._tokenizer.batch_decode([tokens[i, : int(lengths[i])].tolist() for i in range(r)],
                                             skip_special_tokens=True)
        return Rollouts(
            prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=tokens, loss_mask=loss_mask,
            rollout_logp=logp, group_ids=group_ids, task_index=row_tasks, response_text=texts,
            truncated=torch.tensor([f == "length" for f in raw["finish"]], dtype=torch.bool),
            info={"prompt": [prompts[i] for i in prompt_of_row], "finish_reason": raw["finish"]},
        )

    def load_weights(self, weights: Mapping[str, torch.Tensor] | torch.nn.Module) -> None:
        """Copy weights in place (strict names); the engine's own module is a no-op."""
        t0 = time.perf_counter()
        if isinstance(weights, torch.nn.Module):
            weights = None if weights is self.model else weights.state_dict()
        if weights is not None:
            with torch.no_grad():
                self.model.load_state_dict(dict(weights), strict=True)
        self.weight_version += 1
        self.last_load_s = time.perf_counter() - t0


def stop_and_pad_ids(tokenizer: Any, model: Any, eos_token_ids: Sequence[int] | None,
                     stop_token_ids: Sequence[int]) -> tuple[list[int], int]:
    """The ids that end a sample and the pad id, decided the same way by every engine.

    ``eos_token_ids=None`` means the tokenizer's EOS plus the model's ``generation_config.eos_token_id``
    (chat models often end turns with a different id); the pad id falls back to EOS, then 0.
    """
    if eos_token_ids is None:
        eos_token_ids = _as_list(getattr(tokenizer, "eos_token_id", None))
        if model is not None:
            eos_token_ids += _as_list(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    return sorted(set(eos_token_ids) | set(stop_token_ids)), int(pad) if pad is not None else 0


def sample_and_record(logits: torch.Tensor, act: torch.Tensor, params: SamplingParams, gen, idle_token: int,
                      slot_row: torch.Tensor, count: torch.Tensor, out_tok: torch.Tensor, out_lp: torch.Tensor,
                      stop_ids: torch.Tensor, max_new: int, finish: dict, tokenizer: Any,
                      stats: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step of a continuous-batching engine (native KV cache, recurrent state): sample the
    live slots ``act`` (idle slots get ``idle_token``; their logits are stale), write each live row's
    token and log-prob at its next position, and decide which slots finished (EOS, ``max_new``, or a stop
    string, recorded in ``finish`` by row). Returns ``(tokens on the logits' device, done per slot)``."""
    dev = logits.device
    s_eff = logits.shape[0]
    if bool(act.all()):
        tok_s, lp_s = sample_next(logits, params, gen)
    else:
        act_dev = act.to(dev)
        tok_s = torch.full((s_eff,), idle_token, dtype=torch.long, device=dev)
        lp_s = torch.zeros(s_eff, dtype=torch.float32, device=dev)
        t_a, l_a = sample_next(logits[act_dev], params, gen)
        tok_s[act_dev], lp_s[act_dev] = t_a, l_a
    tok_c, lp_c = tok_s.cpu(), lp_s.cpu()
    r_idx = slot_row[act]
    c_idx = count[r_idx]
    out_tok[r_idx, c_idx] = tok_c[act]
    out_lp[r_idx, c_idx] = lp_c[act]
    count[r_idx] += 1
    stats["slot_busy"] += float(act.sum()) / s_eff
    is_eos = act & torch.isin(tok_c, stop_ids)
    done = is_eos | (act & (count.index_select(0, slot_row.clamp(min=0)) >= max_new))
    for s in is_eos.nonzero().flatten().tolist():
        finish[int(slot_row[s])] = "eos"
    if params.stop:
        check = (act & ~done).nonzero().flatten().tolist()
        if check:
            texts = tokenizer.batch_decode(
                [out_tok[int(slot_row[s]), : int(count[slot_row[s]])].tolist() for s in check],
                skip_special_tokens=True)
            for s, text in zip(check, texts):
                if any(st in text for st in params.stop):
                    done[s] = True
                    finish[int(slot_row[s])] = "stop"
    return tok_s, done


def _as_list(x: Any) -> list[int]:
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return [int(v) for v in x]
    return [int(x)]
