"""Per-step logging: metrics.jsonl, TensorBoard events, samples.jsonl, and a progress bar."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from reasonrl.batch import Rollouts


def _is_before_line(line: str) -> bool:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return False
    return row.get("step") == 0 and _eval_only(row)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _eval_only(row: dict[str, Any]) -> bool:
    """A row holding only an evaluation (the step-0 "before" one or the final one), not a training step."""
    return "eval/pass@1" in row and all(k == "step" or k.startswith("eval/") for k in row)


class RunLogger:
    """Appends to ``metrics.jsonl`` / ``samples.jsonl`` (fsynced per row) and TensorBoard.

    Resuming at step S (:meth:`truncate_after`) makes every file what an uninterrupted run had at
    the checkpoint of step S: rows past S go, and so does a final evaluation logged at S (it is
    redone at the end); TensorBoard events from S on are purged (``SummaryWriter(purge_step=S)``)
    and the kept rows of step S are written again, so replayed steps never appear twice.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.samples_path = self.run_dir / "samples.jsonl"
        self.tensorboard = tensorboard
        self.tb = None
        self._purge_step: int | None = None

    def _writer(self):
        if self.tb is None and self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a dependency; tolerate a broken install
                self.tensorboard = False
                return None
            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self._purge_step)
        return self.tb

    def _append(self, path: Path, row: dict[str, Any]) -> None:
        with open(path, "a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _rewrite(self, path: Path, lines: list[str]) -> None:
        tmp = path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as f:
            f.write("".join(x + "\n" for x in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def truncate_after(self, step: int) -> None:
        """On resume at ``step``: drop lines after it (they are replayed), a final evaluation logged
        at it, and any torn line; see the class docstring for TensorBoard."""
        kept_rows: list[dict[str, Any]] = []
        for path in (self.metrics_path, self.samples_path):
            if not path.exists():
                continue
            keep = []
            seen_before = False
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                s = row.get("step", 0)
                if s > step:
                    continue
                if path is self.metrics_path and s == step and _eval_only(row):
                    if step > 0 or seen_before:
                        continue  # a final evaluation: the run ends with it again
                    seen_before = True
                keep.append(line)
                if path is self.metrics_path and s == step:
                    kept_rows.append(row)
            self._rewrite(path, keep)
        tb_dir = self.run_dir / "tensorboard"
        if self.tensorboard and tb_dir.is_dir() and any(tb_dir.iterdir()):
            self._purge_step = step
            for row in kept_rows:
                self._tb_row(row)

    def read_metrics(self) -> list[dict[str, Any]]:
        from reasonrl.report.plots import read_metrics

        return read_metrics(self.metrics_path) if self.metrics_path.exists() else []

    def log(self, row: dict[str, Any]) -> None:
        self._append(self.metrics_path, row)
        self._tb_row(row)

    def log_before(self, row: dict[str, Any]) -> None:
        """Log the step-0 evaluation unless this very row is already there; another step-0
        evaluation (computed under other settings) is removed."""
        want = json.loads(json.dumps({k: _clean(v) for k, v in row.items()}))
        lines = self.metrics_path.read_text().splitlines() if self.metrics_path.exists() else []
        if any(_is_before_line(x) and json.loads(x) == want for x in lines):
            return
        stale = [x for x in lines if _is_before_line(x)]
        if stale:
            self._rewrite(self.metrics_path, [x for x in lines if x not in stale])
        self.log(row)

    def _tb_row(self, row: dict[str, Any]) -> None:
        tb = self._writer()
        if tb is not None:
            step = int(row.get("step", 0))
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    tb.add_scalar(k, v, step)

    def samples(self, step: int, batch: Rollouts, tasks: list, k: int) -> None:
        if k <= 0:
            return
        n = len(batch)
        for i in range(0, n, max(1, n // k))[:k]:
            t = tasks[batch.task_index[i]]
            self._append(self.samples_path, {
                "step": step, "uid": t.uid, "prompt": t.prompt, "answer": t.answer,
                "response": batch.response_text[i], "reward": float(batch.rewards[i]),
                "correct": bool(batch.info.get("correct", [False] * n)[i])})

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

    @contextlib.contextmanager
    def progress(self, total: int, start: int = 0, enabled: bool = True):
        bar = _Progress(total, start, enabled and sys.stderr.isatty())
        try:
            yield bar
        finally:
            bar.close()


class _Progress:
    """A rich progress bar on a terminal; one concise line every few steps otherwise (logs, CI)."""

    def __init__(self, total: int, start: int, tty: bool):
        self.total, self.tty = total, tty
        self._p = None
        if tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._p = Progress(TextColumn("RL"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                               TextColumn("{task.fields[info]}"))
            self._p.start()
            self._t = self._p.add_task("rl", total=total, completed=start, info="")

    def update(self, step: int, m: dict[str, Any]) -> None:
        info = (f"reward {m.get('reward/mean', float('nan')):.3f} acc {m.get('reward/accuracy', float('nan')):.3f} "
                f"len {m.get('response/length_mean', float('nan')):.1f}")
        if "eval/pass@1" in m:
            info += f" eval {m['eval/pass@1']:.3f}"
        if self._p is not None:
            self._p.update(self._t, completed=step, info=info)
        elif step % max(1, self.total // 20) == 0 or step == self.total:
            print(f"[step {step}/{self.total}] {info} ({m.get('time/step_s', 0):.2f}s/step)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
