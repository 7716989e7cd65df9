"""User-caused failures end in one message naming the cause and the fix, without a traceback
(issue 11 item 9); Ctrl-C stops in order with exit status 130 and a resumable run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from trainer_fixtures import tiny_overrides

from reasonrl.cli.main import main

HERE = Path(__file__).resolve().parent


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_non_utf8_training_file_names_file_and_row(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"prompt": "1+1=", "answer": "2"}\n{"prompt": "\xff", "answer": "1"}\n')
    assert main(["train", *tiny_overrides(tiny_model_dir, tmp_path), f"data.train={data}", f"data.test={data}"]) == 2
    err = _err(capsys)
    assert f"{data}: row 2: not valid UTF-8" in err


def test_huge_prompt_is_refused_before_the_first_evaluation(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    rows = [{"prompt": "1+1=", "answer": "2"}, {"prompt": "1+" * 5_000_000 + "1=", "answer": "2"}]  # 10 MB
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t0 = time.monotonic()
    assert main(["train", *tiny_overrides(tiny_model_dir, tmp_path), f"data.train={data}", f"data.test={data}",
                 "data.eval_size=2"]) == 2
    err = _err(capsys)
    assert f"{data}: row 2: the prompt is" in err and "context is" in err
    assert not (tmp_path / "t" / "metrics.jsonl").exists()  # no evaluation was attempted
    assert time.monotonic() - t0 < 120


def test_failed_resume_leaves_config_yaml_alone(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "t"
    (run / "checkpoints" / "step_1").mkdir(parents=True)  # a save that never committed
    (run / "config.yaml").write_text("the run's own config\n")
    assert main(["train", *tiny_overrides(tiny_model_dir, tmp_path), "optim.lr=0.5", "--resume"]) == 2
    assert "no committed checkpoint" in _err(capsys)
    assert (run / "config.yaml").read_text() == "the run's own config\n"


def test_config_errors_exit_2_with_the_field(capsys):
    assert main(["train", "optim.lr=.inf"]) == 2
    assert "optim.lr is inf" in _err(capsys)
    assert main(["train", "reward.functions=[mod:fn=abc]"]) == 2
    assert "weight 'abc' is not a number" in _err(capsys)


def test_sigint_stops_in_order_with_130_and_the_run_resumes(tiny_model_dir, tmp_path):
    over = [*tiny_overrides(tiny_model_dir, tmp_path), "trainer.steps=40", "trainer.save_every=1",
            "eval.sampled=false", "reward.functions=[trainer_fixtures:digit_reward]"]
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE), env.get("PYTHONPATH", "")])
    # the save window widened through the test seam (reasonrl._testing), as the chaos test does
    cmd = [sys.executable, str(HERE / "_hooked_cli.py"), json.dumps({"save_delay_s": 0.05}), "train", *over]
    # a background job inherits SIGINT ignored, and Python then keeps it ignored: restore the default
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ck = tmp_path / "t" / "checkpoints"
    deadline = time.monotonic() + 240
    while not (ck.is_dir() and any((p / "COMMITTED").exists() for p in ck.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err
    # the lock is released and the checkpoints are consistent: the run continues to the end
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert not [p for p in ck.iterdir() if p.name.startswith(".")]
