"""Hang watchdog: a step that runs past its limit dumps every worker's stacks and fails the run.

A distributed run that hangs (a rank stuck in a collective, an engine that never returns) otherwise
sits silently until someone notices. The watchdog is a daemon thread armed around each step. When
the limit passes it collects stacks -- this process's threads via ``sys._current_frames`` and each
registered source (Ray actors answer ``dump_stacks()`` on a spare thread) -- writes them to
``<run_dir>/hang_stacks.txt``, then raises :class:`WatchdogTimeout` in the main thread through a
signal. If the main thread cannot run Python (stuck inside a C call that holds the GIL), it calls the
cleanup hook and exits the process with status 70 after ``grace_s``: a hard failure with the same
message, never a hang.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

EXIT_CODE = 70  # EX_SOFTWARE


class WatchdogTimeout(RuntimeError):
    pass


def injected_hang(role: str, step: int) -> None:
    """Test hook ``hang`` (``reasonrl._testing``): that role sleeps an hour at that step."""
    from reasonrl import _testing

    _testing.injected_hang(role, step)


def local_stacks(title: str = "") -> str:
    """Stacks of every thread of this process (thread name, id, innermost call last)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out = [f"=== {title or 'process'} pid {os.getpid()} ==="]
    for tid, frame in sys._current_frames().items():
        out.append(f"--- thread {names.get(tid, '?')} ({tid})")
        out.append("".join(traceback.format_stack(frame)).rstrip())
    return "\n".join(out) + "\n"


class Watchdog:
    """``with wd.step(k): ...`` fails the run if the block outlives ``limit_s``.

    ``sources`` returns extra stack dumps (e.g. one per Ray actor) as ``{name: text}``; it is
    called from the watchdog thread and should bound its own wait. ``cleanup`` runs before a hard
    exit (shutting Ray down so no orphaned processes remain).
    """

    def __init__(self, limit_s: float, dump_path: Path, *, sources: Callable[[], dict[str, str]] | None = None,
                 cleanup: Callable[[], None] | None = None, log=print, grace_s: float = 10.0):
        if not limit_s > 0:
            raise ValueError(f"watchdog limit must be > 0 seconds, got {limit_s}")
        self.limit_s, self.dump_path, self.sources = limit_s, Path(dump_path), sources
        self.cleanup, self.log, self.grace_s = cleanup, log, grace_s
        self._cond = threading.Condition()
        self._armed_at: float | None = None
        self._step = -1
        self._closed = False
        self.message: str | None = None
        self._main_ident: int | None = None
        self._thread = threading.Thread(target=self._watch, name="reasonrl-watchdog", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def step(self, step: int):
        on_main = threading.current_thread() is threading.main_thread()
        prev = signal.signal(signal.SIGUSR1, self._raise) if on_main else None
        self._main_ident = threading.get_ident() if on_main else None
        with self._cond:
            self._armed_at, self._step = time.monotonic(), step
            self._cond.notify_all()
        try:
            yield
        except WatchdogTimeout:
            raise
        except BaseException as e:
            # C extensions that poll for signals (ray.wait) wrap the handler's exception in their own
            if self.message is not None:
                raise WatchdogTimeout(self.message) from e
            raise
        finally:
            with self._cond:
                self._armed_at = None
                self._cond.notify_all()
            if on_main:
                signal.signal(signal.SIGUSR1, prev if prev is not None else signal.SIG_DFL)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _raise(self, signum, frame):
        raise WatchdogTimeout(self.message or "watchdog fired")

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._armed_at is None:
                    self._cond.wait()
                    continue
                left = self._armed_at + self.limit_s - time.monotonic()
                if left > 0:
                    self._cond.wait(timeout=left)
                    continue
                step = self._step
                self._cond.release()
                try:
                    self._fire(step)
                finally:
                    self._cond.acquire()
                return

    def _fire(self, step: int) -> None:
        parts = [local_stacks("driver")]
        if self.sources is not None:
            try:
                parts += [f"=== {name} ===\n{text}" for name, text in self.sources().items()]
            except Exception as e:  # a dead actor must not stop the report
                parts.append(f"(collecting worker stacks failed: {type(e).__name__}: {e})")
        self.dump_path.parent.mkdir(parents=True, exist_ok=True)
        self.dump_path.write_text("\n".join(parts))
        self.message = (f"step {step + 1} ran longer than distributed.watchdog_s={self.limit_s:g}s; the stacks of "
                        f"every worker are in {self.dump_path}; raise distributed.watchdog_s if the step is just slow")
        self.log(f"WATCHDOG: {self.message}")
        if self._main_ident is not None:
            signal.pthread_kill(self._main_ident, signal.SIGUSR1)
        deadline = time.monotonic() + self.grace_s
        with self._cond:
            while self._armed_at is not None and time.monotonic() < deadline:
                self._cond.wait(timeout=0.1)
            if self._armed_at is None:
                return
        # the main thread never came back to Python: fail hard rather than hang
        sys.stderr.write(f"WATCHDOG: {self.message}; exiting (status {EXIT_CODE})\n")
        faulthandler.dump_traceback(all_threads=True)
        if self.cleanup is not None:
            with contextlib.suppress(Exception):
                self.cleanup()
        os._exit(EXIT_CODE)
