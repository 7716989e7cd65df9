"""Load and save the policy as a plain Hugging Face causal LM.

Every model, the built-in ones included, goes through ``AutoModelForCausalLM.from_pretrained`` on a
local directory, so a user's own checkpoint (Qwen, Llama, ...) takes exactly the same path as ours
and nothing is special-cased. Loading never touches the network (``local_files_only=True``): a
typo in ``model.path`` must fail at once with a message about the path, not hang on a hub lookup.

The cheap checks (path, config, weights, tokenizer files) all run before the weights are read, so a
broken directory fails in milliseconds with a message naming what is missing.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["DTYPES", "ModelLoadError", "load_policy", "save_policy"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# Any one of these means the directory holds weights that from_pretrained can read.
_WEIGHT_PATTERNS = ("*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin")
# Files from which AutoTokenizer can build a tokenizer (fast json, sentencepiece, BPE, WordPiece).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")

_BUILTIN_HINT = (
    "model.path must be a local Hugging Face model directory (config.json, weights, tokenizer "
    "files); hub ids are never downloaded. Built-in models: model.path=builtin:tiny (the "
    "project's own, built by `reasonrl models build-default`) or builtin:smollm2 "
    "(SmolLM2-135M-Instruct)."
)


class ModelLoadError(ValueError):
    """A model directory that cannot be loaded; the message names the path and the fix."""


def load_policy(
    path: str | os.PathLike,
    *,
    dtype: str = "float32",
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a local HF causal LM and its tokenizer, ready for batched generation and training.

    ``path`` is a directory, a ``.gguf`` file (the same as passing its directory and
    ``gguf_file``) or a built-in name such as ``builtin:smollm2`` (see ``resolve_model_path``).
    With ``gguf_file`` the weights are dequantised into an ordinary dense, trainable model; see
    ``reasonrl.models.gguf`` for converting once to a cached safetensors directory. The model comes
    back in eval mode (the HF default); a trainer calls ``model.train()`` itself.

    The tokenizer always pads on the left (generation appends on the right, so prompts must end
    flush against the first new token) and always has a pad token: when the checkpoint defines none
    the EOS token is reused. Adding a new token instead would resize the embeddings and change the
    model. The price: find padding through the attention mask, never by comparing ids with
    ``pad_token_id``, or a generated EOS would be mistaken for padding.
    """
    from transformers import AutoModelForCausalLM

    import reasonrl.models.ssm  # noqa: F401  registers model_type reasonrl_ssm with the Auto classes (docs/ssm.md)

    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    if str(path).startswith("builtin:"):
        from reasonrl.models.gguf import resolve_model_path  # imports this module: import late

        path = resolve_model_path(str(path))
    path = Path(path).expanduser()
    if gguf_file is None and path.is_file() and path.suffix == ".gguf":
        path, gguf_file = path.parent, path.name

    if gguf_file is None and (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        return _load_adapter_dir(path, dtype=dtype, trust_remote_code=trust_remote_code)
    if gguf_file is not None:
        _check_gguf(path, gguf_file)
    else:
        _check_hf_dir(path, trust_remote_code)

    common = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    if gguf_file is not None:
        common["gguf_file"] = gguf_file
    tokenizer = _load_tokenizer(path, common)

    model_kwargs = dict(common, dtype=DTYPES[dtype])
    if gguf_file is not None:
        model_kwargs.update(_dense_gguf_kwargs())
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **model_kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelLoadError(f"could not load model weights from {path}: {err}") from err
    if gguf_file is not None:
        _drop_quantizer(model)

    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _load_adapter_dir(path: Path, **kw) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A PEFT LoRA adapter directory (``adapter_config.json`` + weights, no ``config.json``): its base model
    (``base_model_name_or_path``: a local directory or a ``builtin:`` name) with the adapter merged in, so the
    result is a plain HF model that trains, evaluates or gets new adapters (``model.lora``) like any other."""
    import json

    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{path} is a PEFT adapter without base_model_name_or_path in adapter_config.json: "
                             f"set it to the base model's local directory")
    if not str(base).startswith("builtin:") and not Path(base).expanduser().exists():
        raise ModelLoadError(f"{path} is a PEFT adapter for base model {base!r}, which is not a local directory "
                             f"(nothing is downloaded): set base_model_name_or_path in its adapter_config.json to the "
                             f"base model's local path")
    from reasonrl.models.lora import require_peft

    peft = require_peft()
    model, tokenizer = load_policy(base, **kw)
    try:
        model = peft.PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelLoadError(f"could not apply the PEFT adapter {path} to its base {base}: {err}") from err
    if (path / "tokenizer_config.json").is_file():
        tokenizer = _load_tokenizer(path, {"local_files_only": True, "trust_remote_code": kw["trust_remote_code"]})
    return model, tokenizer


def save_policy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | os.PathLike
) -> Path:
    """Write model (safetensors) and tokenizer to ``out_dir`` in plain HF format; returns it.

    Written into a sibling temporary directory and renamed into place, so a crash mid-write never
    leaves a half-written ``out_dir`` that ``load_policy`` would then half-read. An existing
    ``out_dir`` is replaced (moved aside first, removed after the new one is in place).
    """
    out_dir = Path(out_dir).expanduser()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{tag}"
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{tag}"
            out_dir.rename(old)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def _check_hf_dir(path: Path, trust_remote_code: bool) -> None:
    """Fail fast, before any weights are read, on the common ways a directory is not a model."""
    from transformers import AutoConfig

    if not path.exists():
        raise ModelLoadError(f"model path {str(path)!r} does not exist. {_BUILTIN_HINT}")
    if not path.is_dir():
        raise ModelLoadError(
            f"model path {str(path)!r} is a file, not a directory. {_BUILTIN_HINT}"
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path} has no config.json, so it is not a Hugging Face model directory "
            f"(found: {_listing(path)}). {_BUILTIN_HINT}"
        )
    try:
        config = AutoConfig.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"could not read {path / 'config.json'}: {err}") from err
    if not _is_causal_lm(config):
        raise ModelLoadError(
            f"{path / 'config.json'} describes model_type={config.model_type!r} "
            f"({type(config).__name__}), which is not a causal language model: "
            "AutoModelForCausalLM cannot load it. The policy must be a decoder-only LM such as "
            "llama, qwen2, qwen3, mistral, gemma or gpt2."
        )
    if not any(any(path.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
        raise ModelLoadError(
            f"{path} has a config.json but no weights: expected model.safetensors (or sharded "
            f"model-*.safetensors with model.safetensors.index.json) or pytorch_model.bin "
            f"(found: {_listing(path)})."
        )
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"{path} has no tokenizer: expected one of {', '.join(_TOKENIZER_FILES)} "
            f"(found: {_listing(path)}). Save the tokenizer next to the model with "
            "tokenizer.save_pretrained(path)."
        )


def _check_gguf(path: Path, gguf_file: str) -> None:
    """GGUF loading needs the optional `gguf` and `accelerate` packages; say so before loading."""
    import importlib.util

    if not (path / gguf_file).is_file():
        raise ModelLoadError(f"GGUF file {str(path / gguf_file)!r} does not exist. {_BUILTIN_HINT}")
    missing = [pkg for pkg in ("gguf", "accelerate") if importlib.util.find_spec(pkg) is None]
    if missing:
        raise ModelLoadError(
            f"loading {path / gguf_file} needs the package(s) {', '.join(missing)}: "
            f"pip install {' '.join(missing)}"
        )


def _is_causal_lm(config) -> bool:
    """True when AutoModelForCausalLM has a class for this config (or remote code declares one)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return True
    return "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})


def _load_tokenizer(path: Path, kwargs: dict) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"could not load the tokenizer from {path}: {err}") from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"the tokenizer in {path} has neither a pad token nor an EOS token; set one "
                "(tokenizer.pad_token = ...) and save it again."
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _dense_gguf_kwargs() -> dict:
    """Ask transformers for dequantised dense weights: a policy must be trainable and savable.

    Newer transformers may keep GGUF blocks packed (GgufLinear) when a matmul kernel is installed;
    those layers cannot be trained or saved as safetensors. Older versions always dequantise and
    have no GgufConfig, in which case no option is needed.
    """
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    try:
        return {"quantization_config": GgufConfig(dequantize=True)}
    except TypeError:
        return {}


def _drop_quantizer(model) -> None:
    """Forget the GGUF origin so the (already dense) model saves as an ordinary checkpoint."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        try:
            quantizer.remove_quantization_config(model)
            return
        except AttributeError:
            pass  # a read-only attribute in this transformers version: fall through
    for owner, attr in ((model, "hf_quantizer"), (model.config, "quantization_config")):
        if getattr(owner, attr, None) is not None:
            try:
                delattr(owner, attr)
            except AttributeError:
                setattr(owner, attr, None)


def _listing(path: Path, limit: int = 8) -> str:
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return "nothing, the directory is empty"
    more = f", ... {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
