"""LatentSeek (arXiv 2505.13308): test-time policy gradient on the latent states of a model's answer.

Spec: ``specs/embodied_latent_ssm.md`` §1. For one problem, with the model frozen:

1. greedy chain-of-thought answer x_1..x_T; its latents z_t are the last-layer, post-norm hidden
   states (the inputs of the LM head) at the positions that predict x_t;
2. keep the first ``U = min(int(rho * T), max_latents)`` latents (U = 0: return the CoT answer);
3. score the answer (reward r <= 0); while r <= threshold and iterations < max_iters:
   one Adam step on ``loss = -r_prev * sum_t log(softmax(lm_head(z_t)) + 1e-8)[argmax]``, decode
   ``argmax lm_head(z_t)`` for t <= U, append those tokens to the prompt, regenerate the rest greedily
   with the unchanged model, score again.

Paper vs code (we follow the code, as the spec does): the paper samples x_t ~ pi(x | z_t) and writes
plain gradient ascent; the code takes the argmax token and Adam. Every reward is <= 0, so the step
*lowers* the log-probability of the current prefix until the reward clears the threshold; r = 0
gives no gradient. z is only ever decoded by the LM head, never fed back into the transformer.

Ours differs from the reference in cost, not maths: the CoT pass and every regeneration use the KV
cache, problems are batched (Adam is element-wise, so one optimiser over the stacked latents of many
problems is exactly one optimiser per problem), and the four verifier prompts run as one batch.
The regenerated tail gets ``max_new_tokens - U`` tokens so every answer has the same length limit as
the baselines (the reference gives the tail another full budget).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from reasonrl.rollout.hf_engine import HFEngine
from reasonrl.rollout.sampling import SamplingParams
from reasonrl.tasks import Task
from reasonrl.testtime.grading import Fallback, grade
from reasonrl.testtime.verifier import DEFAULT_WEIGHTS, PROMPTS, parse_verdict, self_reward, verifier_prompt

PROB_EPS = 1e-8  # added to the softmax before the log, as in the reference code


class LatentSeekConfig(BaseModel):
    """Settings of one LatentSeek run (CLI: ``reasonrl latentseek ... latentseek.<field>=value``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    model: str = Field("builtin:tiny", description="Local HF causal-LM directory, builtin:tiny or builtin:smollm2.")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Model parameter dtype (latents stay float32).")
    template: Literal["auto", "plain", "boxed", "chat"] = Field("auto", description=(
        "Prompt template; 'auto' = 'chat' when the tokenizer has a chat template, else 'plain'."))
    tasks: str = Field("builtin:arith", description="Problems: builtin:<family>, reasoning_gym:<name> or a file path.")
    split: Literal["train", "test"] = Field("test", description="Split of the problem source.")
    n_problems: int = Field(50, ge=1, description="Number of problems.")
    difficulty: int | None = Field(None, description="Difficulty knob of built-in families (arith: number of operations).")
    seed: int = Field(0, ge=0, description="Problem draw (seed + 10000, as the trainer's held-out set) and baseline sampling.")
    reward: Literal["self", "oracle"] = Field("self", description=(
        "'self': the model grades its own answer with four weighted verifier prompts; 'oracle' (the paper's "
        "PSRM): 0 if the task's verifier accepts the answer, else -1."))
    rho: float = Field(0.1, gt=0, le=1, description="Fraction of the answer's latents optimised (reference default 0.1, example script 0.2).")
    max_latents: int = Field(300, ge=1, description="Cap on the number of optimised latents (reference: 300).")
    lr: float = Field(0.03, gt=0, description="Adam learning rate on the latents (reference default 0.03, example script 0.05).")
    max_iters: int = Field(10, ge=0, description="Iteration budget K (gradient steps per problem).")
    threshold: float = Field(-0.2, le=0, description="Stop once the reward is strictly above this (reference -0.2).")
    grad_clip: float = Field(0.0, ge=0, description="Per-problem gradient-norm clip on the latents; 0 = off (reference default).")
    max_new_tokens: int = Field(1024, ge=1, description=(
        "Answer length limit (reference 1024); clipped to the model's context. The regenerated tail gets "
        "max_new_tokens - U."))
    verifier_max_new_tokens: int = Field(256, ge=1, description=(
        "Reply limit of each self-reward verifier generation (reference 4096; clipped to the context)."))
    verifier_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS), description=(
        "Self-reward checks and weights (reference: calculation_check 2, answer_correct 1, answer_completeness 2, "
        "understanding_check 1)."))
    format_rule: bool = Field(False, description="Self-reward: add 2 to the failed weight when the answer has no \\boxed{}.")
    answer_fallback: Literal["none", "last_number"] = Field("none", description=(
        "Grading of answers without \\boxed{}: 'none' = wrong, 'last_number' = grade the last number (all arms alike)."))
    baselines: bool = Field(True, description="Also run majority vote and oracle best-of-n from sampled generations.")
    baseline_n: int = Field(0, ge=0, description="Samples per problem for the baselines; 0 = 1 + max_iters (LatentSeek's maximum budget).")
    baseline_temperature: float = Field(1.0, gt=0, description="Sampling temperature of the baselines.")
    batch_problems: int = Field(32, ge=1, description="Problems optimised together (one batched loop).")
    micro_batch: int = Field(64, ge=1, description="Max sequences per generation forward.")
    threads: int = Field(0, ge=0, description="torch threads; 0 = REASONRL_THREADS or min(2, cores).")
    out: str = Field("runs/latentseek", description="Output directory (summary.json, problems.jsonl).")
    progress: bool = Field(True, description="Show a progress bar.")

    @field_validator("verifier_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if k not in PROMPTS]
        if bad:
            raise ValueError(f"unknown verifier checks {bad}; valid: {', '.join(PROMPTS)}")
        if any(not math.isfinite(w) or w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError(f"weights must be finite, >= 0 and sum to > 0, got {v}")
        return v

    @property
    def n_baseline(self) -> int:
        return self.baseline_n or 1 + self.max_iters


# ------------------------------------------------------------------------------ pure functions
def num_latents(length: int, rho: float, cap: int = 300) -> int:
    """U = min(int(rho * T), cap): latents optimised for an answer of T tokens (0 = keep the CoT answer)."""
    if length < 0:
        raise ValueError(f"answer length must be >= 0, got {length}")
    return min(int(rho * length), cap)


def should_stop(reward: float, threshold: float) -> bool:
    """The search ends once the reward is strictly above the threshold."""
    return reward > threshold


def oracle_reward(correct: bool) -> float:
    """PSRM: 0 for a correct answer, -1 otherwise."""
    return 0.0 if correct else -1.0


def latent_loss(logits: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``-sum_b r_b sum_t mask_bt log(p_bt(argmax) + eps)`` for logits (B, U, V), rewards (B,), mask (B, U).

    The token is each position's current argmax (the reference's single deterministic "sample").
    """
    p = torch.softmax(logits.float(), dim=-1) + PROB_EPS
    x_hat = logits.argmax(dim=-1, keepdim=True)
    logp = p.log().gather(-1, x_hat).squeeze(-1)
    return -(rewards.to(logp)[:, None] * logp * mask.to(logp)).sum()


def latent_step(z: torch.Tensor, opt: torch.optim.Optimizer, head: Callable[[torch.Tensor], torch.Tensor],
                rewards: torch.Tensor, mask: torch.Tensor, grad_clip: float = 0.0) -> float:
    """One optimiser step on the latents ``z`` (B, U, d); returns the loss before the step.

    ``grad_clip > 0`` clips each problem's gradient norm separately (problems are independent).
    """
    opt.zero_grad(set_to_none=False)
    loss = latent_loss(head(z), rewards, mask)
    loss.backward()
    if grad_clip > 0 and z.grad is not None:
        norms = z.grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        z.grad.mul_((grad_clip / norms).clamp(max=1.0)[:, None, None])
    opt.step()
    return float(loss.detach())


def head_fn(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """z -> logits through the model's LM head (with final logit soft-capping where the model has it)."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (LM head); LatentSeek needs a causal LM")
    cap = getattr(model.config, "final_logit_softcapping", None)
    dtype = next(head.parameters()).dtype

    def f(z: torch.Tensor) -> torch.Tensor:
        logits = head(z.to(dtype))
        return torch.tanh(logits / cap) * cap if cap else logits

    return f


def capture_latents(model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                    response_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Post-norm last-layer states (B, n, d) at the positions predicting response tokens 0..n-1.

    ``prompt_ids``/``prompt_mask`` are left-padded (as ``HFEngine`` returns them), ``response_ids``
    right-padded. One teacher-forced forward with the engine's position convention reproduces the
    states of the cached greedy pass; rows shorter than n get unused trailing states.
    """
    b, p = prompt_ids.shape
    d = model.config.get_text_config().hidden_size
    if n == 0 or b == 0:
        return torch.zeros((b, n, d))
    dev = next(model.parameters()).device
    ids = torch.cat([prompt_ids, response_ids[:, : n - 1]], dim=1).to(dev)
    mask = torch.cat([prompt_mask, torch.ones((b, ids.shape[1] - p), dtype=prompt_mask.dtype)], dim=1).to(dev)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        h = model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
    return h[:, p - 1: p - 1 + n].float().cpu()


# ------------------------------------------------------------------------------ rewards
class RewardFn(Protocol):
    """Rewards (<= 0) for ``texts[i]`` answering problem ``problems[i]`` (indices into the run's tasks)."""

    def __call__(self, problems: list[int], texts: list[str]) -> list[float]: ...


class OracleReward:
    """The paper's PSRM: the task's verifier against the gold answer (0 correct, -1 otherwise)."""

    def __init__(self, scorer, tasks: Sequence[Task], fallback: Fallback = "none"):
        self.scorer, self.tasks, self.fallback = scorer, tasks, fallback

    def __call__(self, problems: list[int], texts: list[str]) -> list[float]:
        correct, _ = grade(self.scorer, [self.tasks[i] for i in problems], texts, self.fallback)
        return [oracle_reward(c) for c in correct]


class SelfReward:
    """The model judges its own answer: one batched greedy generation of every (answer, check) prompt.

    Verifier prompts that do not fit the model's context (the built-in model has 256 positions) are
    not generated and count as failed checks; ``stats`` counts them with the unparsable replies.
    """

    def __init__(self, engine: HFEngine, tasks: Sequence[Task], template: str, *,
                 weights: dict[str, float] | None = None, max_new_tokens: int = 256, format_rule: bool = False):
        self.engine, self.tasks, self.template = engine, tasks, template
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        self.max_new_tokens, self.format_rule = max_new_tokens, format_rule
        self.stats = {"checks": 0, "true": 0, "false": 0, "unparsable": 0, "overflow": 0}
        self.samples: list[dict[str, Any]] = []  # a few raw verifier replies, for the report

    def _render(self, text: str) -> str:
        tok = self.engine.tokenizer
        if self.template == "chat":
            return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True)
        return text + "\n" if self.template == "plain" else text

    def __call__(self, problems: list[int], texts: list[str]) -> list[float]:
        from reasonrl.rewards import extract_answer

        checks = list(self.weights)
        prompts = [self._render(verifier_prompt(c, self.tasks[i].prompt, t))
                   for i, t in zip(problems, texts) for c in checks]
        replies = generate_within_context(self.engine, prompts, self.max_new_tokens)
        out = []
        for j, (i, t) in enumerate(zip(problems, texts)):
            verdicts = {}
            for c, reply in zip(checks, replies[j * len(checks):(j + 1) * len(checks)]):
                v = None if reply is None else parse_verdict(reply)
                verdicts[c] = v
                self.stats["checks"] += 1
                key = "overflow" if reply is None else "unparsable" if v is None else str(v).lower()
                self.stats[key] += 1
                if len(self.samples) < 8:
                    self.samples.append({"problem": i, "check": c, "reply": reply, "verdict": v})
            fmt = (extract_answer(t) is not None) if self.format_rule else None
            out.append(self_reward(verdicts, self.weights, format_ok=fmt))
        return out


# ------------------------------------------------------------------------------ generation helpers
def context_limit(model: torch.nn.Module) -> int | None:
    return getattr(model.config.get_text_config(), "max_position_embeddings", None)


def continue_greedy(engine: HFEngine, rows: list[list[int]], max_new: int) -> list[list[int]]:
    """Greedy continuation token ids of token-id prompts (``max_new`` >= 1), stop token included.

    Uses the engine's cached loop on ids (``generate_ids``): going through text would re-tokenise the decoded
    latent prefix, which for optimised (often odd) prefixes does not round-trip.
    """
    if not rows:
        return []
    params = SamplingParams(greedy=True, max_new_tokens=max_new, seed=0)
    gen = torch.Generator(device=engine.device).manual_seed(0)
    return engine.generate_ids(rows, params, gen)["response_ids"]


def generate_within_context(engine: HFEngine, prompts: list[str], max_new: int) -> list[str | None]:
    """Greedy replies to text prompts, each cut to the model's context; ``None`` where a prompt leaves no room."""
    tok = engine.tokenizer
    limit = context_limit(engine.model)
    ids = [list(tok(p, add_special_tokens=engine.add_special_tokens)["input_ids"]) for p in prompts]
    room = [max_new if limit is None else min(max_new, limit - len(r)) for r in ids]
    todo = [i for i, r in enumerate(room) if r >= 1]
    replies: list[str | None] = [None] * len(prompts)
    if todo:
        conts = continue_greedy(engine, [ids[i] for i in todo], max(room[i] for i in todo))
        texts = tok.batch_decode([c[:room[i]] for i, c in zip(todo, conts)], skip_special_tokens=True)
        for i, t in zip(todo, texts):
            replies[i] = t
    return replies


# ------------------------------------------------------------------------------ the search
@dataclass
class ProblemResult:
    """One problem's LatentSeek trajectory (``rewards[0]`` scores the CoT answer, then one per iteration)."""

    uid: str
    initial_text: str
    final_text: str
    n_latents: int
    iterations: int
    rewards: list[float]
    stopped: bool
    initial_correct: bool | None = None
    final_correct: bool | None = None
    initial_answer: str | None = None
    final_answer: str | None = None
    prefixes: list[str] = field(default_factory=list)  # decoded optimised prefix per iteration

    @property
    def changed(self) -> bool:
        return self.final_answer != self.initial_answer

    @property
    def generations(self) -> int:
        return 1 + self.iterations

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed, "generations": self.generations}


class _Progress:
    """A rich bar on a terminal, a line per update elsewhere (logs, CI)."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.done = total, label, 0
        self.tty = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self._p = None
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                               TextColumn("{task.fields[info]}"))
            self._p.start()
            self._t = self._p.add_task(label, total=total, info="")

    def advance(self, n: int, info: str) -> None:
        self.done += n
        if self._p is not None:
            self._p.update(self._t, completed=self.done, info=info)
        elif self.enabled:
            print(f"[{self.label} {self.done}/{self.total}] {info}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


def latentseek(engine: HFEngine, prompts: Sequence[str], reward_fn: RewardFn, *, rho: float = 0.1, lr: float = 0.03,
               max_iters: int = 10, threshold: float = -0.2, max_latents: int = 300, grad_clip: float = 0.0,
               max_new_tokens: int = 1024, batch_problems: int = 32, uids: Sequence[str] | None = None,
               progress: bool = False, label: str = "latentseek") -> list[ProblemResult]:
    """Run LatentSeek on every prompt (batches of ``batch_problems``); rewards come from ``reward_fn``.

    The model's parameters are frozen for the call (their ``requires_grad`` flags are restored after).
    """
    model = engine.model
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    bar = _Progress(len(prompts), label, progress)
    results: list[ProblemResult] = []
    try:
        for s in range(0, len(prompts), batch_problems):
            idx = list(range(s, min(len(prompts), s + batch_problems)))
            results += _search(engine, [prompts[i] for i in idx], idx, reward_fn, rho, lr, max_iters, threshold,
                               max_latents, grad_clip, max_new_tokens, bar)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        bar.close()
    for i, r in enumerate(results):
        r.uid = str(uids[i]) if uids is not None else str(i)
    return results


def _search(engine, prompts, problems, reward_fn, rho, lr, max_iters, threshold, max_latents, grad_clip,
            max_new_tokens, bar) -> list[ProblemResult]:
    tok, model = engine.tokenizer, engine.model
    init = engine.generate(list(prompts), SamplingParams(greedy=True, max_new_tokens=max_new_tokens, seed=0))
    lengths = init.loss_mask.sum(1).long().tolist()
    prompt_rows = [init.prompt_ids[i][init.prompt_mask[i].bool()].tolist() for i in range(len(prompts))]
    texts = list(init.response_text)
    r0 = reward_fn(list(problems), texts)
    res = [ProblemResult(uid="", initial_text=t, final_text=t, n_latents=num_latents(n, rho, max_latents),
                         iterations=0, rewards=[r], stopped=should_stop(r, threshold))
           for t, n, r in zip(texts, lengths, r0)]
    active = [i for i, r in enumerate(res) if not r.stopped and r.n_latents > 0 and max_iters > 0]
    bar.advance(len(prompts) - len(active), f"{len(active)} searching")
    if not active:
        return res
    u = torch.tensor([res[i].n_latents for i in active])
    z = capture_latents(model, init.prompt_ids[active], init.prompt_mask[active], init.response_ids[active],
                        int(u.max())).requires_grad_(True)
    mask = torch.arange(z.shape[1])[None, :] < u[:, None]
    head = head_fn(model)
    opt = torch.optim.Adam([z], lr=lr)
    r_prev = torch.tensor([r0[i] for i in active], dtype=torch.float32)
    live = torch.ones(len(active), dtype=torch.bool)
    stop_ids = set(engine.stop_token_ids)
    for k in range(1, max_iters + 1):
        latent_step(z, opt, head, r_prev * live, mask, grad_clip)  # finished rows get weight 0
        with torch.no_grad():
            prefix_tok = head(z).argmax(-1)
        rows = live.nonzero().flatten().tolist()
        answers, need = [], []
        for j in rows:
            pre = prefix_tok[j, : int(u[j])].tolist()
            cut = next((t + 1 for t, x in enumerate(pre) if x in stop_ids), None)
            pre = pre[:cut] if cut else pre
            answers.append(pre)
            if cut is None and max_new_tokens - len(pre) >= 1:
                need.append(len(answers) - 1)
        conts = continue_greedy(engine, [prompt_rows[active[rows[a]]] + answers[a] for a in need],
                                max((max_new_tokens - len(answers[a]) for a in need), default=1))
        for a, c in zip(need, conts):
            answers[a] = answers[a] + c[: max_new_tokens - len(answers[a])]
        new_texts = tok.batch_decode(answers, skip_special_tokens=True)
        rs = reward_fn([problems[active[j]] for j in rows], new_texts)
        finished = 0
        for j, a, text, r in zip(rows, answers, new_texts, rs):
            pr = res[active[j]]
            pr.iterations, pr.final_text = k, text
            pr.rewards.append(r)
            pr.prefixes.append(tok.decode(prefix_tok[j, : int(u[j])].tolist(), skip_special_tokens=False))
            r_prev[j] = r
            if should_stop(r, threshold):
                pr.stopped, live[j] = True, False
                finished += 1
        if k == max_iters:
            finished += int(live.sum())
        bar.advance(finished, f"iter {k}/{max_iters}, {int(live.sum())} searching")
        if not bool(live.any()):
            break
    return res
