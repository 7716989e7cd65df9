"""builtin:tiny-mamba / tiny-mamba2: parameter count matched to the tiny transformer, built by the same
SFT pipeline (a few steps here), and trained by ``reasonrl train`` (GRPO) through the recurrent engine."""

import json

import pytest
import torch

from reasonrl.models.ssm import SSMForCausalLM
from reasonrl.models.ssm.tiny import ARCHS, build_ssm, build_tiny_ssm, ssm_model_dir
from reasonrl.models.tiny import TinySpec, _tokenizer_corpus, build_model
from reasonrl.models.tokenizer import train_tokenizer

SMALL = TinySpec(demos=40, val_size=6, sft_steps=3, sft_batch=8, eval_every=2, max_new_tokens=6)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(_tokenizer_corpus(TinySpec(demos=50)), 256)


@pytest.mark.parametrize("kind", sorted(ARCHS))
def test_parameter_count_matches_the_tiny_transformer(tok, kind):
    ref = sum(p.numel() for p in build_model(TinySpec(), tok).parameters())
    n = sum(p.numel() for p in build_ssm(kind, TinySpec(), tok).parameters())
    assert abs(n - ref) / ref < 0.06, (kind, n, ref)


def test_cache_dir_names_kind_and_spec():
    a, b = ssm_model_dir("mamba"), ssm_model_dir("mamba2")
    assert a != b and a.name.startswith("tiny-mamba-") and b.name.startswith("tiny-mamba2-")
    assert ssm_model_dir("mamba", SMALL) != a
    with pytest.raises(ValueError, match="builtin:tiny-mamba"):
        ssm_model_dir("rwkv")


def test_build_pipeline_writes_a_loadable_checkpoint(tmp_path):
    from reasonrl.models.loading import load_policy

    lines = []
    out = build_tiny_ssm("mamba2", SMALL, tmp_path / "m", log=lines.append)
    meta = json.loads((out / "reasonrl_build.json").read_text())
    assert meta["sft_steps"] == 3 and meta["best_step"] in (2, 3)
    # the builtin:tiny guarantees: another process, one thread, deterministic algorithms, weights hashed
    assert meta["deterministic"] is True and meta["threads"] == 1 and len(meta["weights_sha256"]) == 64
    assert not torch.are_deterministic_algorithms_enabled()
    assert [ln.split(":")[0].strip() for ln in lines if "sft step" in ln] == ["sft step 2", "sft step 3"]
    model, _ = load_policy(out)
    assert isinstance(model, SSMForCausalLM) and model.config.mixer == "mamba2"
    assert build_tiny_ssm("mamba2", SMALL, out, log=lambda *_: None) == out  # cached: not rebuilt


@pytest.mark.parametrize("mixer", ["mamba", "mamba2", "hf-mamba2"])
def test_grpo_trains_an_ssm_policy_end_to_end(tmp_path, tok, mixer):
    """A few GRPO steps through ``reasonrl train``: the recurrent engine samples, the learner's
    parallel-form log-probs agree with the sampler's, and the weights move. ``hf-mamba2`` is a
    transformers ``Mamba2ForCausalLM`` checkpoint: the learner runs HF's forward, the engine our blocks."""
    from transformers import AutoModelForCausalLM, Mamba2Config, Mamba2ForCausalLM

    from reasonrl.cli.main import main
    from reasonrl.models.ssm import SSMConfig

    torch.manual_seed(0)
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if mixer == "hf-mamba2":
        policy = Mamba2ForCausalLM(Mamba2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, state_size=8,
                                                num_heads=4, head_dim=16, n_groups=1, chunk_size=8, **ids))
    else:
        extra = dict(head_dim=16, chunk_size=8) if mixer == "mamba2" else {}
        policy = SSMForCausalLM(SSMConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, mixer=mixer,
                                          state_size=8, initializer_range=0.2, **ids, **extra))
    d = tmp_path / "policy"
    policy.save_pretrained(d)
    tok.save_pretrained(d)
    over = [f"model.path={d}", f"run.out_dir={tmp_path}", "run.name=t", "run.threads=1", "data.eval_size=4",
            "rollout.n=4", "rollout.max_new_tokens=10", "rollout.micro_batch=6", "trainer.prompts_per_step=3",
            "trainer.steps=2", "trainer.progress=false", "trainer.tensorboard=false", "eval.k=1",
            "eval.sampled=false", "optim.lr=3e-3", "algorithm.name=grpo",
            "reward.functions=[reasonrl_test_rewards:digit_count]"]
    assert main(["train", *over]) == 0
    rows = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert len(steps) == 2
    for r in steps:
        assert r["rollout/logp_mismatch_max"] < 1e-4
    before = AutoModelForCausalLM.from_pretrained(d).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "t" / "final").state_dict()
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path / "t" / "final")) is type(policy)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_trainer_resolves_the_builtin_names(monkeypatch, tmp_path):
    import reasonrl.models.ssm.tiny as ssm_tiny
    from reasonrl.trainer.loop import resolve_model

    calls = []
    monkeypatch.setattr(ssm_tiny, "build_tiny_ssm", lambda kind, log=print: calls.append(kind) or tmp_path)
    assert resolve_model("builtin:tiny-mamba") == tmp_path and resolve_model("builtin:tiny-mamba2") == tmp_path
    assert calls == ["mamba", "mamba2"]


@pytest.mark.slow
def test_grpo_learns_on_an_ssm_policy(tmp_path, tok):
    """A short learning check: GRPO on a dense reward (digits in the response) raises the reward of
    a random tiny Mamba-2 policy (fixed seed; mean of the last 5 steps vs the first 5)."""
    from reasonrl.cli.main import main
    from reasonrl.models.ssm import SSMConfig

    torch.manual_seed(0)
    cfg = SSMConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, mixer="mamba2", state_size=8,
                    head_dim=16, chunk_size=8, initializer_range=0.2, pad_token_id=tok.pad_token_id,
                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    d = tmp_path / "policy"
    SSMForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    over = [f"model.path={d}", f"run.out_dir={tmp_path}", "run.name=t", "run.threads=1", "data.eval_size=4",
            "rollout.n=8", "rollout.max_new_tokens=8", "rollout.micro_batch=32", "trainer.prompts_per_step=4",
            "trainer.steps=30", "trainer.progress=false", "trainer.tensorboard=false", "eval.k=1",
            "eval.sampled=false", "optim.lr=1e-2", "algorithm.name=grpo",
            "reward.functions=[reasonrl_test_rewards:digit_count]", "reward.correctness=0", "reward.format=0"]
    assert main(["train", *over]) == 0
    rows = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward/mean"] for r in rows if "reward/mean" in r]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 1.0, (first, last)
