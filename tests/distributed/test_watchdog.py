"""The hang watchdog fails a stuck step fast, with every thread's stack, instead of hanging."""

import subprocess
import sys
import textwrap
import time

import pytest

from reasonrl.config import load_config
from reasonrl.trainer.watchdog import EXIT_CODE, Watchdog, WatchdogTimeout
from trainer_fixtures import tiny_overrides


def _stuck_in_here():
    time.sleep(60)


def test_watchdog_raises_in_main_thread_with_stacks(tmp_path):
    logs = []
    wd = Watchdog(0.5, tmp_path / "stacks.txt", sources=lambda: {"worker 0": "fake worker stack"}, log=logs.append)
    t0 = time.monotonic()
    with pytest.raises(WatchdogTimeout, match="distributed.watchdog_s=0.5"):
        with wd.step(3):
            _stuck_in_here()
    assert time.monotonic() - t0 < 10
    dump = (tmp_path / "stacks.txt").read_text()
    assert "_stuck_in_here" in dump and "fake worker stack" in dump and "reasonrl-watchdog" in dump
    assert "step 4 ran longer" in logs[0]
    wd.close()


def test_watchdog_quiet_when_steps_finish(tmp_path):
    wd = Watchdog(1.0, tmp_path / "stacks.txt")
    for k in range(3):
        with wd.step(k):
            time.sleep(0.05)
    time.sleep(1.2)  # idle between steps is not a hang
    wd.close()
    assert not (tmp_path / "stacks.txt").exists() and wd.message is None


def test_watchdog_hard_exit_when_main_thread_cannot_run_python(tmp_path):
    """SIGUSR1 blocked stands in for a main thread stuck in C code: the process still ends, status 70."""
    code = textwrap.dedent(f"""
        import signal, time
        from pathlib import Path
        from reasonrl.trainer.watchdog import Watchdog
        wd = Watchdog(0.3, Path({str(tmp_path / 's.txt')!r}), grace_s=0.5, cleanup=lambda: print("cleanup ran", flush=True))
        with wd.step(0):
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
            time.sleep(60)
    """)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == EXIT_CODE, p.stderr
    assert time.monotonic() - t0 < 30
    assert "cleanup ran" in p.stdout and "watchdog_s=0.3" in p.stderr


def test_trainer_run_fails_on_injected_hang(tmp_path, tiny_model_dir):
    from reasonrl.trainer.loop import Trainer

    from reasonrl import _testing

    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path) + [
        "distributed.watchdog_s=20", "trainer.steps=3", "eval.sampled=false", "data.eval_size=2"])
    tr = Trainer(cfg)
    t0 = time.monotonic()
    with _testing.hooks(hang="driver:1"), pytest.raises(WatchdogTimeout, match="step 2 ran longer"):
        tr.run()
    assert time.monotonic() - t0 < 120
    assert "injected_hang" in (cfg.run_dir / "hang_stacks.txt").read_text()
