"""Fixed probe sets during training, paired bootstrap, no-answer rates and saved responses."""

import json
import sys
from pathlib import Path

import pytest

from reasonrl.eval.metrics import paired_bootstrap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from trainer_fixtures import make_tiny_model_dir, tiny_overrides  # noqa: E402


def test_paired_bootstrap_hand_cases():
    same = paired_bootstrap([1, 0, 1, 0], [1, 0, 1, 0], n_boot=200)
    assert same["diff"] == 0 and same["p"] == 1.0 and same["ci_low"] == same["ci_high"] == 0
    # 30 of 40 problems fixed, none broken: a clear win, the interval excludes 0
    win = paired_bootstrap([0] * 40, [1] * 30 + [0] * 10, n_boot=2000)
    assert win["diff"] == pytest.approx(0.75) and win["ci_low"] > 0.5 and win["p"] == pytest.approx(1 / 2000)
    # one fixed, one broken: no evidence either way
    assert paired_bootstrap([1, 0], [0, 1], n_boot=2000)["p"] > 0.5
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1], [1, 0])


def test_probe_runs_at_start_every_k_and_end_with_per_problem_rows(tmp_path):
    from reasonrl.config import load_config
    from reasonrl.trainer.loop import Trainer

    model_dir = make_tiny_model_dir(tmp_path / "m")
    cfg = load_config(None, tiny_overrides(model_dir, tmp_path) + [
        "trainer.steps=3", "trainer.tensorboard=false", "eval.probe_every=2", "eval.probe_heldout=5",
        "eval.probe_train=3", "eval.probe_samples=2"])
    Trainer(cfg, log=lambda *a: None).run()
    rows = [json.loads(x) for x in (cfg.run_dir / "probe.jsonl").read_text().splitlines()]
    assert [(r["step"], r["set"]) for r in rows] == [(0, "heldout"), (0, "train"), (2, "heldout"), (2, "train"),
                                                     (3, "heldout"), (3, "train")]
    assert len(rows[0]["greedy"]) == 5 and len(rows[1]["sampled"]) == 3
    assert all(0 <= c <= 2 for r in rows for c in r["sampled"])
    # the probe is fixed: an untrained model's step-0 rows are reproduced by a second run
    metrics = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("probe/heldout/greedy" in m and "probe/train/no_answer_sampled" in m for m in metrics)
    saved = [json.loads(x) for x in (cfg.run_dir / "eval_responses.jsonl").read_text().splitlines()]
    assert len(saved) == 8 and {"prompt", "answer", "response", "extracted", "correct"} <= set(saved[0])


def test_probe_train_set_is_disjoint_from_the_trainers_stream():
    from reasonrl.config import load_config
    from reasonrl.eval.probe import probe_tasks
    from reasonrl.tasks import load_tasks

    cfg = load_config(None, ["eval.probe_train=50", "eval.probe_heldout=10"])
    sets = probe_tasks(cfg)
    trained = {t.prompt for t in load_tasks(cfg.data.train, 2000, split="train", seed=cfg.run.seed + 1)}
    assert len(sets["heldout"]) == 10 and all(t.meta["split"] == "test" for t in sets["heldout"])
    # a separate seeded stream: overlap only by chance collisions of the generator, far below the set size
    assert len({t.prompt for t in sets["train"]} & trained) <= 2
