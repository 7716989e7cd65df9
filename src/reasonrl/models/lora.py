"""LoRA adapters through ``peft``: wrap a policy, keep only adapter tensors in checkpoints and weight
syncs, and export both a PEFT adapter and a merged plain Hugging Face model (docs/lora.md).

The policy is a ``peft.PeftModel`` whose base weights are frozen, so the optimizer holds state for the
adapters only and ``save_pretrained`` writes ``adapter_model.safetensors`` + ``adapter_config.json``.
The reference policy of KL-regularised recipes is the same model with its adapters switched off
(``reference_view``): no second copy of the base weights, and nothing of it in a checkpoint. Every
function here accepts a plain model too and then does what full fine-tuning did, so callers need not
branch.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from reasonrl.errors import ConfigError
from reasonrl.rollout.lora_engine import (  # noqa: F401  (re-exported: the LoRA toolkit is one import)
    adapter_state_dict, is_lora, load_adapter_tensors, merge_into, merged_copy, sync_state_dict)

ADAPTER_FILE = "adapter_model.safetensors"
FINAL_ADAPTER_DIR = "final_adapter"


def require_peft():
    """The ``peft`` module, or a ``ConfigError`` naming the extra to install."""
    try:
        import peft
    except ImportError as e:
        raise ConfigError("model.lora needs the peft package: pip install 'reasonrl[lora]' "
                          "(or set model.lora=null for full fine-tuning)") from e
    return peft


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Distinct last name components of the model's linear layers (what ``target_modules`` can name)."""
    from transformers.pytorch_utils import Conv1D

    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))})


def apply_lora(model: torch.nn.Module, lcfg: Any) -> torch.nn.Module:
    """``model`` wrapped with fresh LoRA adapters per ``lcfg`` (a ``config.LoraConfig``); base frozen.

    Adapters start with B = 0 (peft's default), so the wrapped policy computes exactly the base model's
    outputs until the first update. The adapter initialisation draws from torch's global RNG, which the
    trainer seeded, so it is a function of ``run.seed``.
    """
    peft = require_peft()
    targets = lcfg.target_modules
    names = linear_module_names(model)
    if isinstance(targets, list):
        missing = [t for t in targets if t not in names]
        if missing:
            raise ConfigError(f"model.lora.target_modules: {missing} match no linear layer of "
                              f"{type(model).__name__}; its linear layers are named {names}")
    pc = peft.LoraConfig(r=lcfg.rank, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout,
                         target_modules=targets, bias="none", task_type="CAUSAL_LM")
    try:
        return peft.get_peft_model(model, pc)
    except ValueError as e:
        raise ConfigError(f"model.lora could not be applied to {type(model).__name__}: {e}; "
                          f"its linear layers are named {names}") from e


def check_supported(cfg: Any) -> None:
    """Fail at build time, naming the field, where LoRA is not wired in."""
    if cfg.model.lora is None:
        return
    if cfg.rollout.engine == "vllm":
        raise ConfigError("model.lora with rollout.engine=vllm is not supported; use rollout.engine=hf or native")
    if cfg.distributed.mode == "ray":
        raise ConfigError("model.lora with distributed.mode=ray is not supported yet; use a single process "
                          "(distributed.mode=local) or full fine-tuning (model.lora=null)")


class _ReferenceView(torch.nn.Module):
    """The LoRA policy with its adapters off, in eval mode: the base model, without a copy of it.

    The policy is held outside the module tree, so this view has no state of its own to checkpoint.
    """

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self._policy = [policy]

    def parameters(self, recurse: bool = True):
        return self._policy[0].parameters(recurse)

    def get_base_model(self) -> torch.nn.Module:
        """The wrapped policy (``rollout.lora_engine.forward_parameters`` looks through it)."""
        return self._policy[0]

    def forward(self, *args, **kwargs):
        policy = self._policy[0]
        was = policy.training
        policy.eval()
        try:
            with policy.disable_adapter():
                return policy(*args, **kwargs)
        finally:
            policy.train(was)


def reference_view(model: torch.nn.Module) -> torch.nn.Module:
    """The frozen reference policy: a deep copy for full fine-tuning, the adapter-free view for LoRA."""
    if is_lora(model):
        return _ReferenceView(model)
    return copy.deepcopy(model).eval().requires_grad_(False)


def load_checkpoint_adapter(model: torch.nn.Module, model_dir: Path) -> bool:
    """Load a checkpoint's ``adapter_model.safetensors`` into a LoRA policy (bit-exact) and return True;
    False for a full-fine-tuning policy and checkpoint (the caller loads the HF model). A mismatch between
    the two fails naming ``model.lora``."""
    path = Path(model_dir) / ADAPTER_FILE
    if not is_lora(model):
        if path.is_file():
            raise ConfigError(f"{model_dir} holds a LoRA adapter: resume with the model.lora settings the run was "
                              "trained with")
        return False
    from safetensors.torch import load_file

    peft = require_peft()
    if not path.is_file():
        raise ConfigError(f"{model_dir} holds no {ADAPTER_FILE}: this checkpoint was written without model.lora; "
                          "resume it with the config it was trained with (model.lora=null)")
    res = peft.set_peft_model_state_dict(model, load_file(str(path)))
    unexpected = getattr(res, "unexpected_keys", [])
    if unexpected:
        raise ConfigError(f"{path} does not fit model.lora as configured (unexpected tensors {unexpected[:3]}); "
                          "resume with the LoRA settings the run was trained with")
    return True


def save_final(model: torch.nn.Module, tokenizer: Any, run_dir: Path) -> Path:
    """The final policy in ``run_dir/final`` as a plain HF model; for LoRA it is the merged model and
    ``run_dir/final_adapter`` holds the PEFT adapter (``PeftModel.from_pretrained(base, final_adapter)``)."""
    from reasonrl.models.loading import save_policy

    if not is_lora(model):
        return save_policy(model, tokenizer, run_dir / "final")
    save_policy(model, tokenizer, run_dir / FINAL_ADAPTER_DIR)  # PeftModel.save_pretrained: the adapter only
    return save_policy(merged_copy(model), tokenizer, run_dir / "final")
