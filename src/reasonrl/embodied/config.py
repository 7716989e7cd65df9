"""Typed configuration of an embodied (VLA) run: ``configs/vla_fetch.yaml``; every field documented once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvSection(_S):
    tasks: list[str] = Field(["reach"], description="Fetch tasks trained and evaluated (reach, push, pick_place).")
    max_steps: int = Field(50, ge=1, description="Environment step limit per episode (Fetch's own limit is 50).")
    chunk_len: int = Field(4, ge=1, description="Actions per policy call (executed open loop, early stop on success).")
    image_size: int = Field(0, ge=0, description="Camera image side in pixels fed to the policy (0 = no camera).")
    n_workers: int = Field(2, ge=0, description="Environment worker processes (0 = step in the learner's process).")

    @field_validator("tasks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from reasonrl.embodied.envs import TASKS

        bad = [t for t in v if t not in TASKS]
        if bad or not v:
            raise ValueError(f"unknown task(s) {bad or v}; valid: {', '.join(TASKS)}")
        return v


class PolicySection(_S):
    d_model: int = Field(64, ge=8, description="Backbone width.")
    n_layer: int = Field(2, ge=1, description="Causal transformer layers.")
    n_head: int = Field(4, ge=1, description="Attention heads.")
    n_bins: int = Field(256, ge=2, description="Action bins per dimension (tokens per action dimension).")
    action_norm: Literal["bounds", "q99"] = Field("bounds", description=(
        "Action normalisation: the action space's bounds, or q01/q99 of the demonstrations (OpenVLA's; with one "
        "demonstration it cannot express actions the demo never took)."))
    head: Literal["bins", "gaussian"] = Field("bins", description=(
        "Action-token head: 'bins' = a free logit per bin (OpenVLA); 'gaussian' = a discretised Gaussian over the "
        "same bins (mean and width per token), so credit for one bin also reaches its neighbours."))
    min_sigma: float = Field(0.05, gt=0, description="Gaussian head: smallest width, in normalised action units [-1, 1].")
    learn_sigma: bool = Field(True, description=(
        "Gaussian head: learn the width per token (True) or fix it at min_sigma (False). With a learned width, "
        "GRPO's cheapest way to raise sampled success is to widen it, which the greedy policy never sees."))
    vision_encoder: str | None = Field(None, description="Path of a transformers vision model (None = small CNN).")
    path: str | None = Field(None, description="Start from this saved policy instead of a fresh one.")


class SFTSection(_S):
    demos_per_task: int = Field(1, ge=1, description="Scripted-expert demonstrations per task for the warm start.")
    augment: int = Field(0, ge=0, description=(
        "Symmetry copies per FetchReach demonstration (random rotation and scale about the start; "
        "train.augment_demos); 0 = the demonstrations only."))
    steps: int = Field(150, ge=0, description="Behaviour-cloning optimizer steps (full batch of demonstrations).")
    lr: float = Field(1e-3, gt=0, description="Behaviour-cloning learning rate.")


class RolloutSection(_S):
    n: int = Field(8, ge=2, description="Trajectories per initial state (the GRPO group).")
    groups_per_step: int = Field(8, ge=1, description="Initial states (groups) kept per training step.")
    temperature: float = Field(1.6, gt=0, description="Rollout sampling temperature (SimpleVLA-RL: 1.6).")
    accuracy_low: float = Field(0.1, ge=0, le=1, description="Dynamic sampling: drop groups with success rate below.")
    accuracy_high: float = Field(0.9, ge=0, le=1, description="Dynamic sampling: drop groups with success rate above.")
    max_rounds: int = Field(4, ge=1, description="Sampling rounds per step to fill the kept groups (then go on short).")


class TrainSection(_S):
    steps: int = Field(20, ge=0, description="GRPO steps (one rollout batch each).")
    epochs: int = Field(1, ge=1, description="Passes over each batch.")
    mini_batches: int = Field(1, ge=1, description="Optimizer steps per epoch (groups split evenly).")
    micro_batch: int = Field(0, ge=0, description="Rows per forward/backward slice (0 = whole mini-batch).")
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate (constant).")
    betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas (the text trainer's default).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, ge=0, description="Global gradient-norm clip (0 = off).")
    seed: int = Field(0, description="Seed of the policy init, demonstrations' order and rollout sampling.")


class EvalSection(_S):
    states_per_task: int = Field(128, ge=1, description="Fixed held-out initial states per task (greedy decoding).")
    seed_base: int = Field(1_000_000_000, description="Held-out seeds are seed_base + i; training seeds stay below it.")
    strip_episodes: int = Field(4, ge=0, description=(
        "Greedy held-out episodes rendered into <run>/episodes/{before,after}.png/.gif at each evaluation (0 = off)."))
    strip_size: int = Field(96, ge=16, description="Side in pixels of the rendered strip frames.")


class EmbodiedSection(_S):
    """The ``embodied:`` section of a trainer config (``reasonrl train`` with ``rollout.mode=vla``): what the
    text trainer has no field for. Group size, temperature, steps, optimizer and recipe come from the
    trainer's own sections (``rollout``, ``trainer``, ``optim``, ``algorithm``)."""

    env: EnvSection = EnvSection()
    policy: PolicySection = PolicySection()
    sft: SFTSection = SFTSection()
    eval: EvalSection = EvalSection()


class RecipeField(_S):
    """The ``algorithm`` field of the embodied drivers' configs (VLA, driving): SimpleVLA-RL's clip 0.2/0.28
    and token-mean aggregation by default."""

    algorithm: dict[str, Any] = Field(default_factory=lambda: {"name": "grpo", "clip_low": 0.2, "clip_high": 0.28,
                                                               "loss_agg": "token-mean"},
                                      description="Recipe and its parameters (any registered GRPO-family recipe).")

    @field_validator("algorithm")
    @classmethod
    def _recipe(cls, v: dict[str, Any]) -> dict[str, Any]:
        from reasonrl.algorithms.recipes import validate_algorithm_params

        return validate_algorithm_params(v)


def load_driver_config(model: type[BaseModel], raw: dict[str, Any], overrides, what: str, example: str):
    """``raw`` (from YAML) plus ``section.field=value`` overrides validated as ``model``; one clear error."""
    for ov in overrides:
        key, eq, val = ov.partition("=")
        if not eq:
            raise ValueError(f"override {ov!r} must look like section.field=value, e.g. {example}")
        sec, dot, fld = key.partition(".")
        if dot:
            raw.setdefault(sec, {})[fld] = yaml.safe_load(val)
        else:
            raw[key] = yaml.safe_load(val)
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ValueError(f"invalid {what}: {msg}") from None


class VLARunConfig(EmbodiedSection, RecipeField):
    """The thin driver's and ``reasonrl bench vla``'s config: the embodied sections plus rollout/train/recipe."""

    rollout: RolloutSection = RolloutSection()
    train: TrainSection = TrainSection()
    out: str = Field("runs/vla", description="Output directory.")


def load_vla_config(path: str | Path | None, overrides: list[str] | tuple = ()) -> VLARunConfig:
    """YAML file (or defaults) plus ``section.field=value`` overrides; one clear error on bad input."""
    raw: dict[str, Any] = yaml.safe_load(Path(path).read_text()) or {} if path else {}
    if "embodied" in raw:
        raise ValueError(f"{path} is a trainer config (it has an `embodied:` section): run it with "
                         f"`reasonrl train {path}`; the thin driver takes the VLARunConfig layout (docs/embodied.md)")
    return load_driver_config(VLARunConfig, raw, overrides, f"VLA config {path or '(defaults)'}", "train.steps=10")


def validate_embodied(v: dict[str, Any] | None) -> dict[str, Any] | None:
    """The trainer config's ``embodied:`` section checked at load time (``reasonrl.config``); returned as a
    plain dict with every default filled in."""
    if v is None:
        return None
    return EmbodiedSection.model_validate(v).model_dump()


def from_trainer_config(cfg) -> VLARunConfig:
    """A trainer ``Config`` with ``rollout.mode=vla`` as the stage's ``VLARunConfig``.

    Dynamic sampling is the recipe's job there (``algorithm.name=dapo`` drops groups with equal rewards,
    which with ``rollout.n=8`` is exactly SimpleVLA-RL's [0.1, 0.9] band), so the stage keeps every group.
    """
    e = cfg.embodied or {}
    o = cfg.optim
    return VLARunConfig.model_validate({
        **{k: e[k] for k in ("env", "policy", "sft", "eval") if k in e},
        "rollout": {"n": cfg.rollout.n, "groups_per_step": cfg.trainer.prompts_per_step,
                    "temperature": cfg.rollout.temperature, "accuracy_low": 0.0, "accuracy_high": 1.0, "max_rounds": 1},
        "train": {"steps": cfg.trainer.steps, "epochs": cfg.trainer.epochs, "lr": o.lr, "betas": o.betas,
                  "weight_decay": o.weight_decay, "grad_clip": o.grad_clip, "seed": cfg.run.seed},
        "algorithm": cfg.algorithm, "out": str(cfg.run_dir)})
