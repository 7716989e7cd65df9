"""``model.path`` -> a directory to load: built-in names map to cached builds, paths pass through."""

from __future__ import annotations

from pathlib import Path


def resolve_model(path: str, log=print) -> Path:
    """``builtin:tiny`` (built and cached on first use), ``builtin:tiny-<family>`` (the tiny model SFT'd on
    another built-in family, e.g. tiny-code), other ``builtin:`` names (``models.gguf``), or a path."""
    if path == "builtin:tiny":
        from reasonrl.models.tiny import build_default_model

        return build_default_model(log=log)
    if path in ("builtin:tiny-mamba", "builtin:tiny-mamba2"):  # SSM policies (docs/ssm.md)
        from reasonrl.models.ssm.tiny import build_tiny_ssm

        return build_tiny_ssm(path.removeprefix("builtin:tiny-"), log=log)
    if path.startswith("builtin:tiny-"):
        from reasonrl.models.tiny import build_default_model, variant_spec

        return build_default_model(variant_spec(path.removeprefix("builtin:tiny-")), log=log)
    if path.startswith("builtin:"):
        from reasonrl.models.gguf import resolve_model_path

        return Path(resolve_model_path(path))
    return Path(path)
