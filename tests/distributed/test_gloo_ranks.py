"""Two gloo learner ranks without Ray (torch.multiprocessing): DDP gives the single-process loss and grads.

The Ray version (test_ray_equivalence.py) costs a Ray cluster and four actor processes; this test runs
the same learner hooks (trainer/distributed.py) in two plain processes so the default suite stays fast.
"""

import copy
import socket

import torch
import torch.multiprocessing as mp

from reasonrl.config import load_config
from reasonrl.trainer.loop import Trainer
from trainer_fixtures import tiny_overrides

LEARN = ["trainer.mini_batch_prompts=2", "trainer.micro_batch=3", "optim.grad_clip=0", "rollout.n=4",
         "trainer.prompts_per_step=4", "rollout.max_new_tokens=10", "reward.functions=[trainer_fixtures:digit_reward]",
         "reward.correctness=0.0", "data.eval_size=2"]


def _rank(rank: int, world: int, port: int, overrides: list[str], batch_path: str, out_path: str, strategy: str):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
    from reasonrl.threads import apply_thread_policy
    from reasonrl.trainer.distributed import DataParallelLearner, init_process_group

    apply_thread_policy(1)
    init_process_group("gloo", rank, world, "127.0.0.1", port, 120)
    tr = Trainer(load_config(None, overrides), log=lambda *a: None)
    tr.dist = DataParallelLearner(tr.model, strategy)
    if strategy == "fsdp2":
        from reasonrl.trainer.ray_roles import _rebuild_optimizer

        tr.opt = _rebuild_optimizer(tr.opt, list(tr.model.parameters()))
    batch, tasks = torch.load(batch_path, weights_only=False)
    m = tr.update(batch, tasks)
    grads = tr.dist.full_grads(tr.model)
    sd = tr.dist.full_state_dict(tr.model)
    if rank == 0:
        torch.save({"loss": m["actor/loss"], "grads": grads, "state": sd}, out_path)
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ddp_ranks_match_single_process(tmp_path, tiny_model_dir):
    over = tiny_overrides(tiny_model_dir, tmp_path) + LEARN
    local = Trainer(load_config(None, over))
    batch, tasks, _ = local.collect()
    torch.save((copy.deepcopy(batch), tasks), tmp_path / "batch.pt")
    m = local.update(batch, tasks)
    mp.spawn(_rank, args=(2, _free_port(), over, str(tmp_path / "batch.pt"), str(tmp_path / "out.pt"), "ddp"),
             nprocs=2, join=True)
    out = torch.load(tmp_path / "out.pt", weights_only=False)
    assert abs(out["loss"] - m["actor/loss"]) <= 1e-5 * abs(m["actor/loss"]) + 1e-7
    assert any(float(g.abs().max()) > 0 for g in out["grads"].values())
    for name, p in local.model.named_parameters():
        assert torch.allclose(out["grads"][name], p.grad, rtol=1e-4, atol=1e-6), name
    for name, v in local.model.state_dict().items():
        assert torch.allclose(out["state"][name], v, rtol=1e-4, atol=1e-5), name
