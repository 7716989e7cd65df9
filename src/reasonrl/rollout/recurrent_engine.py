"""The recurrent engine: continuous-batching rollouts for state-space policies (Mamba, Mamba-2, S4D).

Why a separate engine: an SSM decodes from a fixed-size state per row (each layer's conv window of
``k-1`` inputs plus its SSM state), not from a KV cache that grows with the sequence, so a decode step
costs the same at token 10 and token 8,000 and memory is ``slots × state`` whatever the length. That
is the point of an SSM policy for long RL rollouts (docs/ssm.md).

- Prefill runs the parallel form (scan / chunked SSD / FFT convolution) over the newcomers' prompts,
  left-padded in one batch (padding is exact: masked positions keep the state at zero), each distinct
  prompt once, and copies the resulting state to the slots of its ``n`` samples.
- Decode steps every live slot with the recurrent form (``SSMForCausalLM.step``).
- Continuous batching: rows wait in a queue; a finished row's slot is refilled at once (a state is a
  fixed-size tensor row, so refilling is a copy, never a reallocation); when the queue is empty and at
  most half the slots are live, live slots are compacted to the front.
- Sampling uses ``sample_next`` (the log-prob convention every engine shares); the learner recomputes
  log-probs with the parallel form (``sequence_logprobs``), so the rollout/learner mismatch metric
  compares the two forms (``tests/rollout/test_recurrent_engine.py``).

Works for any module with ``prefill(ids, mask) -> (logits, state)``, ``step(tokens, state) -> (logits,
state)`` and ``init_state(batch)`` (our ``SSMForCausalLM``), and for models whose ``config.model_type`` has
a registered adapter returning such a view: ``reasonrl.models.ssm`` registers one for HF ``mamba`` and
``mamba2`` (sharing the HF model's parameters). The registry keeps this package free of imports from
``reasonrl.models`` (no import cycle between the two).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from reasonrl.batch import Rollouts
from reasonrl.rollout.engine import ModuleEngine, sample_and_record, stop_and_pad_ids
from reasonrl.rollout.hf_engine import _empty_rollouts
from reasonrl.rollout.sampling import SamplingParams

__all__ = ["RecurrentEngine", "as_recurrent", "is_recurrent_model", "register_recurrent_adapter", "state_bytes"]

_RECURRENT_METHODS = ("prefill", "step", "init_state")
_ADAPTERS: dict[str, Callable[[torch.nn.Module], torch.nn.Module]] = {}


def register_recurrent_adapter(model_type: str, adapter: Callable[[torch.nn.Module], torch.nn.Module]) -> None:
    """Let models of ``model_type`` run here: ``adapter(model)`` returns a view with the recurrent methods."""
    _ADAPTERS[model_type] = adapter


def _model_type(model: torch.nn.Module) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def is_recurrent_model(model: torch.nn.Module) -> bool:
    """True when ``model`` has the recurrent methods itself or an adapter is registered for its type."""
    return all(callable(getattr(model, m, None)) for m in _RECURRENT_METHODS) or _model_type(model) in _ADAPTERS


def as_recurrent(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` if it has the recurrent methods, else its registered adapter's view; fails otherwise."""
    if all(callable(getattr(model, m, None)) for m in _RECURRENT_METHODS):
        return model
    if _model_type(model) in _ADAPTERS:
        return _ADAPTERS[_model_type(model)](model)
    raise ValueError(f"the recurrent engine needs an SSM policy (model_type reasonrl_ssm, mamba or mamba2); "
                     f"{type(model).__name__} is not one: use rollout.engine=hf or native")


def state_bytes(states: list[tuple[torch.Tensor, ...]]) -> int:
    """Bytes held by a recurrent state (all layers, all slots): the SSM analogue of KV-cache size."""
    return sum(t.numel() * t.element_size() for layer in states for t in layer)


class RecurrentEngine(ModuleEngine):
    """Continuous-batching sampler over an SSM causal LM (module docstring).

    - ``slots``: rows decoded at once; ``None`` = every row of the call. State memory is
      ``slots × state_bytes_per_row``, independent of prompt and generation length.
    - ``add_special_tokens``, ``eos_token_ids``, ``stop_token_ids``: as in ``HFEngine``.

    Output layout, stop-string rule and ``info`` keys are ``HFEngine``'s. ``last_stats`` holds the
    last call's decode steps, mean slot occupancy, prefill/decode seconds, generated tokens and the
    state's size in bytes.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, slots: int | None = None,
                 add_special_tokens: bool = True, eos_token_ids: Sequence[int] | None = None,
                 stop_token_ids: Sequence[int] = ()) -> None:
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be None or >= 1, got {slots}")
        self.model = model
        self._view = as_recurrent(model)
        self._tokenizer = tokenizer
        self.slots = slots
        self.add_special_tokens = add_special_tokens
        self.stop_token_ids, self.pad_token_id = stop_and_pad_ids(tokenizer, model, eos_token_ids, stop_token_ids)
        self.weight_version = 0
        self.last_seed: int | None = None
        self.last_load_s = 0.0
        self.last_stats: dict[str, float] = {}

    def generate(self, prompts: list[str], params: SamplingParams, task_index: list[int] | None = None) -> Rollouts:
        prompt_of_row, group_ids, row_tasks = self.expand_rows(prompts, params.n, task_index)
        encoded = self.encode_prompts(prompts)
        gen = self.seeded_generator(params.seed)
        if not prompt_of_row:
            return _empty_rollouts(self.pad_token_id)
        was_training = self.model.training
        self.model.eval()
        self._view.eval()
        try:
            with torch.inference_mode():
                raw = self._run(encoded, prompt_of_row, params, gen)
        finally:
            self.model.train(was_training)
        return self.assemble_rollouts(prompts, encoded, prompt_of_row, group_ids, row_tasks, raw)

    def _prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, list[tuple[torch.Tensor, ...]]]:
        """Distinct prompts, left-padded into one batch -> (last-position logits, per-layer states)."""
        dev = self.device
        t_ = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), t_), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), t_), dtype=torch.long)
        for j, p in enumerate(prompts):
            ids[j, t_ - len(p):] = torch.tensor(p)
            mask[j, t_ - len(p):] = 1
        return self._view.prefill(ids.to(dev), mask.to(dev))

    def _run(self, encoded: list[list[int]], prompt_of_row: list[int], params: SamplingParams,
             gen: torch.Generator) -> dict[str, Any]:
        dev, pad = self.device, self.pad_token_id
        rows, max_new = len(prompt_of_row), params.max_new_tokens
        s_eff = min(self.slots or rows, rows)
        states = self._view.init_state(s_eff)
        logits: torch.Tensor | None = None  # (slots, V), allocated at the first prefill
        stop_ids = torch.tensor(self.stop_token_ids, dtype=torch.long)
        out_tok = torch.full((rows, max_new), pad, dtype=torch.long)
        out_lp = torch.zeros((rows, max_new), dtype=torch.float32)
        count = torch.zeros(rows, dtype=torch.long)
        finish = ["length"] * rows
        slot_row = torch.full((s_eff,), -1, dtype=torch.long)
        active = torch.zeros(s_eff, dtype=torch.bool)
        queue = deque(range(rows))
        remaining: dict[int, int] = {}
        for u in prompt_of_row:
            remaining[u] = remaining.get(u, 0) + 1
        prefilled: dict[int, tuple[torch.Tensor, list[tuple[torch.Tensor, ...]], int]] = {}
        stats = {"decode_steps": 0, "slot_busy": 0.0, "prefill_s": 0.0, "decode_s": 0.0, "prefill_prompts": 0,
                 "state_bytes": float(state_bytes(states))}

        def admit(free: list[int], logits: torch.Tensor | None) -> torch.Tensor:
            t0 = time.perf_counter()
            take = [queue.popleft() for _ in range(min(len(free), len(queue)))]
            need = sorted({prompt_of_row[r] for r in take if prompt_of_row[r] not in prefilled})
            if need:
                lg, st = self._prefill([encoded[u] for u in need])
                for j, u in enumerate(need):
                    prefilled[u] = (lg[j], st, j)
                stats["prefill_prompts"] += len(need)
            if logits is None:
                logits = torch.zeros((s_eff, next(iter(prefilled.values()))[0].shape[-1]), device=dev)
            for s, r in zip(free, take):
                u = prompt_of_row[r]
                lg_u, st_u, j = prefilled[u]
                for layer, new in zip(states, st_u):
                    for dst, src in zip(layer, new):
                        dst[s] = src[j]
                logits[s] = lg_u
                slot_row[s], active[s] = r, True
                remaining[u] -= 1
                if remaining[u] == 0:
                    del prefilled[u]
            stats["prefill_s"] += time.perf_counter() - t0
            return logits

        logits = admit(list(range(s_eff)), None)
        while True:
            act = active.clone()
            tok_s, done = sample_and_record(logits, act, params, gen, pad, slot_row, count, out_tok, out_lp,
                                            stop_ids, max_new, finish, self._tokenizer, stats)
            active &= ~done
            if not queue and not bool(active.any()):
                break
            n_live = int(active.sum())
            if not queue and n_live <= s_eff // 2:  # compact: idle slots stop costing compute
                keep = active.nonzero().flatten()
                kd = keep.to(dev)
                states = [tuple(t.index_select(0, kd) for t in layer) for layer in states]
                slot_row, active, tok_s = slot_row[keep], active[keep], tok_s[kd]
                s_eff = n_live
            t0 = time.perf_counter()
            logits, states = self._view.step(tok_s, states)
            stats["decode_s"] += time.perf_counter() - t0
            stats["decode_steps"] += 1
            free = (~active).nonzero().flatten().tolist()
            if queue and free:
                logits = admit(free, logits)
        stats["slot_busy"] /= max(1, stats["decode_steps"] + 1)
        stats["gen_tokens"] = float(count.sum())
        self.last_stats = stats
        return {"tokens": out_tok, "logp": out_lp, "lengths": count, "finish": finish}
