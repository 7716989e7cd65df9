"""Compatibility name: supervised fine-tuning lives in ``reasonrl.models.sft`` (the built-in model's warm
start needs it, and models must not import the trainer)."""

from reasonrl.models.sft import SFTExample, SFTResult, collate, encode_examples, lr_at, run_sft, sft_loss  # noqa: F401
