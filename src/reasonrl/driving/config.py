"""Typed configuration of a DriveMoE run (``configs/drivemoe.yaml``); every field documented once.

Section names ``train`` and ``rollout`` carry the fields the embodied GRPO learner step reads
(``reasonrl.embodied.train.grpo_update``), so the RL stage reuses that learner unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from reasonrl.embodied.config import RecipeField, load_driver_config


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvSection(_S):
    families: list[str] = Field(["highway", "merge", "roundabout"], description="Scenario families (highway, merge, roundabout).")
    duration: float = Field(10.0, gt=0, description="Episode length in simulated seconds (2 policy calls per second).")
    n_workers: int = Field(0, ge=0, description="Environment worker processes (0 = step in the learner's process).")

    @field_validator("families")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from reasonrl.driving.envs import FAMILIES

        bad = [f for f in v if f not in FAMILIES]
        if bad or not v:
            raise ValueError(f"unknown driving family {bad or v}; valid: {', '.join(FAMILIES)}")
        return v


class PolicySection(_S):
    variant: Literal["dense", "vision_moe", "full_moe"] = Field("full_moe", description=(
        "dense (fixed front view, dense FFNs), vision_moe (camera router), full_moe (camera router + skill action MoE)."))
    d_model: int = Field(48, ge=8, description="Width of every token.")
    n_layers: int = Field(3, ge=1, description="Action-expert blocks.")
    n_moe_layers: int = Field(2, ge=1, description="Last blocks whose FFN is the skill MoE (full_moe).")
    moe_top_k: int = Field(2, ge=1, description="Skill experts mixed per call (top-k, renormalised).")
    n_shared: int = Field(1, ge=0, description="Shared experts (always on).")
    expert_hidden: int = Field(48, ge=4, description="Hidden width of one expert FFN (dense FFN = (k + shared) x this).")
    flow_steps: int = Field(10, ge=1, description="Euler steps at inference (pi0: 10).")
    class_weight_power: float = Field(0.5, ge=0, description=(
        "Router focal-loss class weights = label count ** -power: 1 = DriveMoE's inverse frequency (pushed our "
        "routers below the majority-label rate), 0.5 = square-root tempered, 0 = unweighted."))
    path: str | None = Field(None, description="Start from this saved policy instead of a fresh one.")


class ImitationSection(_S):
    demos_per_family: int = Field(24, ge=1, description="Expert (IDM/MOBIL + give-way) episodes per family.")
    stage1_steps: int = Field(400, ge=0, description="Stage 1 optimizer steps: teacher-forced camera routing, lambda 10.")
    stage2_steps: int = Field(200, ge=0, description="Stage 2 steps: Gumbel straight-through camera routing, lambda 5.")
    batch: int = Field(64, ge=1, description="Samples per imitation step.")
    lr: float = Field(1e-3, gt=0, description="Stage 1 learning rate (stage 2 uses a tenth of it, as DriveMoE does).")
    dagger_rounds: int = Field(0, ge=0, description=(
        "DAgger rounds after stage 1: the policy drives, the expert relabels the states it visits, the data grows."))
    dagger_seeds_per_family: int = Field(8, ge=1, description="Episodes per family per DAgger round.")
    dagger_steps: int = Field(200, ge=0, description="Stage-1 steps on the aggregated data after each DAgger round.")


class RolloutSection(_S):
    n: int = Field(6, ge=2, description="Episodes per initial state (the GRPO group).")
    groups_per_step: int = Field(4, ge=1, description="Initial states per RL step.")
    noise: float = Field(0.08, gt=0, description="Std of the Euler-step noise (normalised units) that makes the flow head a stochastic policy.")
    temperature: float = Field(1.0, gt=0, description="Unused by the flow head (its exploration is `noise`); kept for the shared learner.")


class TrainSection(_S):
    steps: int = Field(4, ge=0, description="GRPO steps (one rollout batch each).")
    epochs: int = Field(2, ge=1, description="Passes over each batch.")
    mini_batches: int = Field(2, ge=1, description="Optimizer steps per epoch (groups split evenly).")
    micro_batch: int = Field(0, ge=0, description="Rows per forward/backward slice (0 = whole mini-batch).")
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate of the RL stage (per-step Gaussians are narrow).")
    betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, ge=0, description="Global gradient-norm clip (0 = off).")
    seed: int = Field(0, description="Seed of the policy init, demonstrations' order and rollout noise.")
    crash_weight: float = Field(1.0, ge=0, description="Reward = crash_weight * 1[no crash] + progress.")


class EvalSection(_S):
    seeds_per_family: int = Field(20, ge=1, description="Fixed held-out initial states per family.")
    seed_base: int = Field(1_000_000, description="Held-out seeds are seed_base + i; demonstrations and RL stay below.")


class DriveRunConfig(RecipeField):
    env: EnvSection = EnvSection()
    policy: PolicySection = PolicySection()
    imitation: ImitationSection = ImitationSection()
    rollout: RolloutSection = RolloutSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    out: str = Field("runs/drivemoe", description="Output directory.")


class DrivingSection(_S):
    """The ``driving:`` section of a trainer config (``reasonrl train`` with ``rollout.mode=drive``): what the
    trainer has no field for. Group size (``rollout.n``), groups per step (``trainer.prompts_per_step``),
    steps, epochs, optimizer and recipe come from the trainer's own sections."""

    env: EnvSection = EnvSection()
    policy: PolicySection = PolicySection()
    imitation: ImitationSection = ImitationSection()
    eval: EvalSection = EvalSection()
    noise: float = Field(0.08, gt=0, description="Euler-step noise of the stochastic flow policy during RL rollouts.")
    crash_weight: float = Field(1.0, ge=0, description="Reward = crash_weight * 1[no crash] + progress.")


def validate_driving(v: dict[str, Any] | None) -> dict[str, Any] | None:
    """The trainer config's ``driving:`` section checked at load time, returned with every default filled in."""
    return None if v is None else DrivingSection.model_validate(v).model_dump()


def from_trainer_config(cfg) -> DriveRunConfig:
    """A trainer ``Config`` with ``rollout.mode=drive`` as the driving stage's ``DriveRunConfig``."""
    d = DrivingSection.model_validate(cfg.driving or {})
    o = cfg.optim
    t = cfg.trainer
    mini = t.mini_batch_prompts or t.prompts_per_step
    return DriveRunConfig.model_validate({
        "env": d.env, "policy": d.policy, "imitation": d.imitation, "eval": d.eval,
        "rollout": {"n": cfg.rollout.n, "groups_per_step": t.prompts_per_step, "noise": d.noise},
        "train": {"steps": t.steps, "epochs": t.epochs, "mini_batches": max(1, t.prompts_per_step // mini), "lr": o.lr,
                  "betas": o.betas, "weight_decay": o.weight_decay, "grad_clip": o.grad_clip, "seed": cfg.run.seed,
                  "crash_weight": d.crash_weight},
        "algorithm": cfg.algorithm, "out": str(cfg.run_dir)})


def load_drive_config(path: str | Path | None, overrides: list[str] | tuple = (),
                      trainer_config_loader=None) -> DriveRunConfig:
    """YAML file (or defaults) plus ``section.field=value`` overrides; one clear error on bad input. A trainer
    config (one with a ``driving:`` section, e.g. ``configs/drivemoe.yaml``) is read by ``trainer_config_loader``
    (``reasonrl.config.load_config``, passed in by the caller so this package does not import the trainer
    config) and converted by :func:`from_trainer_config`, so the bench and ``reasonrl train`` share one file."""
    raw: dict[str, Any] = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    if "driving" in raw:
        if trainer_config_loader is None:
            raise ValueError(f"{path} is a trainer config (it has a `driving:` section): run it with "
                             f"`reasonrl train {path}` or `reasonrl bench drivemoe bench.config={path}`")
        raw = from_trainer_config(trainer_config_loader(path)).model_dump()
    return load_driver_config(DriveRunConfig, raw, overrides, f"drivemoe config {path or '(defaults)'}", "train.steps=2")
