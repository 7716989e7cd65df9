"""The experiment trackers behind RunLogger (trainer/logging.py), against the real packages, offline:
TensorBoard event files, a W&B offline run (read back from its .wandb record log) and an MLflow local
file store get the same rows as metrics.jsonl under the same keys; a resumed run continues the same
tracker runs; a missing package fails at config load naming the extra."""

import json
import math
import struct
import sys
from pathlib import Path

import pytest
from _rundir_compare import strip_timings, tb_scalars
from trainer_fixtures import tiny_overrides

from reasonrl.config import load_config
from reasonrl.errors import ConfigError
from reasonrl.trainer.logging import RunLogger, mlflow_key

pytest.importorskip("wandb", reason="the W&B tracker needs the 'trackers' extra")
pytest.importorskip("mlflow", reason="the MLflow tracker needs the 'trackers' extra")

ALL = ["tensorboard", "wandb", "mlflow"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")  # the tracker opts in for its default store; restored after


def _wandb_records(path: Path):
    """The records of a W&B transaction log (.wandb): a 7-byte header (':W&B', magic, version), then
    LevelDB-log framing in 32 KiB blocks: crc32c (4), length (2, little-endian), type (1: full, 2-4: first,
    middle, last), payload; a block tail under 7 bytes is padding."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    block = 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        buf += payload
        if kind in (1, 4):
            yield buf
            buf = b""


def wandb_history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from wandb.proto import wandb_internal_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert files, list((run_dir / "wandb").rglob("*"))
    for f in files:
        for raw in _wandb_records(f):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(raw)
            if rec.HasField("history"):
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                step = items.pop("_step")
                for k, v in items.items():
                    if not k.startswith("_"):
                        out.setdefault(k, []).append((step, v))
    return out


def mlflow_history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    run_id = json.loads((run_dir / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    keys = client.get_run(run_id).data.metrics
    return {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in keys}


def jsonl_history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                out.setdefault(k, []).append((row["step"], float(v)))
    return out


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b), set(a) ^ set(b)
    for k in a:
        assert [(s, pytest.approx(v, rel=1e-6)) for s, v in a[k]] == b[k], k


def test_three_trackers_get_the_rows_of_metrics_jsonl_and_resume_continues_them(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    log = RunLogger(run, trackers=ALL, run_name="r")
    log.log_before({"step": 0, "eval/pass@1": 0.25, "eval/maj@4": 0.5})
    for s in (1, 2, 3):
        log.log({"step": s, "reward/mean": s / 3, "actor/loss": -0.1 * s, "actor/entropy": float("nan")})
    log.close()
    ids = json.loads((run / "trackers.json").read_text())

    # resume at the checkpoint of step 2: step 3 is replayed (with identical values), then step 4
    log = RunLogger(run, trackers=ALL, run_name="r")
    log.truncate_after(2)
    for s in (3, 4):
        log.log({"step": s, "reward/mean": s / 3, "actor/loss": -0.1 * s})
    log.log({"step": 4, "eval/pass@1": 0.75, "eval/maj@4": 0.5})
    log.close()
    assert json.loads((run / "trackers.json").read_text()) == ids  # the same W&B and MLflow runs

    want = jsonl_history(run)
    assert want["reward/mean"] == [(1, 1 / 3), (2, 2 / 3), (3, 1.0), (4, 4 / 3)]
    assert "actor/entropy" not in want  # NaN is not logged anywhere
    _same(want, tb_scalars(run / "tensorboard"))  # purged and rewritten: exactly the jsonl rows
    # W&B and MLflow keep every point sent: the replayed step 3 appears twice there, with the same values
    wb = wandb_history(run)
    assert wb["reward/mean"] == [(1, 1 / 3), (2, 2 / 3), (3, 1.0), (3, 1.0), (4, 4 / 3)]
    _same(want, {k: sorted(set(v)) for k, v in wb.items()})
    got = mlflow_history(run)
    assert "eval/pass_at_1" in got
    _same({mlflow_key(k): v for k, v in want.items()}, {k: sorted(set(v)) for k, v in got.items()})


def test_training_run_logs_to_every_tracker(tiny_model_dir, tmp_path):
    from reasonrl.trainer.loop import Trainer

    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path) + [
        "trainer.steps=2", "reward.functions=[trainer_fixtures:digit_reward]", "trainer.trackers=[tensorboard,wandb,mlflow]"])
    Trainer(cfg, log=lambda *a: None).run()
    run = tmp_path / "t"
    want = jsonl_history(run)
    assert {"reward/mean", "eval/pass@1", "actor/loss"} <= set(want)
    _same(strip_timings(want), tb_scalars(run / "tensorboard"))  # this reader leaves timings out
    _same(want, wandb_history(run))
    _same({mlflow_key(k): v for k, v in want.items()}, mlflow_history(run))


def test_missing_tracker_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ConfigError, match=r"trainer.trackers.*'wandb'.*pip install 'reasonrl\[trackers\]'"):
        load_config(None, ["trainer.trackers=[tensorboard,wandb]"])
    log = RunLogger(tmp_path, trackers=["wandb"])
    with pytest.raises(ConfigError, match=r"reasonrl\[trackers\]"):
        log.log({"step": 1, "x": 1.0})


def test_unknown_tracker_and_tensorboard_false():
    with pytest.raises(ConfigError, match="trainer.trackers"):
        load_config(None, ["trainer.trackers=[neptune]"])
    assert RunLogger(Path("/nonexistent"), tensorboard=False, trackers=ALL).tracker_names == ["wandb", "mlflow"]
    assert load_config(None, []).trainer.trackers == ["tensorboard"]
