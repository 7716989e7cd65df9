"""State-space policies: S4D, Mamba and Mamba-2 layers (``ops``, ``layers``) and a causal LM built from
them in Hugging Face format (``model``). Importing this package registers the model with the HF Auto
classes, so ``load_policy`` loads our checkpoints like any other (docs/ssm.md)."""

from reasonrl.models.ssm.model import (
    MODEL_TYPE,
    SSMConfig,
    SSMForCausalLM,
    is_recurrent_model,
    recurrent_view,
    register,
)

register()

__all__ = ["MODEL_TYPE", "SSMConfig", "SSMForCausalLM", "is_recurrent_model", "recurrent_view", "register"]
