"""Run directories (issue 11 items 6-8): a run is never destroyed unasked, one trainer per directory,
no debris, and resuming (also a finished run) leaves the directory equal to an uninterrupted run's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _rundir_compare import run_dir_differences, tb_scalars
from trainer_fixtures import tiny_overrides

from reasonrl.cli.main import main

HERE = Path(__file__).resolve().parent


def _over(model: Path, out: Path, *extra: str) -> list[str]:
    return [*tiny_overrides(model, out, "r"), "trainer.save_every=1", "trainer.keep_last=2", "eval.sampled=false",
            "reward.functions=[trainer_fixtures:digit_reward]", *extra]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- item 6


def test_fresh_run_into_existing_run_is_refused_then_overwrite_re_evaluates(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", *_over(tiny_model_dir, tmp_path)]) == 0
    before = _snapshot(run)
    capsys.readouterr()
    t0 = time.monotonic()
    assert main(["train", *_over(tiny_model_dir, tmp_path, "data.eval_size=4")]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and "Traceback" not in err
    assert time.monotonic() - t0 < 5  # refused before the model is loaded
    assert _snapshot(run) == before  # nothing deleted, truncated or rewritten

    # asked for: the old run goes, and the step-0 evaluation is computed under the new settings
    assert main(["train", *_over(tiny_model_dir, tmp_path, "data.eval_size=4"), "--overwrite"]) == 0
    evals = [r for r in _rows(run) if "eval/pass@1" in r]
    assert [(r["step"], r["eval/n_problems"]) for r in evals] == [(0, 4), (3, 4)]
    assert json.loads((run / "eval_before.json").read_text())["metrics"]["n_problems"] == 4


def test_resume_with_other_eval_settings_does_not_reuse_the_before_evaluation(tiny_model_dir, tmp_path):
    run = tmp_path / "r"
    assert main(["train", *_over(tiny_model_dir, tmp_path, "trainer.steps=2")]) == 0
    assert main(["train", *_over(tiny_model_dir, tmp_path, "data.eval_size=4"), "--resume"]) == 0
    before = [r for r in _rows(run) if r["step"] == 0 and "eval/pass@1" in r]
    assert [r["eval/n_problems"] for r in before] == [4]  # recomputed, the stale one replaced
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final/n_problems"] == 4 and "after_vs_before_sign_p" in summary  # paired on the same 4


def test_eval_before_is_reused_only_on_an_exact_key(tmp_path):
    from reasonrl.trainer.rundir import RunDir

    with RunDir(tmp_path / "r") as rd:
        key = {"eval": {"k": 2}, "tasks": {"n": 8, "sha256": "ab"}}
        rd.save_eval_before(key, {"pass@1": 0.5, "n_problems": 8.0}, [True, False])
        got = rd.load_eval_before(json.loads(json.dumps(key)))
        assert got is not None and got.correct == [True, False] and got.metrics["pass@1"] == 0.5
        assert rd.load_eval_before({**key, "tasks": {"n": 4, "sha256": "ab"}}) is None


def test_resume_and_overwrite_together_is_an_error(tmp_path):
    from reasonrl.trainer.rundir import RunDir, RunDirError

    with pytest.raises(RunDirError, match="contradict"):
        RunDir(tmp_path, resume=True, overwrite=True).open()


# ----------------------------------------------------------------------------- item 7

_HOLD = """
import fcntl, os, sys, time
os.makedirs(sys.argv[1])
fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running trainer holds (trainer/rundir.py)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(120)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE), env.get("PYTHONPATH", "")])
    return env


def test_second_trainer_is_refused_at_once_naming_the_holder(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, env=_env())
    try:
        assert holder.stdout.readline().strip() == b"locked"
        for extra in ([], ["--resume"], ["--overwrite"]):
            if extra == ["--resume"]:
                (run / "checkpoints").mkdir(exist_ok=True)
            t0 = time.monotonic()
            assert main(["train", *_over(tiny_model_dir, tmp_path), *extra]) == 2
            err = capsys.readouterr().err
            assert f"PID {holder.pid}" in err and "in use by another trainer" in err, err
            assert time.monotonic() - t0 < 5
        assert sorted(p.name for p in run.iterdir()) == [".lock", "checkpoints"]
    finally:
        holder.kill()
        holder.wait()
    from reasonrl.trainer.rundir import RunDir

    # the holder is gone: the lock went with it
    with RunDir(run, resume="auto"):
        pass


def test_lock_is_released_on_close_and_not_kept_by_forked_children(tmp_path):
    from reasonrl.trainer.rundir import RunDir, RunDirError

    rd = RunDir(tmp_path / "r").__enter__()
    with pytest.raises(RunDirError, match=f"PID {os.getpid()}"):
        RunDir(tmp_path / "r", resume="auto").open()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked helper (e.g. a multiprocessing worker) outliving the trainer
        os.write(w, b"up")  # the at-fork hooks have run by now
        time.sleep(5)
        os._exit(0)
    try:
        assert os.read(r, 2) == b"up"
        rd.close()
        with RunDir(tmp_path / "r", resume="auto"):
            pass
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(r), os.close(w)


# ----------------------------------------------------------------------------- item 8


def _debris(run: Path) -> None:
    """What SIGKILLs at bad moments leave: a half-written and a moved-aside final/, an orphan
    checkpoint save, temp files of atomic rewrites."""
    shutil.copytree(run / "final", run / ".final.tmp-0badc0de")
    (run / ".final.old-deadbeef").mkdir()
    (run / ".final.old-deadbeef" / "junk").write_text("x")
    (run / "checkpoints" / ".tmp_step_9_12345").mkdir()
    (run / "checkpoints" / ".tmp_step_9_12345" / "trainer_state.pt").write_bytes(b"torn")
    (run / "metrics.jsonl.tmp").write_text("{")
    (run / ".summary.json.abc.tmp").write_text("{")


def test_resume_of_finished_and_replayed_runs_equals_uninterrupted(tiny_model_dir, tmp_path):
    run = tmp_path / "r"
    over = _over(tiny_model_dir, tmp_path)
    assert main(["train", *over]) == 0
    golden = tmp_path / "golden"
    shutil.copytree(run, golden)  # the uninterrupted run; the scenarios below replay it in place
    assert tb_scalars(golden / "tensorboard")["reward/mean"]
    assert run_dir_differences(golden, run) == []

    # --resume on a finished run (= a kill after the final evaluation), amid crash debris:
    # no second final row, no debris left
    _debris(run)
    assert main(["train", *over, "--resume"]) == 0
    assert run_dir_differences(golden, run) == []

    # a kill after step 3 was logged but before its checkpoint committed: step 3 is replayed from
    # step 2, so TensorBoard must not hold it twice, and the grader counters must continue
    shutil.rmtree(run)
    shutil.copytree(golden, run)
    shutil.rmtree(run / "checkpoints" / "step_3")
    assert main(["train", *over, "--resume"]) == 0
    assert run_dir_differences(golden, run) == []
    assert [s for s, _ in tb_scalars(run / "tensorboard")["reward/mean"]] == [1, 2, 3]
    counts = [r["reward/math_correct"] + r["reward/math_wrong"] for r in _rows(run) if "reward/mean" in r]
    assert counts == sorted(set(counts)) and counts[0] > 0  # cumulative, never restarted


def test_cleanup_puts_back_a_moved_aside_final(tmp_path):
    from reasonrl.trainer.rundir import cleanup_debris

    (tmp_path / ".final.old-1").mkdir()
    (tmp_path / ".final.old-1" / "model.safetensors").write_text("w")
    (tmp_path / ".final.tmp-2").mkdir()
    removed = cleanup_debris(tmp_path)
    assert sorted(p.name for p in removed) == [".final.old-1", ".final.tmp-2"]
    assert (tmp_path / "final" / "model.safetensors").read_text() == "w"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
