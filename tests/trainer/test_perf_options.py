"""perf.* through the whole trainer: the fused/packed learner and checkpointing train to the same
weights as the reference path; bf16 autocast runs and its gap to the fp32 sampler is reported."""

import pytest
import torch

from reasonrl.config import ConfigError, load_config
from reasonrl.trainer.loop import Trainer
from trainer_fixtures import tiny_overrides

FAST = ["eval.sampled=false", "data.eval_size=2", "trainer.tensorboard=false", "trainer.steps=2",
        "reward.functions=[trainer_fixtures:digit_reward]", "reward.correctness=0.0", "trainer.micro_batch=3"]
# SGD: the update is linear in the gradient, so float-rounding differences stay rounding-sized
# (AdamW divides near-zero gradient components by their own size and turns rounding into lr-sized steps)
SGD = ["optim.name=sgd", "optim.lr=0.5"]


def _train(tmp_path, model_dir, name, perf):
    tr = Trainer(load_config(None, tiny_overrides(model_dir, tmp_path, name=name) + FAST + perf))
    tr.start_weights = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.run()
    return tr


def test_fast_learner_trains_to_the_same_weights(tmp_path, tiny_model_dir):
    ref = _train(tmp_path, tiny_model_dir, "ref", SGD + ["perf.logprob_chunk_tokens=0", "perf.packing=false"])
    fast = _train(tmp_path, tiny_model_dir, "fast", SGD + ["perf.logprob_chunk_tokens=5", "perf.packing=true"])
    ckpt = _train(tmp_path, tiny_model_dir, "ckpt", SGD + ["perf.activation_checkpointing=true"])
    assert any(not torch.equal(v, ref.start_weights[k]) for k, v in ref.model.state_dict().items())  # it trained
    assert all(layer.gradient_checkpointing for layer in ckpt.model.model.layers)
    for k, a in ref.model.state_dict().items():
        torch.testing.assert_close(fast.model.state_dict()[k], a, atol=1e-6, rtol=1e-5, msg=k)
        torch.testing.assert_close(ckpt.model.state_dict()[k], a, atol=1e-6, rtol=1e-5, msg=k)


def test_bf16_learner_reports_its_logp_gap(tmp_path, tiny_model_dir):
    import json

    tr = _train(tmp_path, tiny_model_dir, "bf16", ["perf.autocast=bf16", "trainer.steps=1"])
    rows = [json.loads(x) for x in (tr.run_dir / "metrics.jsonl").read_text().splitlines()]
    gap = [r["rollout/logp_mismatch_max"] for r in rows if "rollout/logp_mismatch_max" in r]
    assert gap and 1e-4 < gap[0] < 1.0  # visibly not fp32, still close


def test_packing_without_the_fused_head_is_refused(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="perf.packing"):
        load_config(None, ["perf.packing=true", "perf.logprob_chunk_tokens=0"])
