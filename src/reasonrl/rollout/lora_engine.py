"""Engines for a LoRA policy (docs/lora.md): generate with the adapted weights, sync adapters only.

- ``rollout.engine=hf``: the engine runs the peft model itself, adapters applied in every forward; it
  shares the learner's module in one process, so there is nothing to copy after an update.
- ``rollout.engine=native``: its decode step reads raw Llama/Qwen2 weight tensors, which know nothing of
  adapters, so it samples from a plain merged copy; before each ``generate`` every adapted weight is
  rewritten in place as base + the adapter's update (one small ``B @ A`` product per layer).

``load_weights`` (a copy of the policy, e.g. the async producer's) takes the adapter tensors only
(``adapter_state_dict``); a full state dict is refused, so a sync can never silently move
the base weights.
"""

from __future__ import annotations

import copy
import inspect
import sys
import time
from collections.abc import Mapping
from typing import Any

import torch

from reasonrl.batch import Rollouts
from reasonrl.rollout.engine import Engine
from reasonrl.rollout.sampling import SamplingParams


def forward_parameters(model: torch.nn.Module) -> Mapping[str, inspect.Parameter]:
    """The parameters of the forward that finally runs: wrappers (a PEFT model, the LoRA reference view)
    take ``**kwargs`` and pass them on, so the wrapped model's own signature says whether an argument
    such as ``logits_to_keep`` is honoured (without this, LoRA scoring ran the LM head on every prompt
    position)."""
    inner = model
    while hasattr(inner, "get_base_model"):
        nxt = inner.get_base_model()
        if nxt is inner:
            break
        inner = nxt
    return inspect.signature(inner.forward).parameters


def is_lora(model: Any) -> bool:
    """Whether ``model`` is a peft-wrapped policy (without importing peft when nothing uses it)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def _is_adapter(name: str) -> bool:
    """peft names every LoRA tensor ``...lora_A``/``lora_B``/``lora_embedding_*``/``lora_magnitude_vector``."""
    return ".lora_" in name


def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors under their full module names: all a LoRA weight sync has to move (by name, so a
    frozen copy of the policy, such as the async producer's, gives the same names as the learner's)."""
    return {n: p.detach() for n, p in model.named_parameters() if _is_adapter(n)}


def sync_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a weight sync sends to an engine: adapter tensors for a LoRA policy, else the full state."""
    return adapter_state_dict(model) if is_lora(model) else model.state_dict()


def load_adapter_tensors(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors (``adapter_state_dict`` names) into ``model`` in place; other names are refused."""
    own = dict(model.named_parameters())
    bad = [k for k in weights if k not in own or not _is_adapter(k)]
    if bad:
        raise ValueError(f"a LoRA policy takes adapter tensors only; got {len(bad)} other name(s), e.g. {bad[:3]}")
    with torch.no_grad():
        for k, v in weights.items():
            own[k].copy_(v)


def merged_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A plain HF model whose weights are base + adapter update (``model`` itself is left as it is)."""
    return copy.deepcopy(model).merge_and_unload()


def lora_layers(model: torch.nn.Module) -> dict[str, Any]:
    """The peft LoRA layers by their name inside the base model (``model.layers.0.self_attn.q_proj``)."""
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return {n.removeprefix(prefix): m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


@torch.no_grad()
def merge_into(plain: torch.nn.Module, policy: torch.nn.Module) -> None:
    """Write ``base + delta`` of every LoRA layer of ``policy`` into the same-named layer of ``plain``
    (in place, so an engine holding ``plain``'s tensors sees the new weights). peft's ``get_delta_weight``
    applies the scaling and GPT-2's transposed layout."""
    mods = dict(plain.named_modules())
    for name, layer in lora_layers(policy).items():
        base = layer.get_base_layer().weight
        delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters if a in layer.lora_A)
        mods[name].weight.copy_(base + delta.to(base.dtype))


class LoraEngine(Engine):
    """``inner`` samples; ``policy`` (a peft model) is the source of truth for the adapter tensors.

    ``plain`` is the merged copy ``inner`` samples from (native engine), or ``None`` when ``inner`` runs
    ``policy`` itself (HF engine)."""

    def __init__(self, inner: Engine, policy: torch.nn.Module, plain: torch.nn.Module | None = None):
        self.inner, self.policy, self.plain = inner, policy, plain
        self.weight_version = 0
        self.last_load_s = 0.0
        self.last_load_bytes = 0

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    def __getattr__(self, name: str) -> Any:  # engine-specific attributes (stats, last_seed, model)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def generate(self, prompts: list[str], params: SamplingParams, task_index: list[int] | None = None) -> Rollouts:
        if self.plain is not None:
            merge_into(self.plain, self.policy)
        return self.inner.generate(prompts, params, task_index)

    def load_weights(self, weights: Mapping[str, torch.Tensor] | torch.nn.Module) -> None:
        """Adapter tensors in (a peft module or a mapping of ``adapter_state_dict`` names); the policy's own
        module is a no-op."""
        t0 = time.perf_counter()
        if isinstance(weights, torch.nn.Module):
            weights = None if weights is self.policy else adapter_state_dict(weights)
        if weights is not None:
            load_adapter_tensors(self.policy, dict(weights))
            self.last_load_bytes = sum(v.numel() * v.element_size() for v in weights.values())
        self.weight_version += 1
        self.last_load_s = time.perf_counter() - t0


def make_lora_engine(build, cfg: Any, policy: torch.nn.Module, tokenizer: Any, model_dir: str | None) -> Engine:
    """The engine ``build`` (a ``rollout.factory.ENGINES`` builder) for a peft ``policy``."""
    name = cfg.rollout.engine
    if name == "hf":
        return LoraEngine(build(cfg, policy, tokenizer, model_dir), policy)
    if name == "native":
        plain = merged_copy(policy).eval().requires_grad_(False)
        return LoraEngine(build(cfg, plain, tokenizer, model_dir), policy, plain)
    raise ValueError(f"rollout.engine={name!r} cannot sample from a LoRA policy; use hf or native")
