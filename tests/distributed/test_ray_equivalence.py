"""Local Ray: 2 rollout workers + 2 gloo learner ranks give the single-process loss and gradients."""

import copy
import os
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from reasonrl.config import load_config  # noqa: E402
from reasonrl.rollout.sampling import SamplingParams  # noqa: E402
from reasonrl.trainer.loop import Trainer  # noqa: E402
from trainer_fixtures import tiny_overrides  # noqa: E402

# 2 mini-batches per step (the grads compared are the second's, after one optimizer step), micro-batches of 3
# rows so each rank runs several passes and, with GRPO's inactive rows, ranks get unequal shares.
LEARN = ["trainer.mini_batch_prompts=2", "trainer.micro_batch=3", "optim.grad_clip=0", "rollout.n=4",
         "trainer.prompts_per_step=4", "rollout.max_new_tokens=10", "reward.functions=[trainer_fixtures:digit_reward]",
         "reward.correctness=0.0"]
RAY = ["distributed.mode=ray", "distributed.learner_ranks=2", "distributed.rollout_workers=2", "distributed.num_cpus=4"]


def _compare(tmp_path, tiny_model_dir, strategy: str, placement: str, monkeypatch):
    # actors import the test reward function: give them this directory on PYTHONPATH (forwarded by ray_roles)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parents[1] / "trainer"),
                                                      os.environ.get("PYTHONPATH", "")]))
    base = tiny_overrides(tiny_model_dir, tmp_path, name=strategy) + LEARN
    local = Trainer(load_config(None, base))
    t0 = time.perf_counter()
    dist = Trainer(load_config(None, base + RAY + [f"distributed.strategy={strategy}",
                                                   f"distributed.placement={placement}"]))
    roles = dist.scale.roles
    try:
        print(f"ray roles up in {time.perf_counter() - t0:.1f}s")
        # the rollout workers: greedy (top_k=1) output equals one local engine's, row layout included
        prompts = ["1+2=", "3+4=", "5+6=", "7+8=", "9+1="]
        sp = SamplingParams(n=2, top_k=1, max_new_tokens=6, seed=3)
        a, b = roles.engine.generate(prompts, sp, [10, 11, 12, 13, 14]), local.engine.generate(prompts, sp, [10, 11, 12, 13, 14])
        assert a.response_text == b.response_text and a.group_ids.tolist() == b.group_ids.tolist()
        assert a.task_index == b.task_index and torch.allclose(a.rollout_logp, b.rollout_logp, atol=1e-5)

        batch, tasks, _ = dist.collect()  # in ray mode the training stage samples on the two rollout workers
        assert len(batch) == 16 and batch.group_ids.tolist() == [g for g in range(4) for _ in range(4)]
        m_local = local.update(copy.deepcopy(batch), tasks)
        m_dist = roles.update(batch, tasks, 0)
        assert m_dist["actor/loss"] == pytest.approx(m_local["actor/loss"], rel=1e-5, abs=1e-7)
        grads = roles.full_grads()
        for name, p in local.model.named_parameters():
            assert torch.allclose(grads[name], p.grad, rtol=1e-4, atol=1e-6), name
        assert any(float(g.abs().max()) > 0 for g in grads.values())  # a real gradient, not all zeros
        sd = roles.state_dict()
        for name, v in local.model.state_dict().items():
            assert torch.allclose(sd[name], v, rtol=1e-4, atol=1e-5), name
        # explicit weight sync learner -> engines: the workers now sample from the updated policy
        roles.engine.load_weights(sd)
        assert roles.engine.last_load_bytes == sum(v.numel() * v.element_size() for v in sd.values())
        local.model.load_state_dict(sd)
        a = roles.engine.generate(prompts, sp, [10, 11, 12, 13, 14])
        b = local.engine.generate(prompts, sp, [10, 11, 12, 13, 14])
        assert a.response_text == b.response_text
    finally:
        dist.scale.close()


@pytest.mark.slow  # ~80-110 CPU-seconds (Ray + 4 actor processes); test_gloo_ranks.py covers DDP in the default suite
def test_ddp_matches_single_process(tmp_path, tiny_model_dir, monkeypatch):
    _compare(tmp_path, tiny_model_dir, "ddp", "colocated", monkeypatch)


@pytest.mark.slow
def test_fsdp2_matches_single_process(tmp_path, tiny_model_dir, monkeypatch):
    _compare(tmp_path, tiny_model_dir, "fsdp2", "disaggregated", monkeypatch)
