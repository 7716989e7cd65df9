"""TTRL in the trainer: gold answers never reach the training signal, the policy learns to agree with its
majority, config validation, and `reasonrl train configs/ttrl_tiny.yaml` end to end (random tiny model)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from reasonrl.cli.main import main
from reasonrl.config import ConfigError, load_config

from trainer_fixtures import tiny_overrides

TTRL_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "ttrl_tiny.yaml"


def _scripted_answers(tr, classes: int = 3) -> None:
    """Make the random model's answers a function of its first generated token, so votes vary and the
    pseudo-rewards depend on what the policy sampled (the loss still sees the real tokens)."""
    generate = tr.engine.generate

    def gen(prompts, params, **kw):
        ro = generate(prompts, params, **kw)
        ro.response_text = [f"so \\boxed{{{int(ids[0]) % classes}}}" for ids in ro.response_ids]
        return ro

    tr.engine.generate = gen


def _trainer(model_dir, tmp_path, name, extra=()):
    from reasonrl.trainer.loop import Trainer

    over = tiny_overrides(model_dir, tmp_path, name) + ["ttrl.enabled=true", "ttrl.n_votes=6", *extra]
    tr = Trainer(load_config(None, over), log=lambda *a: None)
    _scripted_answers(tr)
    return tr


def _train(tr, steps):
    log = []
    for _ in range(steps):
        batch, tasks, m = tr.collect()
        log.append((batch.rewards.clone(), [t.answer for t in tasks], m))
        m.update(tr.update(batch, tasks))
        tr.step += 1
    return log


def test_scrambled_gold_gives_identical_rewards_and_updates(tiny_model_dir, tmp_path, monkeypatch):
    # one run after the other: each Trainer re-seeds the process-wide RNG, so both see the same samples
    a = _trainer(tiny_model_dir, tmp_path, "a")
    init = {k: v.clone() for k, v in a.model.state_dict().items()}
    la = _train(a, 3)
    import reasonrl.eval.runner as runner

    heldout = runner.heldout_tasks
    monkeypatch.setattr(runner, "heldout_tasks", lambda cfg: [replace(t, answer="1") for t in heldout(cfg)])
    b = _trainer(tiny_model_dir, tmp_path, "b")  # the same prompts, different "gold" (training and evaluation)
    monkeypatch.undo()
    assert [t.prompt for t in a.test_tasks] == [t.prompt for t in b.test_tasks]
    assert [t.answer for t in a.test_tasks] != [t.answer for t in b.test_tasks]
    lb = _train(b, 3)
    for (ra, ta, ma), (rb, tb, mb) in zip(la, lb):
        assert torch.equal(ra, rb)
        assert set(ta) == set(tb) == {""}  # the training path only ever sees blanked answers
        assert ma["ttrl/majority_ratio"] == mb["ttrl/majority_ratio"]
    # the gold was really read (for metrics only): arithmetic answers never equal a 0/1/2 class, "1" sometimes does
    assert all(m["ttrl/label_accuracy"] == 0.0 for _, _, m in la)
    assert any(m["ttrl/label_accuracy"] > 0.0 for _, _, m in lb)
    pa, pb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], init[k]) for k in pa)  # the updates were not no-ops


def test_policy_learns_to_agree_with_its_majority(tiny_model_dir, tmp_path):
    """Majority-vote rewards sharpen the policy toward its own consensus: majority_ratio must rise."""
    tr = _trainer(tiny_model_dir, tmp_path, "learn", ["optim.lr=3e-2", "trainer.prompts_per_step=4",
                                                         "rollout.max_new_tokens=2"])
    log = _train(tr, 30)
    ratio = [m["ttrl/majority_ratio"] for _, _, m in log]
    first, last = sum(ratio[:5]) / 5, sum(ratio[-5:]) / 5
    assert last > first + 0.15, ratio


def test_ttrl_config_validation():
    with pytest.raises(ConfigError, match="ttrl.n_votes=4 is smaller than rollout.n=8"):
        load_config(None, ["ttrl.enabled=true", "ttrl.n_votes=4", "rollout.n=8"])
    with pytest.raises(ConfigError, match="reward.functions is not allowed"):
        load_config(None, ["ttrl.enabled=true", "reward.functions=[trainer_fixtures:digit_reward]"])
    with pytest.raises(ConfigError, match="algorithm.name=hpt trains on demonstrations"):
        load_config(None, ["ttrl.enabled=true", "algorithm.name=hpt"])
    with pytest.raises(ConfigError, match="ttrl.prompts"):
        load_config(None, ["ttrl.enabled=true", "ttrl.prompts=test"])
    cfg = load_config(TTRL_CONFIG)
    assert cfg.ttrl.enabled and cfg.ttrl.n_votes >= cfg.rollout.n and cfg.ttrl.prompts == "heldout"


def test_train_cli_with_shipped_ttrl_config(tiny_model_dir, tmp_path):
    over = [f"model.path={tiny_model_dir}", f"run.out_dir={tmp_path}", "run.name=t", "run.threads=1",
            "data.eval_size=6", "rollout.n=3", "ttrl.n_votes=5", "rollout.max_new_tokens=10", "trainer.prompts_per_step=3",
            "trainer.steps=2", "trainer.eval_every=0", "trainer.progress=false", "trainer.tensorboard=false", "eval.k=2"]
    assert main(["train", str(TTRL_CONFIG), *over]) == 0
    run = tmp_path / "t"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("ttrl/label_accuracy", "ttrl/reward_accuracy", "ttrl/majority_ratio", "ttrl/ground_truth_ratio",
                "ttrl/majority_voting_reward", "ttrl/pass@5", "ttrl/post_reward_accuracy",
                "ttrl/post_ground_truth_ratio", "ttrl/post_pass@3"):
        assert key in steps[0], key
    assert [r["step"] for r in rows if "eval/pass@1" in r] == [0, 2]
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["answer"] == "" for s in samples)  # logged training samples carry no label
    assert (run / "final" / "config.json").exists()
