"""Supervised fine-tuning on worked demonstrations.

Used three ways: the warm start of the built-in model, the equal-wall-clock control arm of the demo,
and rejection-sampling fine-tuning checks. Loss is the token-mean NLL over completion tokens of the
whole batch; prompts are left-padded exactly as the rollout engine pads them, so SFT and RL see the
same positions.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class SFTExample:
    prompt: str
    completion: str


@dataclass
class SFTResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, float, dict]] = field(default_factory=list)


def encode_examples(tokenizer, examples: list[SFTExample]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids + EOS) per example; the completion is tokenized after the prompt
    text so token boundaries match what the model produces when it continues the prompt."""
    out = []
    eos = tokenizer.eos_token_id
    for ex in examples:
        p = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
        full = tokenizer(ex.prompt + ex.completion, add_special_tokens=False)["input_ids"]
        if full[: len(p)] != p:
            c = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
        else:
            c = full[len(p):]
        out.append((p, c + [eos]))
    return out


def collate(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompts and right-pad completions (the rollout layout); labels -100 off-completion."""
    tp = max(len(p) for p, _ in encoded)
    tc = max(len(c) for _, c in encoded)
    b = len(encoded)
    ids = torch.full((b, tp + tc), pad_id, dtype=torch.long)
    mask = torch.zeros((b, tp + tc), dtype=torch.long)
    labels = torch.full((b, tp + tc), -100, dtype=torch.long)
    for i, (p, c) in enumerate(encoded):
        ids[i, tp - len(p): tp] = torch.tensor(p)
        ids[i, tp: tp + len(c)] = torch.tensor(c)
        mask[i, tp - len(p): tp + len(c)] = 1
        labels[i, tp: tp + len(c)] = torch.tensor(c)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "labels": labels}


def sft_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], use_cache=False)
    logits = out.logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def lr_at(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * frac
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))


def run_sft(
    model: nn.Module,
    tokenizer,
    examples: list[SFTExample],
    *,
    optimizer: torch.optim.Optimizer,
    lr: float,
    batch_size: int = 64,
    steps: int | None = None,
    time_budget_s: float | None = None,
    warmup: int = 0,
    schedule: str = "constant",
    min_lr_ratio: float = 0.1,
    grad_clip: float = 1.0,
    seed: int = 0,
    eval_fn: Callable[[int], tuple[float, dict]] | None = None,
    eval_every: int = 0,
) -> SFTResult:
    """Train on ``examples`` for ``steps`` optimizer steps or until ``time_budget_s`` elapses.

    With a time budget the schedule is laid out over an estimated step count (re-estimated from the
    measured step time after a few steps), so cosine decay ends near the budget's end. Evaluation time
    is not charged to the budget.
    """
    if not examples:
        raise ValueError("run_sft needs at least one demonstration")
    if steps is None and time_budget_s is None:
        raise ValueError("run_sft needs steps or time_budget_s")
    encoded = encode_examples(tokenizer, examples)
    rng = random.Random(seed)
    order: list[int] = []
    res = SFTResult(steps=0, seconds=0.0)
    total = steps if steps is not None else 10**9
    est_total = steps if steps is not None else 100
    train_time = 0.0
    model.train()
    step = 0
    while step < total:
        if time_budget_s is not None and train_time >= time_budget_s:
            break
        t0 = time.perf_counter()
        if len(order) < batch_size:
            perm = list(range(len(encoded)))
            rng.shuffle(perm)
            order.extend(perm)
        idx, order = order[:batch_size], order[batch_size:]
        batch = collate([encoded[i] for i in idx], tokenizer.pad_token_id)
        mult = lr_at(step, est_total, warmup, schedule, min_lr_ratio)
        for g in optimizer.param_groups:
            g["lr"] = lr * mult
        loss = sft_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        step += 1
        train_time += time.perf_counter() - t0
        if time_budget_s is not None and step in (5, 20, 50) or (time_budget_s is not None and step % 100 == 0):
            est_total = max(step + 1, int(time_budget_s / (train_time / step)))
        res.losses.append(loss.item())
        if eval_fn and eval_every and step % eval_every == 0:
            score, extra = eval_fn(step)
            res.evals.append((step, score, extra))
            model.train()
    res.steps = step
    res.seconds = train_time
    return res
