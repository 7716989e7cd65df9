"""`reasonrl bench throughput bench.mode=learner`: the learner's speed options side by side.

One learner pass (forward with entropy, a GRPO-like token loss, backward) on one synthetic ragged
batch (prompt and response lengths drawn uniformly from the given ranges, fixed seed), for each
variant of ``perf.*`` in turn, round after round, in one process: so load bursts on a shared machine
hit every variant alike. Reported per variant: median wall time, real tokens/s, FLOP efficiency
against the GEMM peak measured in the same process (``roofline.py``), the bytes autograd keeps for
the backward (every tensor saved by the graph, counted once per storage: the activation memory the
option is about) and the largest per-token log-prob gap to the fp32 reference variant.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch

VARIANTS: dict[str, dict[str, Any]] = {
    "reference": {"chunk_tokens": 0},
    "fused": {"chunk_tokens": 1024},
    "fused+pack": {"chunk_tokens": 1024, "pack": True},
    "fused+pack+ckpt": {"chunk_tokens": 1024, "pack": True, "ckpt": True},
    "fused+pack+bf16": {"chunk_tokens": 1024, "pack": True, "autocast": "bf16"},
    "reference+bf16": {"chunk_tokens": 0, "autocast": "bf16"},
}


def synthetic_batch(vocab: int, rows: int, prompt_range: tuple[int, int], resp_range: tuple[int, int],
                    seed: int = 0, pad_id: int = 0):
    """A ``Rollouts`` with left-padded prompts and right-padded responses of random lengths."""
    from reasonrl.batch import Rollouts

    g = torch.Generator().manual_seed(seed)
    pl = torch.randint(prompt_range[0], prompt_range[1] + 1, (rows,), generator=g)
    rl = torch.randint(resp_range[0], resp_range[1] + 1, (rows,), generator=g)
    tp, tr = int(pl.max()), int(rl.max())
    pm = (torch.arange(tp)[None, :] >= (tp - pl)[:, None]).long()
    lm = (torch.arange(tr)[None, :] < rl[:, None]).float()
    pids = torch.randint(1, vocab, (rows, tp), generator=g) * pm + pad_id * (1 - pm)
    rids = (torch.randint(1, vocab, (rows, tr), generator=g) * lm.long() + pad_id * (1 - lm.long()))
    return Rollouts(prompt_ids=pids, prompt_mask=pm, response_ids=rids, loss_mask=lm, rollout_logp=torch.zeros(rows, tr),
                    group_ids=torch.arange(rows) // 4, task_index=list(range(rows)), response_text=[""] * rows,
                    truncated=torch.zeros(rows, dtype=torch.bool))


def _saved_bytes():
    """A context that counts the bytes of distinct storages autograd saves for the backward."""
    seen: dict[int, int] = {}

    def pack(t):
        try:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), seen


def one_pass(model, batch, kw: dict[str, Any], temperature: float = 1.0) -> tuple[float, int, torch.Tensor]:
    """Forward + GRPO-like loss + backward; ``(wall seconds, saved bytes, per-token logp)``."""
    from reasonrl.rollout.logprobs import sequence_logprobs

    model.zero_grad(set_to_none=True)
    hooks, seen = _saved_bytes()
    t0 = time.perf_counter()
    with hooks:
        lp, ent = sequence_logprobs(model, batch, temperature, with_entropy=True, **kw)
    m = batch.loss_mask.float()
    adv = torch.linspace(-1, 1, len(batch))[:, None]
    loss = -((adv * lp + 1e-3 * ent) * m).sum() / m.sum()
    loss.backward()
    return time.perf_counter() - t0, sum(seen.values()), lp.detach()


def run_learner_options(model, rows: int, prompt_range, resp_range, reps: int, threads: int,
                        variants: list[str], log=print) -> dict[str, Any]:
    from reasonrl.bench.roofline import ModelShape, learner_flops, machine_peaks
    from reasonrl.rollout.logprobs import enable_activation_checkpointing

    batch = synthetic_batch(model.config.vocab_size, rows, prompt_range, resp_range)
    shape = ModelShape.from_config(model.config)
    seq = (batch.prompt_mask.sum(1) + batch.loss_mask.sum(1)).long().tolist()
    flops = learner_flops(shape, seq, int(batch.loss_mask.sum()))
    model.train()
    ckpt_model = None
    if any(VARIANTS[v].get("ckpt") for v in variants):
        ckpt_model = copy.deepcopy(model)
        enable_activation_checkpointing(ckpt_model)
        ckpt_model.train()
    times: dict[str, list[float]] = {v: [] for v in variants}
    saved: dict[str, int] = {}
    logps: dict[str, torch.Tensor] = {}
    for r in range(reps + 1):  # round 0 is warm-up
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            kw = {k: x for k, x in VARIANTS[v].items() if k != "ckpt"}
            dt, nbytes, lp = one_pass(ckpt_model if VARIANTS[v].get("ckpt") else model, batch, kw)
            if r:
                times[v].append(dt)
            saved[v], logps[v] = nbytes, lp
        log(f"[learner] round {r}: " + ", ".join(f"{v} {times[v][-1]:.2f}s" for v in variants if times[v]))
    peaks = machine_peaks(threads)
    mask = batch.loss_mask.bool()
    ref = logps.get("reference")
    out = {"rows": rows, "real_tokens": sum(seq), "padded_tokens": int(batch.input_ids().numel()),
           "scored_tokens": int(mask.sum()), "learner_flops": flops, "peaks": peaks, "shape": shape.as_dict(),
           "variants": {}}
    for v in variants:
        med = statistics.median(times[v])
        peak = peaks.get("gemm_bf16_flops") if VARIANTS[v].get("autocast") == "bf16" else peaks["gemm_fp32_flops"]
        out["variants"][v] = {
            "times_s": times[v], "median_s": med, "tokens_per_s": sum(seq) / med,
            "flop_efficiency": flops / med / peak if peak else None, "saved_mb": saved[v] / 2 ** 20,
            "max_abs_logp_gap_vs_reference": None if ref is None else float((logps[v] - ref)[mask].abs().max()),
            "options": VARIANTS[v]}
    return out
