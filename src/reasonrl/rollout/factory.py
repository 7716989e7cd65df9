"""How a run's rollout is assembled from config, the same way in every execution mode.

``make_rollout_engine`` composes the engine named by ``rollout.engine`` with the wrappers the config
asks for (the tool loop of ``tools.names``, SSRL's information masking); ``make_rollout_stage`` puts
that engine into the stage of the configured mode (``reasonrl.modes``). The single-process trainer,
the async producer (on its own copy of the policy) and every Ray rollout worker call these, so an
engine or wrapper choice can never be honoured in one mode and silently dropped in another.
"""

from __future__ import annotations

from typing import Any

import torch

from reasonrl.rollout.engine import Engine


def make_engine(cfg: Any, model: torch.nn.Module, tokenizer: Any, model_dir: str | None = None) -> Engine:
    """The bare engine of ``rollout.engine``. HF and native engines sample from ``model`` itself (no
    weight copy, so learner updates are seen at once); vLLM loads ``model_dir`` and is kept in sync by
    pushing ``model``'s weights whenever they changed."""
    r = cfg.rollout
    if r.engine == "hf":
        from reasonrl.rollout.hf_engine import HFEngine

        return HFEngine(model, tokenizer, micro_batch=r.micro_batch)
    if r.engine == "native":
        from reasonrl.rollout.native_engine import NativeEngine

        return NativeEngine(model, tokenizer, slots=r.micro_batch, graph=r.decode_graph)
    if r.engine == "vllm":
        from reasonrl.rollout.vllm_engine import VLLMEngine

        model_dir = model_dir or getattr(model, "name_or_path", None)  # from_pretrained records its directory
        if not model_dir:
            raise ValueError("rollout.engine=vllm needs a model directory to start vLLM from (model.path)")
        return VLLMEngine.from_pretrained(str(model_dir), tokenizer, policy=model, dtype=cfg.model.dtype)
    raise ValueError(f"rollout.engine={r.engine!r} is not one of 'hf', 'native', 'vllm'")


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


def make_rollout_stage(cfg: Any, model: torch.nn.Module, tokenizer: Any, scorer: Any, *, engine: Engine | None = None):
    """The configured mode's rollout stage: ``factory(cfg, model, tokenizer, scorer)`` from ``reasonrl.modes``.

    ``engine``: an already composed engine for the stage to use instead of composing one on ``model``
    (the Ray driver passes its engine over the rollout workers, each of which composed its own with
    ``make_rollout_engine``); only modes whose factory takes ``engine=`` (the text-based ones) accept it.
    """
    from reasonrl.modes import get_mode, mode_name

    name = mode_name(cfg)
    factory = get_mode(name)
    if engine is None:
        return factory(cfg, model, tokenizer, scorer)
    try:
        import inspect

        inspect.signature(factory).bind(cfg, model, tokenizer, scorer, engine=engine)
    except TypeError:
        raise ValueError(f"mode {name!r} builds its own rollout and cannot use a given engine (Ray rollout "
                         f"workers); run it with distributed.mode=local") from None
    return factory(cfg, model, tokenizer, scorer, engine=engine)
