"""`reasonrl train` with rollout.engine=native: it trains, logs the sampler/learner mismatch, and the
default HF engine logs it too (same metric, any engine)."""

import json

import pytest

from reasonrl.cli.main import main

from trainer_fixtures import tiny_overrides


@pytest.mark.parametrize("engine", ["native", "hf"])
def test_train_logs_logp_mismatch(tiny_model_dir, tmp_path, engine):
    over = tiny_overrides(tiny_model_dir, tmp_path, name=engine) + [
        f"rollout.engine={engine}", "rollout.micro_batch=5", "reward.functions=[trainer_fixtures:digit_reward]",
        "trainer.tensorboard=false", "trainer.steps=2", "eval.sampled=false", "data.eval_size=4"]
    assert main(["train", *over]) == 0
    rows = [json.loads(x) for x in (tmp_path / engine / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert len(steps) == 2
    for r in steps:
        # fp32, same weights: the sampler's log-probs are the learner's up to rounding
        assert 0 <= r["rollout/logp_mismatch_mean"] < 1e-5 and r["rollout/logp_mismatch_max"] < 1e-4
        assert r["perf/gen_tokens_per_s"] > 0


def test_native_engine_refuses_unsupported_model_before_rollout(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from reasonrl.models.loading import load_policy
    from reasonrl.rollout.native_engine import UnsupportedModelError
    from trainer_fixtures import make_tiny_model_dir

    d = make_tiny_model_dir(tmp_path / "m")
    _, tok = load_policy(d)
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2))
    gpt.save_pretrained(tmp_path / "g")
    tok.save_pretrained(tmp_path / "g")
    with pytest.raises(UnsupportedModelError, match="rollout.engine=hf"):
        main(["--debug", "train", *tiny_overrides(tmp_path / "g", tmp_path), "rollout.engine=native"])
