"""``builtin:tiny-mamba`` and ``builtin:tiny-mamba2``: the built-in tiny model's recipe with an SSM body.

Same tokenizer, demonstration pool, validation slice, SFT schedule and best-checkpoint rule as
``builtin:tiny`` (``models.tiny``'s functions, reused rather than copied), but the Llama is replaced
by an ``SSMForCausalLM`` matched in parameter count (the transformer: 0.87M; Mamba 7×128: 0.83M;
Mamba-2 8×128: 0.89M), and validation decodes with the recurrent engine.

Built with ``builtin:tiny``'s guarantees: a child process with ``BUILD_ENV`` (one thread, MKL/ATen code
paths pinned) and ``torch.use_deterministic_algorithms``, step-bounded, so one spec gives the same bytes
whatever the caller's threads; cached under ``<cache>/models/tiny-<kind>-<key>`` where the key hashes the
spec (whose key covers the task generators and the shared build code), the architecture and the source of
the SSM package and the recurrent engine (validation decoding picks the kept checkpoint); the weights'
sha256 is recorded in ``reasonrl_build.json``.

Cost on CPU: an SFT step costs several times the transformer's (docs/ssm.md has measurements).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from reasonrl.models.ssm.model import SSMConfig, SSMForCausalLM
from reasonrl.models.tiny import TinySpec, _tokenizer_corpus, cache_root, run_build_process, sft_warm_start

# Architecture per kind (hidden 128 as the transformer; layer counts chosen to match its parameter count).
ARCHS: dict[str, dict] = {
    "mamba": dict(mixer="mamba", num_hidden_layers=7, state_size=16, expand=2),
    "mamba2": dict(mixer="mamba2", num_hidden_layers=8, state_size=32, expand=2, head_dim=32, chunk_size=32),
}
BUILTINS = {f"builtin:tiny-{k}": k for k in ARCHS}

# Source (besides models/tiny.py's, already in ``TinySpec.key``) that decides the built weights.
_SSM_SOURCES = ("models/ssm/ops.py", "models/ssm/layers.py", "models/ssm/model.py", "models/ssm/kernels.py",
                "models/ssm/tiny.py", "rollout/recurrent_engine.py")


def _check_kind(kind: str) -> None:
    if kind not in ARCHS:
        raise ValueError(f"no tiny SSM {kind!r}; valid: {', '.join(BUILTINS)}")


def ssm_build_key(kind: str, spec: TinySpec) -> str:
    """sha1 over the spec's key (generators, shared build code, ``BUILD_ENV``), the architecture and the SSM
    build's own source: editing any of them names a new cache directory."""
    _check_kind(kind)
    root = Path(__file__).resolve().parent.parent.parent
    h = hashlib.sha1(json.dumps({"spec": spec.key(), "arch": ARCHS[kind]}, sort_keys=True).encode())
    for rel in _SSM_SOURCES:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:10]


def ssm_model_dir(kind: str, spec: TinySpec | None = None) -> Path:
    return cache_root() / "models" / f"tiny-{kind}-{ssm_build_key(kind, spec or TinySpec())}"


def build_ssm(kind: str, spec: TinySpec, tokenizer) -> SSMForCausalLM:
    _check_kind(kind)
    torch.manual_seed(spec.seed)
    cfg = SSMConfig(vocab_size=len(tokenizer), hidden_size=spec.hidden, tie_word_embeddings=True,
                    layer_norm_epsilon=1e-6, pad_token_id=tokenizer.pad_token_id,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **ARCHS[kind])
    return SSMForCausalLM(cfg)


def build_tiny_ssm(kind: str, spec: TinySpec | None = None, out_dir: Path | None = None, *, force: bool = False,
                   log=print) -> Path:
    """Build (or reuse) ``builtin:tiny-<kind>``; returns its HF directory (``load_policy`` loads it).

    The build runs in a child process with ``BUILD_ENV`` (``models.tiny.run_build_process``), so the
    caller's thread settings are untouched and two builds of one spec are byte-identical."""
    _check_kind(kind)
    spec = spec or TinySpec()
    out = Path(out_dir) if out_dir else ssm_model_dir(kind, spec)
    if (out / "reasonrl_build.json").exists() and not force:
        return out
    return run_build_process("reasonrl.models.ssm.tiny", [kind, json.dumps(asdict(spec)), str(out)], out, log)


def _build(kind: str, spec: TinySpec, out: Path, log=print) -> Path:
    """The build itself, in the process ``build_tiny_ssm`` starts with ``BUILD_ENV``."""
    from reasonrl.models.tokenizer import train_tokenizer
    from reasonrl.rollout.recurrent_engine import RecurrentEngine

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    tok = train_tokenizer(_tokenizer_corpus(spec), spec.vocab_size)
    model = build_ssm(kind, spec, tok)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"building builtin:tiny-{kind} ({n_params / 1e6:.2f}M params, SFT {spec.sft_steps} steps on "
        f"{spec.demos} demonstrations); cached at {out}")
    res, best = sft_warm_start(model, tok, spec, RecurrentEngine(model, tok), log)
    if spec.keep == "last":
        best["step"], best["score"] = best["last"]
    else:
        model.load_state_dict(best["state"])
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    weights = hashlib.sha256((tmp / "model.safetensors").read_bytes()).hexdigest()
    meta = {"kind": kind, "arch": ARCHS[kind], "spec": asdict(spec), "key": ssm_build_key(kind, spec),
            "weights_sha256": weights, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "deterministic": torch.are_deterministic_algorithms_enabled(), "threads": torch.get_num_threads(),
            "params": n_params, "sft_steps": res.steps, "sft_seconds": res.seconds, "best_step": best["step"],
            "val_pass@1": best["score"], "build_seconds": time.perf_counter() - t0,
            "evals": [(s, v) for s, v, _ in res.evals]}
    (tmp / "reasonrl_build.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    log(f"built {out} in {meta['build_seconds']:.0f}s: best val pass@1 {best['score']:.3f} at SFT step {best['step']}")
    return out


if __name__ == "__main__":  # the isolated build process (see build_tiny_ssm)
    _build(sys.argv[1], TinySpec(**json.loads(sys.argv[2])), Path(sys.argv[3]), log=lambda m: print(m, flush=True))
