"""Mode ``drive`` through the normal trainer: ``reasonrl train configs/drivemoe.yaml``.

The trainer's seams, as for mode ``vla`` (``reasonrl.modes``): ``build_drive_model`` builds the policy
(expert demonstrations, two-stage imitation with optional DAgger rounds; deterministic given the config,
so a resumed run rebuilds the same start before its checkpoint replaces the weights), and
``make_drive_stage`` returns the rollout stage (GRPO groups of noisy-flow episodes from one initial
state) with the trainer's optional hooks ``heldout_tasks`` / ``evaluate`` (noise-free closed-loop
success on the fixed held-out seeds) / ``close``. The learner recomputes log-probs through
``DrivePolicy.sequence_logprobs``; checkpoints are the trainer's (HF ``save_pretrained``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from reasonrl.driving.config import DriveRunConfig, from_trainer_config
from reasonrl.rollout.stage import Collected
from reasonrl.tasks.base import Task


class DriveTokenizer:
    """What the trainer treats as the run's tokenizer: a padding id, display names of the "tokens" (each
    is one denoising step of one policy call) and ``save_pretrained`` next to the weights."""

    pad_token_id = 0
    FILE = "drive_tokenizer.json"

    def __init__(self, flow_steps: int = 10):
        self.flow_steps = flow_steps

    def token_pieces(self, ids: list[int]) -> list[str]:
        return [f"c{j // self.flow_steps}s{j % self.flow_steps} " for j in range(len(ids))]

    def save_pretrained(self, path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / self.FILE).write_text(json.dumps({"flow_steps": self.flow_steps}))

    @classmethod
    def from_pretrained(cls, path) -> "DriveTokenizer":
        return cls(**json.loads((Path(path) / cls.FILE).read_text()))


def init_task(family: str, seed: int) -> Task:
    """An initial state as the trainer's ``Task`` (the simulator is the verifier)."""
    return Task(uid=f"{family}:{seed}", prompt=family, answer="success", verifier="env",
                meta={"family": family, "seed": int(seed)})


def build_drive_model(cfg, log=print, warm_start: bool = True):
    """Mode ``drive``'s policy builder: ``driving.policy.path`` or a fresh policy trained by imitation on
    ``driving.imitation.demos_per_family`` expert episodes per family (stage 1, DAgger rounds, stage 2).
    ``warm_start=False`` (the run resumes from a checkpoint that overwrites every weight) skips the imitation."""
    from reasonrl.driving import train as T
    from reasonrl.driving.envs import DrivePool

    run_cfg = from_trainer_config(cfg)
    if run_cfg.policy.path:
        policy = T.build_policy(run_cfg)
    else:
        data = T.gather_demos(run_cfg.env.families, run_cfg.imitation.demos_per_family, run_cfg.env.duration,
                              offset=run_cfg.train.seed, log=log)
        policy = T.build_policy(run_cfg, data)
        if not warm_start:
            log("drive: resuming from a checkpoint, imitation warm start skipped")
            return policy, DriveTokenizer(policy.config.flow_steps)
        with DrivePool(0, run_cfg.env.duration) as pool:
            hist = T.imitation(policy, data, run_cfg, log=lambda m: None, pool=pool)
        if hist:
            log(f"drive: imitation on {hist[-1]['samples']} samples, {len(hist)} steps, flow loss {hist[-1]['fm']:.4f}")
    return policy, DriveTokenizer(policy.config.flow_steps)


class DriveTrainerStage:
    """The driving rollout stage (``train.DriveRolloutStage``) with the trainer's task objects and hooks."""

    def __init__(self, inner, cfg: DriveRunConfig):
        self.inner, self.cfg = inner, cfg

    def load_weights(self, model) -> None:
        self.inner.load_weights(model)

    def collect(self, n_groups: int, rng: torch.Generator | None = None) -> Collected:
        col = self.inner.collect(n_groups, rng)
        return Collected(batch=col.batch, tasks=[init_task(t["family"], t["seed"]) for t in col.tasks],
                         metrics=col.metrics)

    def heldout_tasks(self) -> list[Task]:
        from reasonrl.driving.train import held_out_inits

        return [init_task(f, s) for f, s in held_out_inits(self.cfg)]

    def evaluate(self, model) -> tuple[dict[str, float], list[bool]]:
        """Noise-free closed-loop ``pass@1`` (= success), collision and progress on the held-out seeds, per
        family too, and per-episode success for the trainer's paired before/after test."""
        from reasonrl.driving.train import closed_loop_eval, held_out_inits

        ev = closed_loop_eval(model, self.inner.pool, held_out_inits(self.cfg))
        out = {"pass@1": ev["success"], "collision": ev["collision"], "progress": ev["progress"]}
        for f, d in ev["per_family"].items():
            out[f"success/{f}"], out[f"collision/{f}"] = d["success"], d["collision"]
        return out, [bool(x) for x in ev["success_vec"]]

    def close(self) -> None:
        self.inner.pool.close()


def make_drive_stage(cfg, model, tokenizer=None, scorer=None):
    """Mode factory ``(cfg, model, tokenizer, scorer) -> RolloutStage``: ``cfg`` is a trainer ``Config`` (its
    ``driving:`` section), a ``DriveRunConfig`` or its dict; the simulator's crash flag and distance are the reward."""
    from reasonrl.driving.envs import DrivePool
    from reasonrl.driving.train import DriveRolloutStage

    if isinstance(cfg, dict):
        cfg = DriveRunConfig.model_validate(cfg)
    run_cfg = cfg if isinstance(cfg, DriveRunConfig) else from_trainer_config(cfg)
    inner = DriveRolloutStage(model, DrivePool(run_cfg.env.n_workers, run_cfg.env.duration), run_cfg)
    return DriveTrainerStage(inner, run_cfg)
