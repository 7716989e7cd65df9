"""The default-model build gives byte-identical weights whatever the caller's threads, load or CPU code path
(issue 11 item 10), and its cache key covers the code that generates its data."""

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch

import reasonrl
from reasonrl.models.tiny import TinySpec, build_default_model

SPEC = TinySpec(demos=64, sft_steps=8, hidden=64, layers=1, heads=2, ffn=128, val_size=4, eval_every=4, sft_batch=16)
SRC = str(Path(reasonrl.__file__).resolve().parent.parent)


def _digest(out) -> str:
    return hashlib.sha256((Path(out) / "model.safetensors").read_bytes()).hexdigest()


def test_build_is_byte_identical_at_one_and_two_caller_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = build_default_model(SPEC, tmp_path / "a", log=lambda *a: None)
        assert torch.get_num_threads() == 1  # the caller's setting survives the build
        torch.set_num_threads(2)
        b = build_default_model(SPEC, tmp_path / "b", log=lambda *a: None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert _digest(a) == _digest(b)
    assert json.loads((a / "reasonrl_build.json").read_text())["weights_sha256"] == _digest(a)


def test_build_ignores_the_callers_thread_and_kernel_environment(tmp_path):
    """Callers started with different OpenMP threads and ATen CPU code paths (what differs between machines)
    still get the same bytes: the build pins its own."""
    code = ("import json, sys; from reasonrl.models.tiny import TinySpec, build_default_model; "
            "build_default_model(TinySpec(**json.loads(sys.argv[1])), sys.argv[2], log=lambda *a: None)")
    outs = []
    for name, extra in (("x", {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default"}),
                        ("y", {"OMP_NUM_THREADS": "2"})):
        env = {**os.environ, "PYTHONPATH": SRC, **extra}
        env.pop("ATEN_CPU_CAPABILITY", None) if "ATEN_CPU_CAPABILITY" not in extra else None
        subprocess.run([sys.executable, "-c", code, json.dumps(asdict(SPEC)), str(tmp_path / name)], env=env,
                       check=True, capture_output=True)
        outs.append(_digest(tmp_path / name))
    assert outs[0] == outs[1]


def test_cache_key_covers_generator_and_build_code(monkeypatch):
    """Editing a task generator (or the build's env) gives a new key, so a stale cached model is never reused."""
    import reasonrl.models.tiny as tiny

    key = SPEC.key()
    orig = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: orig(self) + (b"\n# edited" if self.name == "builtin.py" else b""))
    assert SPEC.key() != key
    monkeypatch.undo()
    assert SPEC.key() == key
    monkeypatch.setitem(tiny.BUILD_ENV, "OMP_NUM_THREADS", "2")
    assert SPEC.key() != key
