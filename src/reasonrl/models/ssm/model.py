"""A causal LM built from SSM blocks, in Hugging Face format (``model_type="reasonrl_ssm"``).

``SSMForCausalLM`` is a ``PreTrainedModel``: ``save_pretrained``/``from_pretrained`` and therefore
``reasonrl.models.loading.load_policy`` work as for any HF model once this module is imported (it
registers itself with ``AutoConfig``/``AutoModelForCausalLM``). Its parameter names follow HF's
``MambaForCausalLM``/``Mamba2ForCausalLM`` (``backbone.embeddings``, ``backbone.layers.i.norm``,
``backbone.layers.i.mixer.*``, ``backbone.norm_f``, ``lm_head``), so ``recurrent_view`` can run an HF
Mamba/Mamba-2 checkpoint through the same blocks, sharing (not copying) its parameters.

Two ways to run it: ``forward`` (the parallel form: training, ``sequence_logprobs``) and
``prefill``/``step`` (the rollout engine's recurrent form over a fixed-size state per row).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from reasonrl.models.ssm.layers import MIXERS, RMSNorm, SSMBlock, State

MODEL_TYPE = "reasonrl_ssm"
HF_SSM_TYPES = ("mamba", "mamba2")


class SSMConfig(PretrainedConfig):
    """Configuration of ``SSMForCausalLM``.

    mixer: "mamba" (S6 selective scan), "mamba2" (SSD) or "s4d" (diagonal LTI, FFT convolution).
    state_size: N (Mamba/Mamba-2 state per channel/head; S4D keeps N/2 complex modes).
    expand: intermediate_size = expand * hidden_size. conv_kernel: the causal depthwise conv width.
    time_step_rank: Mamba's low-rank Δ projection ("auto" = ceil(hidden/16)).
    num_heads/head_dim/n_groups/chunk_size: Mamba-2 (num_heads*head_dim must equal the intermediate size).
    time_step_min/max/floor: Δ init range; time_step_limit: Mamba-2's clamp on Δ.
    s4d_init: "lin", "inv" or "real". scan_mode: Mamba's CPU scan, "sequential" or "parallel".
    use_kernels: use mamba-ssm/causal-conv1d on CUDA when both import (``kernels.py``).
    """

    model_type = MODEL_TYPE

    def __init__(self, vocab_size: int = 256, hidden_size: int = 128, num_hidden_layers: int = 4,
                 mixer: str = "mamba", state_size: int = 16, expand: int = 2, conv_kernel: int = 4,
                 time_step_rank: int | str = "auto", num_heads: int | None = None, head_dim: int = 32,
                 n_groups: int = 1, chunk_size: int = 64, use_bias: bool = False, use_conv_bias: bool = True,
                 layer_norm_epsilon: float = 1e-5, initializer_range: float = 0.02, time_step_min: float = 1e-3,
                 time_step_max: float = 0.1, time_step_floor: float = 1e-4,
                 time_step_limit: tuple[float, float] = (0.0, float("inf")), s4d_init: str = "lin",
                 scan_mode: str = "sequential", use_kernels: bool = True, tie_word_embeddings: bool = True,
                 **kwargs):
        if mixer not in MIXERS:
            raise ValueError(f"SSMConfig.mixer must be one of {sorted(MIXERS)}, got {mixer!r}")
        self.vocab_size, self.hidden_size, self.num_hidden_layers = vocab_size, hidden_size, num_hidden_layers
        self.mixer, self.state_size, self.expand, self.conv_kernel = mixer, state_size, expand, conv_kernel
        self.intermediate_size = int(expand * hidden_size)
        self.time_step_rank = math.ceil(hidden_size / 16) if time_step_rank == "auto" else int(time_step_rank)
        self.head_dim = head_dim
        self.num_heads = num_heads if num_heads is not None else self.intermediate_size // head_dim
        self.n_groups, self.chunk_size = n_groups, chunk_size
        self.use_bias, self.use_conv_bias = use_bias, use_conv_bias
        self.layer_norm_epsilon, self.initializer_range = layer_norm_epsilon, initializer_range
        self.time_step_min, self.time_step_max, self.time_step_floor = time_step_min, time_step_max, time_step_floor
        self.time_step_limit = list(time_step_limit)
        self.s4d_init, self.scan_mode, self.use_kernels = s4d_init, scan_mode, use_kernels
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @classmethod
    def from_hf(cls, hf) -> SSMConfig:
        """The equivalent config of a transformers ``MambaConfig``/``Mamba2Config``."""
        common = dict(vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, num_hidden_layers=hf.num_hidden_layers,
                      state_size=hf.state_size, expand=hf.expand, conv_kernel=hf.conv_kernel,
                      time_step_rank=hf.time_step_rank, use_bias=hf.use_bias, use_conv_bias=hf.use_conv_bias,
                      layer_norm_epsilon=hf.layer_norm_epsilon, tie_word_embeddings=hf.tie_word_embeddings,
                      pad_token_id=hf.pad_token_id, bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id)
        if getattr(hf, "hidden_act", "silu") != "silu":
            raise ValueError(f"only hidden_act='silu' Mamba models are supported, got {hf.hidden_act!r}")
        if hf.model_type == "mamba":
            return cls(mixer="mamba", **common)
        if hf.model_type == "mamba2":
            return cls(mixer="mamba2", num_heads=hf.num_heads, head_dim=hf.head_dim, n_groups=hf.n_groups,
                       chunk_size=hf.chunk_size, time_step_limit=tuple(hf.time_step_limit), **common)
        raise ValueError(f"not an HF SSM config: model_type={hf.model_type!r} (expected one of {HF_SSM_TYPES})")


class SSMBackbone(nn.Module):
    def __init__(self, cfg: SSMConfig):
        super().__init__()
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([SSMBlock(cfg, i) for i in range(cfg.num_hidden_layers)])
        self.norm_f = RMSNorm(cfg.hidden_size, cfg.layer_norm_epsilon)


class SSMForCausalLM(PreTrainedModel):
    """Embeddings -> SSM blocks -> RMSNorm -> LM head (tied to the embeddings by default)."""

    config_class = SSMConfig
    config: SSMConfig
    base_model_prefix = "backbone"
    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}
    _no_split_modules = ["SSMBlock"]

    def __init__(self, config: SSMConfig):
        super().__init__(config)
        self.backbone = SSMBackbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        # Not a GenerationMixin (sampling lives in the rollout engine), but the loaders and engines read
        # eos/pad ids from a generation config as for any HF causal LM.
        if getattr(self, "generation_config", None) is None:
            self.generation_config = GenerationConfig.from_model_config(config)

    def _init_weights(self, module):
        from transformers import initialization as init

        super()._init_weights(module)
        if hasattr(module, "reset_ssm_parameters"):
            module.reset_ssm_parameters(init)

    def get_input_embeddings(self):
        return self.backbone.embeddings

    def set_input_embeddings(self, value):
        self.backbone.embeddings = value

    # ------------------------------------------------------------------ parallel form
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                logits_to_keep: int = 0, **kwargs) -> CausalLMOutputWithPast:
        """HF-style forward. ``position_ids`` is accepted and ignored (order lives in the recurrence);
        ``attention_mask`` zeroes padded positions, so left padding is exact. ``use_cache`` is
        ignored: the recurrent state lives in the rollout engine (``prefill``/``step``)."""
        h = self.backbone.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        mask = None if attention_mask is None else attention_mask.to(h.dtype)
        hidden = [h] if output_hidden_states else None
        for block in self.backbone.layers:
            h = block(h, mask)
            if hidden is not None:
                hidden.append(h)
        h = self.backbone.norm_f(h)
        if hidden is not None:
            hidden[-1] = h
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits,
                                      hidden_states=tuple(hidden) if hidden is not None else None)

    # ------------------------------------------------------------------ recurrent form
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[State]]:
        """Left-padded prompts (b, l) -> (logits of the last position (b, V) fp32, per-layer state)."""
        h = self.backbone.embeddings(input_ids)
        mask = None if attention_mask is None else attention_mask.to(h.dtype)
        states = []
        for block in self.backbone.layers:
            h, s = block(h, mask, return_state=True)
            states.append(s)
        return self.lm_head(self.backbone.norm_f(h[:, -1])).float(), states

    def step(self, tokens: torch.Tensor, states: list[State]) -> tuple[torch.Tensor, list[State]]:
        """One token per row (b,) -> (next-token logits (b, V) fp32, new per-layer state); O(1) in length."""
        h = self.backbone.embeddings(tokens)
        new = []
        for block, s in zip(self.backbone.layers, states):
            h, s = block.step(h, s)
            new.append(s)
        return self.lm_head(self.backbone.norm_f(h)).float(), new

    def init_state(self, batch: int) -> list[State]:
        p = self.lm_head.weight
        return [blk.mixer.init_state(batch, p.device, p.dtype) for blk in self.backbone.layers]


def is_recurrent_model(model: nn.Module) -> bool:
    """True for our SSM LM and for HF Mamba/Mamba-2 (anything ``recurrent_view`` accepts)."""
    if isinstance(model, SSMForCausalLM):
        return True
    return getattr(getattr(model, "config", None), "model_type", None) in HF_SSM_TYPES


def recurrent_view(model: nn.Module) -> SSMForCausalLM:
    """``model`` itself when it is ours; for an HF ``MambaForCausalLM``/``Mamba2ForCausalLM`` an
    ``SSMForCausalLM`` whose parameters *are* the HF model's (same objects, so the learner's in-place
    updates are seen without a copy). Its ``prefill``/``step`` then drive the HF weights."""
    if isinstance(model, SSMForCausalLM):
        return model
    if not is_recurrent_model(model):
        raise ValueError(f"{type(model).__name__} is not an SSM language model (expected {MODEL_TYPE} or "
                         f"HF {' / '.join(HF_SSM_TYPES)})")
    cfg = SSMConfig.from_hf(model.config)
    with torch.device("meta"):
        view = SSMForCausalLM(cfg)
    hf_params = dict(model.named_parameters(remove_duplicate=False))
    for name, _ in list(view.named_parameters(remove_duplicate=False)):
        owner_name, _, leaf = name.rpartition(".")
        owner = view.get_submodule(owner_name)
        src = hf_params.get(name)
        if src is None and name == "lm_head.weight":
            src = hf_params["backbone.embeddings.weight"]
        if src is None or src.shape != getattr(owner, leaf).shape:
            raise ValueError(f"HF SSM checkpoint has no parameter matching {name!r}")
        setattr(owner, leaf, src)
    return view.eval()


def register() -> None:
    """Make ``AutoConfig``/``AutoModelForCausalLM`` know ``model_type='reasonrl_ssm'`` and the recurrent
    engine run HF Mamba/Mamba-2 (idempotent)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        AutoConfig.register(MODEL_TYPE, SSMConfig)
    except ValueError:
        pass  # already registered
    try:
        AutoModelForCausalLM.register(SSMConfig, SSMForCausalLM)
    except ValueError:
        pass
    from reasonrl.rollout.recurrent_engine import register_recurrent_adapter

    for model_type in HF_SSM_TYPES:  # HF Mamba/Mamba-2 decode in the recurrent engine through our blocks
        register_recurrent_adapter(model_type, recurrent_view)
