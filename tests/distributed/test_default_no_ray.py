"""Single-machine defaults stay simple: a default run never imports Ray or starts a thread of ours."""

import subprocess
import sys
import textwrap

import pytest

from reasonrl.config import ConfigError, load_config


def test_default_training_run_never_imports_ray(tmp_path, tiny_model_dir):
    code = textwrap.dedent(f"""
        import sys, threading
        from reasonrl.config import load_config
        from reasonrl.trainer.loop import Trainer
        cfg = load_config(None, ["model.path={tiny_model_dir}", "run.out_dir={tmp_path}", "run.threads=1",
                                 "data.eval_size=2", "rollout.n=2", "rollout.max_new_tokens=4", "trainer.prompts_per_step=2",
                                 "trainer.steps=1", "trainer.progress=false", "eval.sampled=false", "trainer.tensorboard=false"])
        tr = Trainer(cfg)
        tr.run()
        ours = [t.name for t in threading.enumerate() if t.name.startswith("reasonrl-")]
        print("RAY_IMPORTED", "ray" in sys.modules, "OUR_THREADS", ours, "SCALE", tr.scale.roles, tr.scale.async_)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "RAY_IMPORTED False OUR_THREADS [] SCALE None None" in p.stdout


def test_scale_config_validation():
    with pytest.raises(ConfigError, match="distributed.mode=ray"):
        load_config(None, ["distributed.learner_ranks=2"])
    with pytest.raises(ConfigError, match="distributed.strategy"):
        load_config(None, ["distributed.strategy=zero3"])
    with pytest.raises(ConfigError, match="async_rollout.max_staleness"):
        load_config(None, ["async_rollout.max_staleness=-1"])
    with pytest.raises(ConfigError, match="async_rollout.is_cap"):
        load_config(None, ["async_rollout.is_cap=0"])
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="backend=nccl needs CUDA"):
            load_config(None, ["distributed.mode=ray", "distributed.backend=nccl", "distributed.learner_ranks=2"])
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="trainer.save_every"):
        load_config(None, ["distributed.mode=ray", "trainer.steps=4", "trainer.save_every=2"])
    cfg = load_config(None, ["distributed.mode=ray", "distributed.learner_ranks=2", "distributed.strategy=fsdp2"])
    assert cfg.distributed.placement == "colocated" and cfg.async_rollout.enabled is False
