"""Kill -9 the real trainer at random moments (mid-step and mid-save), resume, and require every
optimizer step's loss and grad norm, replays included, to be bit-identical to an uninterrupted run,
and the run directory to equal the uninterrupted run's file by file apart from timings
(``_rundir_compare``). The negative control (an unrestored RNG) must be caught by the same comparison."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from _chaos import chaos_run
from _rundir_compare import run_dir_differences
from trainer_fixtures import tiny_overrides

STEPS = 8
HOOKED_CLI = Path(__file__).parent / "_hooked_cli.py"


def _cmd(model_dir: Path, out: Path, trace: Path, steps: int = STEPS, resume: bool = False, **hooks) -> list[str]:
    """The real CLI with the test hooks (reasonrl._testing) switched on explicitly in the child."""
    over = tiny_overrides(model_dir, out, "r") + [
        f"trainer.steps={steps}", "trainer.save_every=1", "trainer.keep_last=2",
        "eval.sampled=false", "reward.functions=[trainer_fixtures:digit_reward]", "rollout.n=4"]
    return [sys.executable, str(HOOKED_CLI), json.dumps({"step_trace": str(trace), **hooks}), "train", *over] + (
        ["--resume"] if resume else [])


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_WAIT_POLICY="PASSIVE",
                PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))


def _trace(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _mismatches(ref: list[dict], got: list[dict]) -> list[int]:
    by_step = {r["opt_step"]: r for r in ref}
    return [g["opt_step"] for g in got
            if g["loss"] != by_step[g["opt_step"]]["loss"] or g["grad_norm"] != by_step[g["opt_step"]]["grad_norm"]]


def test_sigkill_resume_is_bit_identical_and_forgotten_rng_is_caught(tiny_model_dir, tmp_path):
    ref_trace = tmp_path / "ref.jsonl"
    out = tmp_path / "chaos"
    slow = {"save_delay_s": 0.15}
    # the reference runs in the chaos run's place and is moved aside: config.yaml names the place
    subprocess.run(_cmd(tiny_model_dir, out, ref_trace, **slow), env=_env(), check=True, capture_output=True)
    shutil.move(out / "r", tmp_path / "ref")
    ref = _trace(ref_trace)
    assert [r["opt_step"] for r in ref] == list(range(1, STEPS + 1))
    assert len({r["loss"] for r in ref}) > 1

    # chaos: random SIGKILLs, the save window widened so some land mid-save
    chaos_trace = tmp_path / "chaos.jsonl"
    attempts = chaos_run(_cmd(tiny_model_dir, out, chaos_trace, **slow),
                         _cmd(tiny_model_dir, out, chaos_trace, resume=True, **slow) + ["trainer.resume=auto"],
                         seed=7, min_s=0.3, max_s=2.5, max_attempts=25, max_kills=6, ready_marker="starting",
                         env=_env(), log_dir=tmp_path / "logs")
    got = _trace(chaos_trace)
    assert attempts >= 2
    assert _mismatches(ref, got) == []
    assert {g["opt_step"] for g in got} == set(range(1, STEPS + 1))  # nothing skipped, step count exact
    ck = out / "r" / "checkpoints"
    assert not [p for p in ck.iterdir() if p.name.startswith(".")]  # no tmp/trash debris left
    final_ref = (tmp_path / "ref" / "final" / "model.safetensors").read_bytes()
    assert (out / "r" / "final" / "model.safetensors").read_bytes() == final_ref
    assert run_dir_differences(tmp_path / "ref", out / "r") == []

    # deterministic stop/resume: identical with the RNG restored, different with it forgotten
    for forget, name in ((False, "ok"), (True, "neg")):
        trace = tmp_path / f"{name}.jsonl"
        extra = {"forget_rng": True} if forget else {}
        subprocess.run(_cmd(tiny_model_dir, tmp_path / name, trace, steps=3), env=_env(), check=True, capture_output=True)
        subprocess.run(_cmd(tiny_model_dir, tmp_path / name, trace, resume=True, **extra), env=_env(), check=True,
                       capture_output=True)
        bad = _mismatches(ref, _trace(trace))
        assert (bad != []) == forget, (name, bad)
