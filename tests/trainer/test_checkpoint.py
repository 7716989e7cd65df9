"""Checkpoint protocol, RNG capture, and the kill -9 resume test (reliability spec §3.3)."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from reasonrl.trainer.checkpoint import (
    MARKER,
    STATE_FILE,
    ResumeError,
    cleanup_orphans,
    find_resume_point,
    latest_committed,
    load_trainer_state,
    save_checkpoint,
)
from reasonrl.trainer.rng import capture_rng, restore_rng

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from _chaos import chaos_run  # noqa: E402


def _blob(data: bytes):
    def write(p: Path) -> None:
        p.write_bytes(data)

    return write


def _save(root: Path, step: int, keep_last: int | None = 3) -> Path:
    return save_checkpoint(root, step, {"blob.bin": _blob(b"x" * step)}, {"step": step}, keep_last)


# ----------------------------------------------------------------------------- unit tests


def test_round_trip_with_directory_writer(tmp_path):
    def write_model(d: Path) -> None:  # shaped like save_pretrained: creates a directory
        d.mkdir()
        torch.save({"w": torch.arange(4.0)}, d / "weights.pt")
        (d / "config.json").write_text("{}")

    state = {"step": 7, "rng": capture_rng(), "cursor": {"epoch": 1, "pos": 3}, "kl": {"coef": 0.2}}
    out = save_checkpoint(tmp_path, 7, {"model": write_model, "pad.bin": _blob(b"\1" * 1000)}, state, keep_last=2)
    assert out == tmp_path / "step_7"
    assert latest_committed(tmp_path) == out
    marker = json.loads((out / MARKER).read_text())
    assert marker["step"] == 7 and set(marker["files"]) == {"model/weights.pt", "model/config.json", "pad.bin", STATE_FILE}
    loaded = load_trainer_state(out)
    assert loaded["cursor"] == state["cursor"] and loaded["kl"] == state["kl"]
    assert torch.equal(torch.load(out / "model" / "weights.pt")["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["step_7"]  # no temp dirs, no marker temp
    assert not (out / f".{MARKER}.tmp").exists()


def test_hf_model_and_tokenizer_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models

    from reasonrl.trainer.checkpoint import hf_writer

    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=4, n_positions=8,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    vocab = {"<e>": 0, "a": 1, "b": 2, "[UNK]": 3}
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")), unk_token="[UNK]")
    out = save_checkpoint(tmp_path, 1, {"model": hf_writer(model, tok)}, {"step": 1}, keep_last=1)
    assert (out / "model" / "model.safetensors").is_file()
    assert latest_committed(tmp_path) == out
    again = transformers.GPT2LMHeadModel.from_pretrained(out / "model")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert transformers.PreTrainedTokenizerFast.from_pretrained(out / "model").get_vocab() == vocab


def test_rotation_keeps_exactly_keep_last_newest(tmp_path):
    for step in range(1, 8):
        _save(tmp_path, step, keep_last=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_5", "step_6", "step_7"]
    _save(tmp_path, 8, keep_last=1)
    assert [p.name for p in tmp_path.iterdir()] == ["step_8"]


def test_resave_after_older_resume_drops_abandoned_timeline(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step)
    _save(tmp_path, 2)  # resumed from step_1 and re-saved step 2: step_3 is from another history
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_1", "step_2"]
    assert latest_committed(tmp_path) == tmp_path / "step_2"


def test_torn_checkpoints_are_ignored(tmp_path):
    _save(tmp_path, 1, keep_last=None)
    good = _save(tmp_path, 2, keep_last=None)
    torn = _save(tmp_path, 3, keep_last=None)
    bad = _save(tmp_path, 4, keep_last=None)
    # crash after the rename, before the marker
    (torn / MARKER).unlink()
    # marker present but a file changed after the commit (same size: only the hash catches it)
    (bad / "blob.bin").write_bytes(b"y" * 4)
    # crash mid-write: an orphan temp dir with a higher step
    (tmp_path / ".tmp_step_5_999").mkdir()
    (tmp_path / ".tmp_step_5_999" / "blob.bin").write_bytes(b"partial")
    assert latest_committed(tmp_path) == good
    assert latest_committed(tmp_path, verify=False) == bad  # documented: size check only
    (bad / "blob.bin").write_bytes(b"y")
    assert latest_committed(tmp_path, verify=False) == good
    assert find_resume_point(tmp_path, required=True) == good

    removed = cleanup_orphans(tmp_path)
    assert sorted(p.name for p in removed) == [".tmp_step_5_999", "step_3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_1", "step_2", "step_4"]


def test_stale_uncommitted_step_dir_is_replaced(tmp_path):
    stale = tmp_path / "step_5"
    stale.mkdir()
    (stale / "junk").write_text("from a crash")
    out = _save(tmp_path, 5)
    assert not (out / "junk").exists() and latest_committed(tmp_path) == out


def test_writer_failure_leaves_nothing(tmp_path):
    def boom(p: Path) -> None:
        p.write_bytes(b"half")
        raise OSError("disk full")

    _save(tmp_path, 1)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, {"a": boom}, {"step": 2}, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["step_1"]
    with pytest.raises(ValueError, match="created nothing"):
        save_checkpoint(tmp_path, 2, {"a": lambda p: None}, None, 3)
    with pytest.raises(ValueError, match="invalid checkpoint entry"):
        save_checkpoint(tmp_path, 2, {"../escape": _blob(b"")}, None, 3)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to simulate a full disk")
@pytest.mark.parametrize("how", ["path", "file"])
def test_full_disk_is_reported_as_such(tmp_path, how):
    """torch.save to a full disk says only "unexpected pos N vs M"; a file object gets ENOSPC."""
    from reasonrl.trainer.checkpoint import CheckpointWriteError

    def to_full_disk(p: Path) -> None:
        p.write_bytes(b"")
        if how == "path":
            torch.save({"w": torch.zeros(4096)}, "/dev/full")
        else:
            with open("/dev/full", "wb") as f:
                torch.save({"w": torch.zeros(4096)}, f)

    _save(tmp_path, 1)
    with pytest.raises(CheckpointWriteError) as e:
        save_checkpoint(tmp_path, 2, {"model.pt": to_full_disk}, {"step": 2}, 3)
    msg = str(e.value)
    assert "No space left on device" in msg and "step_2" in msg and "--resume" in msg
    assert [p.name for p in tmp_path.iterdir()] == ["step_1"]  # the partial save is gone


def test_required_resume_with_nothing_raises_naming_what_was_found(tmp_path):
    with pytest.raises(ResumeError, match="does not exist"):
        find_resume_point(tmp_path / "nope", required=True)
    (tmp_path / "step_5").mkdir()
    (tmp_path / "step_10").mkdir()
    (tmp_path / ".tmp_step_15_1").mkdir()
    with pytest.raises(ResumeError) as e:
        find_resume_point(tmp_path, required=True)
    msg = str(e.value)
    assert str(tmp_path) in msg and "0 committed" in msg and "2 uncommitted" in msg and "1 temporary" in msg
    assert "Fix:" in msg
    # auto-resume: debris from a first save that never committed is not progress
    assert find_resume_point(tmp_path, required=False) is None


def test_auto_resume_refuses_when_only_corrupt_commits_exist(tmp_path):
    bad = _save(tmp_path, 3)
    (bad / "blob.bin").write_bytes(b"zzz")
    with pytest.raises(ResumeError, match="sha256 mismatch for blob.bin"):
        find_resume_point(tmp_path, required=False)


def test_rng_capture_restore_reproduces_draws():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.standard_normal()  # leave a cached gaussian in numpy's legacy state
    state = capture_rng()

    def draws():
        return (random.random(), np.random.standard_normal(5).tolist(), torch.randn(5).tolist(),
                torch.nn.functional.dropout(torch.ones(64), 0.5).tolist())

    first = draws()
    # the state is plain data: it survives pickle and torch's restricted loader
    state = pickle.loads(pickle.dumps(state))
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    restore_rng(state)
    assert draws() == first
    restore_rng(state, torch_cpu=False)
    assert draws()[2] != first[2]


def test_rng_refuses_cuda_layout_change():
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    state = capture_rng()
    state["cuda"] = [state["torch"]] * (n + 1)  # pretend it was saved on one more GPU
    with pytest.raises(ValueError, match=f"{n + 1} CUDA device"):
        restore_rng(state)
    restore_rng(state, strict=False)


def test_rng_cuda_states_round_trip_as_bytes(monkeypatch):
    """CUDA plumbing without a GPU: per-device states go out as bytes and come back as tensors."""
    dev = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    got = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: dev)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", got.extend)
    state = capture_rng()
    assert all(isinstance(b, bytes) for b in state["cuda"])
    restore_rng(pickle.loads(pickle.dumps(state)))
    assert len(got) == 2 and all(torch.equal(a, b) for a, b in zip(got, dev))


# ----------------------------------------------------------------------------- kill -9 test

TOY = HERE / "_toy_trainer.py"
STEPS = 60


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parents[1] / "src"), env.get("PYTHONPATH")]))
    return env


def _cmd(out: Path, *extra: str) -> list[str]:
    # sys.executable is the venv interpreter (.venv/bin/python) when run via .venv/bin/pytest
    return [sys.executable, str(TOY), "--out", str(out), "--steps", str(STEPS), "--save-every", "5",
            "--keep-last", "2", "--pad-mb", "8", *extra]


def _read(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def compare(reference: list[dict], run: list[dict]) -> list[str]:
    """Every problem that separates ``run`` from the uninterrupted ``reference``; empty if none."""
    ref = {r["step"]: r for r in reference if "step" in r and "final" not in r}
    assert sorted(ref) == list(range(1, STEPS + 1)), "reference run itself is incomplete"
    problems = []
    seen = set()
    for r in run:
        if "final" in r or "event" in r:
            continue
        seen.add(r["step"])
        want = ref[r["step"]]
        for key in ("loss", "lr", "batch"):
            if r[key] != want[key]:
                problems.append(f"step {r['step']} {key}: {r[key]} != {want[key]}")
    problems += [f"step {s} never logged" for s in sorted(set(ref) - seen)]
    finals = [r for r in run if r.get("final")]
    ref_final = next(r for r in reference if r.get("final"))
    if not finals:
        problems.append("no final record")
    else:
        for key in ("step", "param_hash", "opt_hash", "opt_steps", "algo"):
            if finals[-1][key] != ref_final[key]:
                problems.append(f"final {key}: {finals[-1][key]} != {ref_final[key]}")
        if finals[-1]["opt_steps"] != [STEPS]:
            problems.append(f"optimizer took {finals[-1]['opt_steps']} steps, expected {STEPS}")
    return problems


SLOW = ("--step-sleep", "0.01")  # stretch the run to about 2 s so random kills land throughout


def _chaos(out: Path, seed: int, min_s: float, max_s: float, max_attempts: int, *extra: str, **kw) -> int:
    return chaos_run(_cmd(out, *SLOW, *extra), _cmd(out, *SLOW, *extra, "--resume", "auto"), seed=seed,
                     min_s=min_s, max_s=max_s, max_attempts=max_attempts, ready_marker="READY", env=_env(),
                     log_dir=out / "logs", **kw)


def _dirs(base: Path, *names: str) -> list[Path]:
    for n in names:
        (base / n).mkdir()
    return [base / n for n in names]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    """Reference, chaos and negative-control runs, concurrently to save wall time (each is
    single-threaded and deterministic, so contention changes only when the kills land)."""
    ref_out, run_out, neg_out = _dirs(tmp_path_factory.mktemp("chaos"), "ref", "run", "neg")
    ref = subprocess.Popen(_cmd(ref_out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    neg: dict[str, object] = {}

    def negative() -> None:
        # one kill 0.5-0.9 s after start-up: past the first commit (step 5), well before the end
        try:
            neg["attempts"] = _chaos(neg_out, 7, 0.5, 0.9, 2, "--forget-rng", max_kills=1)
        except BaseException as e:  # re-raised in the main thread
            neg["error"] = e

    t = threading.Thread(target=negative)
    t.start()
    try:
        attempts = _chaos(run_out, 3, 0.2, 1.5, 15)  # seed 3 draws short delays first: ~3 kills
    finally:
        t.join()
        _, err = ref.communicate(timeout=120)
    assert ref.returncode == 0, err.decode()
    if "error" in neg:
        raise neg["error"]
    return {"ref": _read(ref_out), "run": _read(run_out), "neg": _read(neg_out), "attempts": attempts,
            "run_out": run_out}


def _check_chaos_run(ref: list[dict], out: Path, attempts: int) -> str:
    run = _read(out)
    starts = [r for r in run if r.get("event") == "start"]
    assert attempts >= 2 and len(starts) == attempts, "no kill happened: the test proved nothing"
    assert compare(ref, run) == []
    finals = [r["step"] for r in run if r.get("final")]
    assert finals and set(finals) == {STEPS}  # >1 only if a kill fell between the last record and exit
    ckpt = out / "ckpt"
    leftovers = sorted(p.name for p in ckpt.iterdir())
    assert leftovers == ["step_55", "step_60"], leftovers  # no temp, trash or uncommitted dirs
    assert all((ckpt / name / MARKER).is_file() for name in leftovers)
    replayed = sum(1 for r in run if "loss" in r) - STEPS
    return (f"{attempts - 1} kills, {replayed} steps replayed, resumed from "
            f"{[s['resumed_from'] for s in starts[1:]]}, debris removed {[s['removed'] for s in starts if s['removed']]}")


def test_kill9_resume_is_bit_identical(chaos):
    print("chaos:", _check_chaos_run(chaos["ref"], chaos["run_out"], chaos["attempts"]))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill9_many_kills(tmp_path, seed):
    """More kills per run (0.1-0.6 s apart) than the default suite can afford."""
    ref_out, run_out = _dirs(tmp_path, "ref", "run")
    subprocess.run(_cmd(ref_out), env=_env(), check=True, stdout=subprocess.DEVNULL)
    attempts = _chaos(run_out, seed, 0.1, 0.6, 80)
    print("chaos:", _check_chaos_run(_read(ref_out), run_out, attempts))


def test_negative_control_forgetting_torch_rng_is_caught(chaos):
    neg = chaos["neg"]
    resumed = [r["resumed_from"] for r in neg if r.get("event") == "start" and r["resumed_from"]]
    assert resumed, "the control never resumed from a checkpoint, so it could not fail"
    problems = compare(chaos["ref"], neg)
    loss_steps = sorted({int(p.split()[1]) for p in problems if " loss:" in p})
    assert loss_steps, "forgetting the torch RNG went unnoticed: the comparison has no teeth"
    assert loss_steps[0] == resumed[0] + 1  # diverges at the first resumed step
