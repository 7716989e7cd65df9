"""How a run's rollout is assembled from config, the same way in every execution mode.

``make_rollout_engine`` composes the engine named by ``rollout.engine`` with the wrappers the config
asks for (the tool loop of ``tools.names``, SSRL's information masking); ``reasonrl.modes.
make_rollout_stage`` puts it into the configured mode's stage. The single-process trainer, the async
producer (on its own copy of the policy) and every Ray rollout worker go through these, so an engine
or wrapper choice can never be honoured in one mode and silently dropped in another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from reasonrl.rollout.engine import Engine


def _hf(cfg: Any, model: torch.nn.Module, tokenizer: Any, model_dir: str | None) -> Engine:
    from reasonrl.rollout.hf_engine import HFEngine

    return HFEngine(model, tokenizer, micro_batch=cfg.rollout.micro_batch)


def _native(cfg: Any, model: torch.nn.Module, tokenizer: Any, model_dir: str | None) -> Engine:
    from reasonrl.rollout.native_engine import NativeEngine

    return NativeEngine(model, tokenizer, slots=cfg.rollout.micro_batch, graph=cfg.rollout.decode_graph)


def _vllm(cfg: Any, model: torch.nn.Module, tokenizer: Any, model_dir: str | None) -> Engine:
    from reasonrl.rollout.vllm_engine import VLLMEngine

    model_dir = model_dir or getattr(model, "name_or_path", None)  # from_pretrained records its directory
    if not model_dir:
        raise ValueError("rollout.engine=vllm needs a model directory to start vLLM from (model.path)")
    return VLLMEngine.from_pretrained(str(model_dir), tokenizer, policy=model, dtype=cfg.model.dtype)


ENGINES: dict[str, Callable[[Any, torch.nn.Module, Any, str | None], Engine]] = {
    "hf": _hf, "native": _native, "vllm": _vllm}
"""``rollout.engine`` name -> ``builder(cfg, model, tokenizer, model_dir) -> Engine``. HF and native engines
sample from ``model`` itself (no weight copy, so learner updates are seen at once); vLLM loads
``model_dir`` and is kept in sync by pushing ``model``'s weights whenever they changed. Adding an engine:
its file, a builder, one line here, and its name in ``RolloutConfig.engine``."""


def make_engine(cfg: Any, model: torch.nn.Module, tokenizer: Any, model_dir: str | None = None) -> Engine:
    """The bare engine named by ``rollout.engine`` (``cfg`` is the run ``Config``)."""
    name = cfg.rollout.engine
    from reasonrl.rollout.recurrent_engine import RecurrentEngine, is_recurrent_model

    if name in ("hf", "native") and is_recurrent_model(model):  # SSM policy: recurrent state, no KV cache
        return RecurrentEngine(model, tokenizer, slots=cfg.rollout.micro_batch)
    if name not in ENGINES:
        raise ValueError(f"rollout.engine={name!r} is not one of {', '.join(map(repr, ENGINES))}")
    from reasonrl.rollout.lora_engine import is_lora

    if is_lora(model):  # adapters applied (hf) or merged (native); syncs move adapters only (docs/lora.md)
        from reasonrl.rollout.lora_engine import make_lora_engine

        return make_lora_engine(ENGINES[name], cfg, model, tokenizer, model_dir)
    return ENGINES[name](cfg, model, tokenizer, model_dir)


def make_tools(tools_cfg) -> list:
    """The tools named in ``tools.names`` (a ``ToolsConfig``)."""
    from reasonrl.rollout.multiturn import Calculator
    from reasonrl.rollout.search import HTTPSearchTool, SearchTool

    out = []
    for name in tools_cfg.names:
        if name == "search":
            out.append(HTTPSearchTool(tools_cfg.search_url, tools_cfg.top_k) if tools_cfg.search_url
                       else SearchTool.from_corpus(tools_cfg.search_corpus, tools_cfg.top_k))
        elif name == "calculator":
            out.append(Calculator())
        else:
            raise ValueError(f"tools.names: unknown tool {name!r}; valid: search, calculator")
    return out


def make_rollout_engine(cfg: Any, model: torch.nn.Module, tokenizer: Any, model_dir: str | None = None) -> Engine:
    """``make_engine`` plus the configured wrappers: tool loop if ``tools.names``, information masking
    if ``ssrl.mask_information`` (docs/ssrl.md). The tool loop needs ``generate_ids`` (the HF engine)."""
    from reasonrl.rollout.multiturn import InformationMaskEngine, MultiTurnEngine

    engine = make_engine(cfg, model, tokenizer, model_dir=model_dir)
    if cfg.tools.names:
        engine = MultiTurnEngine(engine, make_tools(cfg.tools), max_turns=cfg.tools.max_turns)
    if cfg.ssrl.mask_information:
        engine = InformationMaskEngine(engine)
    return engine
