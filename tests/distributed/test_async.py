"""One-step-off-policy rollout: the staleness bound, the IS correction's inputs, and exact resume."""

import json
import shutil

import pytest
import torch

from reasonrl.config import load_config
from reasonrl.trainer.loop import Trainer
from trainer_fixtures import tiny_overrides

FAST = ["eval.sampled=false", "data.eval_size=2", "trainer.tensorboard=false", "rollout.max_new_tokens=8",
        "reward.functions=[trainer_fixtures:digit_reward]", "reward.correctness=0.0"]


def _metrics(cfg) -> list[dict]:
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "async/staleness" in r]


@pytest.mark.parametrize("staleness,steps,expected", [
    (1, 4, [(0, 0), (1, 0), (2, 1), (3, 2)]),  # batch k+1 is sampled with the weights of step k
    (2, 4, [(0, 0), (1, 0), (2, 0), (3, 1)]),
    (0, 2, [(0, 0), (1, 1)]),                  # 0 = synchronous
])
def test_policy_version_of_every_batch_respects_the_bound(tmp_path, tiny_model_dir, staleness, steps, expected):
    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path, name=f"s{staleness}") + FAST + [
        "async_rollout.enabled=true", f"async_rollout.max_staleness={staleness}", f"trainer.steps={steps}"])
    tr = Trainer(cfg)
    tr.run()
    assert tr.scale.versions == expected
    assert all(step - v <= staleness for step, v in tr.scale.versions)
    rows = _metrics(cfg)
    assert [r["async/staleness"] for r in rows] == [s - v for s, v in expected]
    for r, (step, v) in zip(rows, expected):
        kl, w = r["offpolicy/kl_rollout_old"], r["offpolicy/is_weight_mean"]
        if step == v:  # on-policy batch: the learner's old log-probs are the sampler's (to float noise)
            assert kl < 1e-6 and w == pytest.approx(1.0, abs=1e-4)
        else:  # stale batch: the policy moved since it was sampled, and the weights correct for it
            assert kl > 1e-6 and w != pytest.approx(1.0, abs=1e-6)
        assert r["sync/weights_mb"] > 0


def test_async_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_model_dir):
    """The checkpoint holds the in-flight batches and the producer's RNG, so resuming is exact."""
    over = tiny_overrides(tiny_model_dir, tmp_path, name="full") + FAST + [
        "async_rollout.enabled=true", "trainer.steps=5", "trainer.save_every=2", "trainer.keep_last=2"]
    full = Trainer(load_config(None, over))
    full.run()
    ckpts = full.run_dir / "checkpoints"
    shutil.rmtree(ckpts / "step_4")  # as if the run had died after step 2's checkpoint
    resumed = Trainer(load_config(None, over + ["trainer.resume=true"]))
    resumed.run()  # batches 2 and 3 come from the checkpoint, batch 4 from the restored producer RNG
    assert resumed.scale.versions == [(2, 1), (3, 2), (4, 3)]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
