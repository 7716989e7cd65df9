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


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class RunLogger:
    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.samples_path = self.run_dir / "samples.jsonl"
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency; tolerate a broken install
                self.tb = None

    def _append(self, path: Path, row: dict[str, Any]) -> None:
        with open(path, "a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, step: int) -> None:
        """On resume drop lines after the checkpoint's step (they are replayed) and any torn line."""
        for path in (self.metrics_path, self.samples_path):
            if not path.exists():
                continue
            keep = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= step:
                        keep.append(line)
                except json.JSONDecodeError:
                    continue
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(x + "\n" for x in keep))
            os.replace(tmp, path)

    def read_metrics(self) -> list[dict[str, Any]]:
        from reasonrl.report.plots import read_metrics

        return read_metrics(self.metrics_path) if self.metrics_path.exists() else []

    def log(self, row: dict[str, Any]) -> None:
        self._append(self.metrics_path, row)
        if self.tb is not None:
            step = int(row.get("step", 0))
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

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
