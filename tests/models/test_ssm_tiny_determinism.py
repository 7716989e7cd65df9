"""builtin:tiny-mamba / -mamba2 are built like builtin:tiny: in a child process with one thread and
deterministic algorithms (byte-identical weights whatever the caller's threads, sha256 recorded), cached
under a key that covers the SSM code as well as the spec."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from reasonrl.models.ssm.tiny import build_tiny_ssm, ssm_build_key
from reasonrl.models.tiny import TinySpec

SPEC = TinySpec(demos=24, val_size=3, sft_steps=3, sft_batch=4, eval_every=3, max_new_tokens=4)


def _digest(out) -> str:
    return hashlib.sha256((Path(out) / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow  # two child-process builds per kind: ~15 s each on the loaded shared CPU
@pytest.mark.parametrize("kind", ["mamba", "mamba2"])
def test_ssm_build_is_byte_identical_at_one_and_two_caller_threads(tmp_path, kind):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = build_tiny_ssm(kind, SPEC, tmp_path / "a", log=lambda *a: None)
        torch.set_num_threads(2)
        b = build_tiny_ssm(kind, SPEC, tmp_path / "b", log=lambda *a: None)
        assert torch.get_num_threads() == 2  # the caller's setting survives the build
    finally:
        torch.set_num_threads(before)
    assert _digest(a) == _digest(b)
    meta = json.loads((a / "reasonrl_build.json").read_text())
    assert meta["weights_sha256"] == _digest(a)
    # built in another process, with one thread and deterministic algorithms on
    assert meta["deterministic"] is True and meta["threads"] == 1
    assert not torch.are_deterministic_algorithms_enabled()
    assert meta["key"] == ssm_build_key(kind, SPEC)


def test_ssm_cache_key_covers_the_ssm_code_spec_and_kind(monkeypatch):
    key = ssm_build_key("mamba2", SPEC)
    assert ssm_build_key("mamba", SPEC) != key
    assert ssm_build_key("mamba2", TinySpec(**{**SPEC.__dict__, "sft_steps": 4})) != key
    orig = Path.read_bytes
    for name in ("ops.py", "recurrent_engine.py", "builtin.py"):
        monkeypatch.setattr(Path, "read_bytes", lambda self, n=name: orig(self) + (b"#" if self.name == n else b""))
        assert ssm_build_key("mamba2", SPEC) != key, name
        monkeypatch.undo()
    assert ssm_build_key("mamba2", SPEC) == key
