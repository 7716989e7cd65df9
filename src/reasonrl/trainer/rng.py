"""Capture and restore every global random number generator a training step draws from.

Exact resume needs the RNG state saved in the same committed unit as the weights: forgetting one
generator silently changes every step after a resume (reliability spec §3.2/§3.3). The state is
made of plain Python objects (ints, bytes, tuples, lists), never numpy arrays or tensors, so that a
checkpoint loads with ``torch.load(weights_only=True)`` and survives numpy/torch version changes
(numpy 2 pickles arrays under ``numpy._core``, which numpy 1 cannot import).

Only the *global* generators are covered. A private ``torch.Generator``, ``numpy.random.Generator``
or ``random.Random`` (a sampler's, a dataloader's) is its owner's to save.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

_FORMAT = 1


def _tensor_to_bytes(t: torch.Tensor) -> bytes:
    return bytes(t.cpu().contiguous().numpy().tobytes())


def _bytes_to_tensor(b: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(b), dtype=torch.uint8).clone()


def seed_all(seed: int) -> None:
    """Seed every global generator :func:`capture_rng` saves (python ``random``, numpy, torch), so
    that the saved state is a function of the run, not of the process: Python and numpy seed
    themselves from OS entropy at start-up otherwise, and two launches of one run would save
    different states even where nothing draws from them."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """Return the state of python ``random``, numpy's global RNG, torch CPU and every CUDA device.

    ``cuda`` is ``None`` when CUDA is unavailable; otherwise one entry per visible device, which
    initialises CUDA on each (cheap once training is running there anyway).
    """
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    cuda = None
    if torch.cuda.is_available():
        cuda = [_tensor_to_bytes(t) for t in torch.cuda.get_rng_state_all()]
    return {
        "format": _FORMAT,
        "python": random.getstate(),
        "numpy": (str(name), np.asarray(keys, dtype="<u4").tobytes(), int(pos), int(has_gauss), float(cached)),
        "torch": _tensor_to_bytes(torch.get_rng_state()),
        "cuda": cuda,
    }


def restore_rng(state: dict[str, Any], *, torch_cpu: bool = True, strict: bool = True) -> None:
    """Put the generators back exactly as :func:`capture_rng` found them.

    ``torch_cpu=False`` skips the torch CPU generator; it exists only as the negative control of
    the kill test (a resume that forgets one RNG must be caught). ``strict`` refuses a CUDA device
    count different from the one saved, because per-device streams cannot be mapped onto another
    layout and the run would diverge silently; pass ``strict=False`` to accept that knowingly
    (e.g. inspecting a GPU checkpoint on a CPU machine).
    """
    if state.get("format") != _FORMAT:
        raise ValueError(f"unknown RNG state format {state.get('format')!r} (expected {_FORMAT})")
    py = state["python"]
    # pickling round trips may turn the inner tuple into a list; random.setstate needs tuples
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.frombuffer(keys, dtype="<u4").astype(np.uint32), pos, has_gauss, cached))
    if torch_cpu:
        torch.set_rng_state(_bytes_to_tensor(state["torch"]))
    saved = state.get("cuda") or []
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(saved) != have:
        if strict:
            raise ValueError(
                f"RNG state was saved with {len(saved)} CUDA device(s) but {have} are visible now; "
                "an exact resume needs the same device layout. Resume on the same layout, or call "
                "restore_rng(state, strict=False) to accept a non-reproducible continuation."
            )
        return
    if saved:
        torch.cuda.set_rng_state_all([_bytes_to_tensor(b) for b in saved])
