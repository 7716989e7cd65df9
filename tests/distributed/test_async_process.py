"""Async rollout in its own process (async_rollout.process): same schedule, same batches, same weights
as the thread producer, bounded staleness, exact resume, and the child process is gone afterwards."""

import shutil

import pytest
import torch

from reasonrl.config import load_config
from reasonrl.trainer.loop import Trainer
from trainer_fixtures import tiny_overrides

FAST = ["eval.sampled=false", "data.eval_size=2", "trainer.tensorboard=false", "rollout.max_new_tokens=8",
        "reward.functions=[trainer_fixtures:digit_reward]", "reward.correctness=0.0", "async_rollout.enabled=true"]


def _run(tmp_path, model_dir, name, extra):
    tr = Trainer(load_config(None, tiny_overrides(model_dir, tmp_path, name=name) + FAST + extra))
    start = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.run()
    return tr, start


def test_process_producer_trains_like_the_thread_producer(tmp_path, tiny_model_dir):
    threads_before = torch.get_num_threads()
    thread, start = _run(tmp_path, tiny_model_dir, "thread", ["trainer.steps=4"])
    proc, _ = _run(tmp_path, tiny_model_dir, "proc", ["trainer.steps=4", "async_rollout.process=true"])
    assert proc.scale.versions == thread.scale.versions == [(0, 0), (1, 0), (2, 1), (3, 2)]
    assert all(step - v <= 1 for step, v in proc.scale.versions)  # staleness bound 1
    sampler = proc.scale.async_.sampler
    assert type(sampler).__name__ == "ProcessSampler" and not sampler._proc.is_alive()  # closed with the run
    assert torch.get_num_threads() == threads_before  # the learner's thread share ends with the child
    moved = False
    for k, a in thread.model.state_dict().items():
        b = proc.model.state_dict()[k]
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=k)  # same batches, same updates
        moved |= not torch.equal(a, start[k])
    assert moved  # it trained


def test_process_producer_resume_is_exact(tmp_path, tiny_model_dir):
    over = ["async_rollout.process=true", "trainer.steps=4", "trainer.save_every=2", "trainer.keep_last=2"]
    full, _ = _run(tmp_path, tiny_model_dir, "full", over)
    shutil.rmtree(full.run_dir / "checkpoints" / "step_4")
    resumed, _ = _run(tmp_path, tiny_model_dir, "full", over + ["trainer.resume=true"])
    assert resumed.scale.versions == [(2, 1), (3, 2)]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(b, a, atol=0, rtol=0, msg=name)


def test_rollout_process_failure_is_reported(tmp_path, tiny_model_dir):
    from reasonrl.trainer.async_rollout import process_sampler

    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path) + FAST + ["async_rollout.process=true"])
    tr = Trainer(cfg)
    torch.set_num_threads(2)
    try:
        s = process_sampler(cfg, torch.nn.Linear(2, 2), tr.tok)  # not a causal LM: the child cannot build its stage
        assert torch.get_num_threads() == 1  # 2 threads split: 1 for the rollout process, 1 for the learner
        with pytest.raises(RuntimeError, match="rollout process failed"):
            s.collect(torch.Generator())
        s.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
        tr.scale.close()
