"""Pick the engine named by ``rollout.engine`` (the trainer's only engine-specific line)."""

from __future__ import annotations

from typing import Any

import torch

from reasonrl.rollout.engine import Engine


def make_engine(cfg: Any, model: torch.nn.Module, tokenizer: Any, model_dir: str | None = None) -> Engine:
    """``cfg`` is the run ``Config``. HF and native engines sample from ``model`` itself (no weight
    copy, so learner updates are seen at once); vLLM loads ``model_dir`` and is kept in sync by
    pushing ``model``'s weights whenever they changed."""
    r = cfg.rollout
    from reasonrl.rollout.recurrent_engine import RecurrentEngine, is_recurrent_model

    if r.engine in ("hf", "native") and is_recurrent_model(model):  # SSM policy: recurrent state, no KV cache
        return RecurrentEngine(model, tokenizer, slots=r.micro_batch)
    if r.engine == "hf":
        from reasonrl.rollout.hf_engine import HFEngine

        return HFEngine(model, tokenizer, micro_batch=r.micro_batch)
    if r.engine == "native":
        from reasonrl.rollout.native_engine import NativeEngine

        return NativeEngine(model, tokenizer, slots=r.micro_batch, graph=r.decode_graph)
    if r.engine == "vllm":
        from reasonrl.rollout.vllm_engine import VLLMEngine

        if model_dir is None:
            raise ValueError("rollout.engine=vllm needs a model directory to start vLLM from (model.path)")
        return VLLMEngine.from_pretrained(str(model_dir), tokenizer, policy=model, dtype=cfg.model.dtype)
    raise ValueError(f"rollout.engine={r.engine!r} is not one of 'hf', 'native', 'vllm'")
