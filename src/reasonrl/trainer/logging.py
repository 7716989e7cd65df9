"""Per-step logging: metrics.jsonl, samples.jsonl, the experiment trackers, and a progress bar.

``metrics.jsonl`` is the record; every tracker named in ``trainer.trackers`` gets each row under the same
keys through one small interface (``Tracker``: ``log(row, step)``, ``close()``), registered in
``TRACKERS``: TensorBoard (``torch.utils.tensorboard``), Weights & Biases (``wandb``, offline by default)
and MLflow (``mlflow`` client, a local file store by default). docs/trackers.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import uuid
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


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    """The row's finite numbers, without ``step``: what every tracker receives."""
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)}


class Tracker:
    """One experiment tracker. ``resume_step``: the step a resumed run restarts after (``None`` = fresh run);
    rows of steps after it are replayed and, bit-identical, arrive again."""

    name = ""

    def __init__(self, run_dir: Path, run_name: str, resume_step: int | None):
        self.run_dir, self.run_name, self.resume_step = run_dir, run_name, resume_step

    def log(self, row: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _event_second(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[3]) if len(parts) > 4 and name.startswith("events.out.tfevents.") and parts[3].isdigit() else None


def _wait_for_a_later_event_second(tb_dir: Path) -> None:
    """TensorBoard replays a directory's event files in file-name order, and a name starts with its
    creation second followed by host, PID and a per-process counter compared as text. A writer opened
    in the same second as an earlier file (a fast resume, the counter passing 9 -> 10) could sort
    before it, and the purge of replayed steps would then be applied in the wrong order. Waiting
    (under a second) until the clock passes the newest file's second makes name order creation order."""
    seconds = [s for s in (_event_second(p.name) for p in tb_dir.glob("events.out.tfevents.*")) if s is not None]
    if seconds:
        while int(time.time()) <= max(seconds):
            time.sleep(0.05)


class TensorBoardTracker(Tracker):
    """Event files in ``<run>/tensorboard``; on resume events from the restart step on are purged
    (``SummaryWriter(purge_step=S)``), so replayed steps never appear twice."""

    name = "tensorboard"

    def __init__(self, run_dir, run_name, resume_step):
        super().__init__(run_dir, run_name, resume_step)
        from torch.utils.tensorboard import SummaryWriter

        tb_dir = run_dir / "tensorboard"
        purge = resume_step if resume_step is not None and tb_dir.is_dir() and any(tb_dir.iterdir()) else None
        _wait_for_a_later_event_second(tb_dir)
        self.writer = SummaryWriter(str(tb_dir), purge_step=purge)

    def log(self, row, step):
        for k, v in row.items():
            self.writer.add_scalar(k, v, step)

    def close(self):
        self.writer.close()


def _stored_id(run_dir: Path, name: str, resume_step: int | None, make) -> str:
    """The tracker's run id kept in ``<run>/trackers.json``: a resumed run continues its tracker run."""
    path = run_dir / "trackers.json"
    ids = json.loads(path.read_text()) if path.exists() else {}
    if resume_step is None or name not in ids:
        ids[name] = make()
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(ids, indent=1, sort_keys=True))
        os.replace(tmp, path)
    return ids[name]


class WandbTracker(Tracker):
    """A W&B run in ``<run>/wandb``. Offline unless ``WANDB_MODE`` is set (``wandb sync <run>/wandb/offline-run-*``
    uploads it later), so a run never waits on a login. Resume continues the same W&B run id and skips the
    steps up to the checkpoint (W&B has them); steps the killed process sent after its last checkpoint are
    sent again, with identical values."""

    name = "wandb"

    def __init__(self, run_dir, run_name, resume_step):
        super().__init__(run_dir, run_name, resume_step)
        wandb = _import_tracker("wandb")
        run_id = _stored_id(run_dir, self.name, resume_step, lambda: uuid.uuid4().hex[:12])
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "reasonrl"), name=run_name, id=run_id,
                              dir=str(run_dir), mode=os.environ.get("WANDB_MODE", "offline"), resume="allow",
                              reinit="create_new", settings=wandb.Settings(silent=True, console="off"))
        self.last_step = -1 if resume_step is None else resume_step + 1

    def log(self, row, step):
        if step < self.last_step:
            return  # W&B's steps only go forward; this step is already there
        self.last_step = step
        self.run.log(row, step=step)

    def close(self):
        self.run.finish()


def mlflow_key(key: str) -> str:
    """MLflow's metric names allow letters, digits and ``_-./ :`` only: ``eval/pass@1`` -> ``eval/pass_at_1``."""
    return key.replace("@", "_at_")


class MlflowTracker(Tracker):
    """An MLflow run in the experiment ``reasonrl`` (``MLFLOW_EXPERIMENT_NAME`` overrides) of the local file
    store ``<run>/mlruns`` (``MLFLOW_TRACKING_URI`` overrides); browse with ``mlflow ui --backend-store-uri``.
    Resume continues the same MLflow run; replayed steps are logged again with their identical values
    (MLflow keeps every logged point)."""

    name = "mlflow"

    def __init__(self, run_dir, run_name, resume_step):
        super().__init__(run_dir, run_name, resume_step)
        _import_tracker("mlflow")
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # MLflow 3.x keeps the file store in maintenance mode behind this opt-in; no database needed
            uri = (run_dir / "mlruns").resolve().as_uri()
            if not os.environ.get("MLFLOW_ALLOW_FILE_STORE"):
                os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        self.client = MlflowClient(tracking_uri=uri)
        exp_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "reasonrl")
        exp = self.client.get_experiment_by_name(exp_name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(exp_name)
        self.run_id = _stored_id(run_dir, self.name, resume_step,
                                 lambda: self.client.create_run(exp_id, run_name=run_name).info.run_id)
        if resume_step is not None:
            self.client.update_run(self.run_id, status="RUNNING")

    def log(self, row, step):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(mlflow_key(k), v, now, step) for k, v in row.items()],
                              synchronous=True)

    def close(self):
        self.client.set_terminated(self.run_id)


TRACKERS: dict[str, type[Tracker]] = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}
"""``trainer.trackers`` name -> class. A new tracker: a ``Tracker`` subclass, one line here, its name in
``TrainerConfig.trackers`` (and its package in ``config.TRACKER_PACKAGES``)."""


def _import_tracker(name: str):
    import importlib

    from reasonrl.config import TRACKER_PACKAGES, tracker_missing_message
    from reasonrl.errors import ConfigError

    try:
        return importlib.import_module(TRACKER_PACKAGES[name])
    except ImportError as e:
        raise ConfigError(tracker_missing_message(name)) from e


def sample_rows(n: int, k: int) -> list[int]:
    """The rows of an ``n``-row batch that ``samples.jsonl`` gets: ``k`` spread evenly."""
    return list(range(0, n, max(1, n // k))[:k]) if k > 0 else []


def sample_entropy(model: Any, batch: Rollouts, cfg: Any) -> dict[int, Any]:
    """Per-token entropy of the policy, before this step's update, on the rows ``samples.jsonl`` gets: a
    no-grad eval-mode forward of ``trainer.log_samples`` rows (no dropout, so no RNG is drawn)."""
    import torch

    from reasonrl.rollout.logprobs import sequence_logprobs

    rows = sample_rows(len(batch), cfg.trainer.log_samples)
    if not rows:
        return {}
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, ent = sequence_logprobs(model, batch.select(torch.tensor(rows)), temperature=cfg.rollout.temperature,
                                       micro_batch=cfg.trainer.micro_batch, with_entropy=True)
    finally:
        model.train(was)
    return {r: ent[j].cpu() for j, r in enumerate(rows)} if ent is not None else {}


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def token_details(batch: Rollouts, i: int, tokenizer: Any, entropy: Any = None) -> dict[str, Any]:
    """Row ``i``'s ``tokens`` (``[text, logp, entropy, advantage]`` per real response token) and ``advantage``.

    A token's text is what it adds to the decoded prefix, so the pieces join to the decoded response even
    where one character spans several byte-level tokens. ``logp`` and ``advantage`` are null on tokens the
    policy did not generate (tool output)."""
    valid = batch.response_valid[i].bool()
    ids = batch.response_ids[i][valid].tolist()
    gen = batch.loss_mask[i][valid].bool().tolist()
    logp = batch.rollout_logp[i][valid].tolist()
    ent = entropy[valid.to(entropy.device)].tolist() if entropy is not None else [None] * len(ids)
    adv_t = batch.policy_advantages
    adv = adv_t[i][valid].tolist() if adv_t is not None else [None] * len(ids)
    own = getattr(tokenizer, "token_pieces", None)  # non-text tokenizers (embodied action bins) name their tokens
    pieces = own(ids) if own is not None else _token_pieces(tokenizer, ids)
    tokens = [[piece, _r(logp[j]) if gen[j] else None, _r(ent[j]), _r(adv[j]) if gen[j] else None]
              for j, piece in enumerate(pieces)]
    trained = [a for a, g in zip(adv, gen) if g and a is not None]
    return {"tokens": tokens, "advantage": _r(sum(trained) / len(trained)) if trained else None}


def _token_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    pieces, prev = [], ""
    for j in range(len(ids)):
        text = tokenizer.decode(ids[: j + 1], skip_special_tokens=False)
        piece = text[len(prev):] if text.startswith(prev) else tokenizer.decode(ids[j: j + 1], skip_special_tokens=False)
        prev = text
        pieces.append(piece)
    return pieces


class RunLogger:
    """Appends to ``metrics.jsonl`` / ``samples.jsonl`` (fsynced per row) and sends each metrics row to the
    trackers (``trackers``: names in ``TRACKERS``; ``tensorboard=False`` drops TensorBoard from them).

    Resuming at step S (:meth:`truncate_after`) makes every file what an uninterrupted run had at
    the checkpoint of step S: rows past S go, and so does a final evaluation logged at S (it is
    redone at the end); TensorBoard events from S on are purged (``SummaryWriter(purge_step=S)``)
    and the kept rows of step S are sent again, so replayed steps never appear twice there.
    Trackers open on the first row, so they know whether the run is resumed.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True, trackers: list[str] | None = None,
                 run_name: str | None = None):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.samples_path = self.run_dir / "samples.jsonl"
        names = ["tensorboard"] if trackers is None else list(trackers)
        self.tracker_names = [n for n in names if tensorboard or n != "tensorboard"]
        self.run_name = run_name or self.run_dir.name
        self.trackers: list[Tracker] | None = None
        self._resume_step: int | None = None

    def _open_trackers(self) -> list[Tracker]:
        if self.trackers is None:
            self.trackers = []
            for name in self.tracker_names:
                try:
                    self.trackers.append(TRACKERS[name](self.run_dir, self.run_name, self._resume_step))
                except ImportError:  # tensorboard is a dependency; tolerate a broken install of it only
                    if name != "tensorboard":
                        raise
        return self.trackers

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
        if step > 0:
            self._resume_step = step
            for row in kept_rows:
                self._track(row)

    def read_metrics(self) -> list[dict[str, Any]]:
        from reasonrl.report.plots import read_metrics

        return read_metrics(self.metrics_path) if self.metrics_path.exists() else []

    def log(self, row: dict[str, Any]) -> None:
        self._append(self.metrics_path, row)
        self._track(row)

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

    def _track(self, row: dict[str, Any]) -> None:
        vals = _scalars(row)
        for t in self._open_trackers():
            t.log(vals, int(row.get("step", 0)))

    def samples(self, step: int, batch: Rollouts, tasks: list, k: int, tokenizer: Any = None,
                entropy: dict[int, Any] | None = None) -> None:
        """``k`` rows of the step (``sample_rows``) to ``samples.jsonl``. With ``tokenizer``, each also gets
        ``tokens``: ``[text, logp, entropy, advantage]`` per response token (the dashboard shades by them;
        ``logp`` is the sampler's, ``entropy`` from ``sample_entropy``, null where unknown) and ``advantage``
        (the row's mean over its trained tokens)."""
        if k <= 0:
            return
        n = len(batch)
        for i in sample_rows(n, k):
            t = tasks[batch.task_index[i]]
            row = {"step": step, "uid": t.uid, "prompt": t.prompt, "answer": t.answer,
                   "response": batch.response_text[i], "reward": float(batch.rewards[i]),
                   "correct": bool(batch.info.get("correct", [False] * n)[i])}
            if tokenizer is not None:
                row.update(token_details(batch, i, tokenizer, (entropy or {}).get(i)))
            self._append(self.samples_path, row)

    def close(self) -> None:
        for t in self.trackers or []:
            t.close()
        self.trackers = None

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
