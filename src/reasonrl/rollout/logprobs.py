"""The learner-side forward over ``Rollouts``: per-token log-probs (and entropy) of the responses.

This is the single definition of "the policy's log-prob of a response token" used for old/ref/new
log-probs in training. It feeds ``cat(prompt, response)`` with ``Rollouts.attention_mask()`` and
``position_ids = cumsum(mask) - 1``, exactly as ``HFEngine`` did token by token, so on-policy
ratios start at 1 (the pilot's suspected defect was a mismatch here). Gradients are the caller's
choice: wrap the call in ``torch.no_grad()`` for old/ref log-probs, leave it bare for the loss.

The policy seam: a model that is not a causal LM over ``cat(prompt, response)`` (a VLA's action
tokens, a recurrent SSM) defines ``sequence_logprobs(batch, temperature=, with_entropy=,
return_hidden=, micro_batch=)`` itself and this function returns its result unchanged.
"""

from __future__ import annotations


import torch

from reasonrl.batch import Rollouts, pack_rows
from reasonrl.rollout.fused_logprobs import chosen_logprob_entropy
from reasonrl.rollout.lora_engine import forward_parameters


def sequence_logprobs(
    model: torch.nn.Module,
    rollouts: Rollouts,
    temperature: float,
    micro_batch: int | None = None,
    with_entropy: bool = False,
    return_hidden: bool = False,
    chunk_tokens: int = 0,
    pack: bool = False,
    autocast: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(logp, entropy)`` each (B, Tr), or ``(logp, entropy, hidden)`` when ``return_hidden``.

    ``logp[i, t] = log_softmax(logits / temperature)[response_ids[i, t]]`` from the logits at the
    position before token t; 0 where ``response_valid`` is 0. ``entropy`` (``None`` unless
    ``with_entropy``) is the entropy of that temperature-scaled distribution. ``hidden`` is the
    last layer's (post-norm) hidden states (B, Tp+Tr, d) for heads such as FlowRL's log Z.
    Use ``temperature = SamplingParams.logp_temperature`` to match the engine's ``rollout_logp``.
    ``micro_batch`` bounds the rows per forward; with gradients on, all chunks' graphs stay alive
    until backward, so a trainer that needs to bound backward memory should chunk the batch itself.
    Outputs live on the model's device.

    Speed options (``perf.*`` in the config; the first two equal the reference path within float
    rounding in fp32, see ``tests/rollout/test_fused_logprobs.py``): ``chunk_tokens > 0`` runs the
    decoder, then the LM head over only the scored tokens, ``chunk_tokens`` at a time, without keeping
    logits for backward (``fused_logprobs.py``); ``pack`` (needs ``chunk_tokens``) feeds the rows'
    real tokens packed back to back instead of padded (``batch.pack_rows``); ``autocast="bf16"``
    runs the forward under bfloat16 autocast (the log-probs are float32 either way; their gap to
    fp32 is the price, measured by ``reasonrl bench throughput bench.mode=learner``).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    own = getattr(model, "sequence_logprobs", None)  # the policy seam (module docstring)
    if callable(own):
        return own(rollouts, temperature=temperature, with_entropy=with_entropy, return_hidden=return_hidden,
                   micro_batch=micro_batch)
    if autocast not in ("fp32", "bf16"):
        raise ValueError(f"autocast must be 'fp32' or 'bf16', got {autocast!r}")
    if pack and not chunk_tokens:
        raise ValueError("pack=True needs chunk_tokens > 0 (the packed path scores tokens with the fused LM head)")
    device = next(model.parameters()).device
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast == "bf16")
    if chunk_tokens and _fusable(model):
        with amp:
            return _fused(model, rollouts, temperature, micro_batch, with_entropy, return_hidden, chunk_tokens, pack)
    with amp:
        return _reference(model, rollouts, temperature, micro_batch, with_entropy, return_hidden)


def _reference(model, rollouts, temperature, micro_batch, with_entropy, return_hidden):
    """Full logits, log-softmax over the whole vocabulary: the definition the fast path is tested against."""
    device = next(model.parameters()).device
    ids = rollouts.input_ids().to(device)
    attn = rollouts.attention_mask().to(device=device, dtype=torch.long)
    pos = (attn.cumsum(dim=1) - 1).clamp(min=0)
    resp = rollouts.response_ids.to(device)
    valid = rollouts.response_valid.to(device).bool()
    tr = resp.shape[1]
    keep_ok = "logits_to_keep" in forward_parameters(model)

    rows = ids.shape[0]
    step = micro_batch or max(rows, 1)
    logps, ents, hiddens = [], [], []
    for s in range(0, rows, step):
        sl = slice(s, s + step)
        kwargs = {"use_cache": False}
        if keep_ok:
            kwargs["logits_to_keep"] = tr + 1  # skip the lm_head on prompt positions
        if return_hidden:
            kwargs["output_hidden_states"] = True
        out = model(input_ids=ids[sl], attention_mask=attn[sl], position_ids=pos[sl], **kwargs)
        # logits at positions Tp-1 .. Tp+Tr-2 predict response tokens 0 .. Tr-1
        z = out.logits[:, out.logits.shape[1] - tr - 1 : -1].float() / temperature
        lsm = torch.log_softmax(z, dim=-1)
        lp = lsm.gather(-1, resp[sl].unsqueeze(-1)).squeeze(-1)
        logps.append(lp.masked_fill(~valid[sl], 0.0))
        if with_entropy:
            ent = -(lsm.exp() * lsm).sum(dim=-1)
            ents.append(ent.masked_fill(~valid[sl], 0.0))
        if return_hidden:
            hiddens.append(out.hidden_states[-1])
    if rows == 0:
        logp = torch.zeros((0, tr), device=device)
        entropy = logp.clone() if with_entropy else None
        if return_hidden:
            return logp, entropy, torch.zeros((0, ids.shape[1], 0), device=device)
        return logp, entropy
    logp = torch.cat(logps)
    entropy = torch.cat(ents) if with_entropy else None
    if return_hidden:
        return logp, entropy, torch.cat(hiddens)
    return logp, entropy



def _fusable(model: torch.nn.Module) -> bool:
    """A Hugging Face causal LM whose logits are exactly ``lm_head(decoder(x))`` (no soft-capping or scaling)."""
    cfg = getattr(model, "config", None)
    if cfg is None or not callable(getattr(model, "get_decoder", None)):
        return False  # includes a DDP wrapper: its forward (gradient hooks) must run, so the reference path
    try:  # FSDP2 unshards root-level weights (the LM head) in the root's forward, which the fused path skips
        from torch.distributed.fsdp import FSDPModule

        if isinstance(model, FSDPModule):
            return False
    except ImportError:
        pass
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        return False
    decoder = model.get_decoder()
    if decoder is None or decoder is model:  # no separate decoder stack (e.g. the built-in SSMs)
        return False
    return isinstance(model.get_output_embeddings(), torch.nn.Linear)


def _fused(model, rollouts, temperature, micro_batch, with_entropy, return_hidden, chunk, pack):
    """The decoder's hidden states, then ``chosen_logprob_entropy`` on the scored tokens only."""
    device = next(model.parameters()).device
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    ids_all = rollouts.input_ids().to(device)
    attn_all = rollouts.attention_mask().to(device=device, dtype=torch.long)
    resp_all = rollouts.response_ids.to(device)
    valid_all = rollouts.response_valid.to(device).bool()
    rows, t_all = ids_all.shape
    tp, tr = rollouts.prompt_ids.shape[1], resp_all.shape[1]
    step = micro_batch or max(rows, 1)
    logps, ents, hiddens = [], [], []
    for s in range(0, rows, step):
        ids, attn, resp, valid = ids_all[s:s + step], attn_all[s:s + step], resp_all[s:s + step], valid_all[s:s + step]
        b = ids.shape[0]
        pos = (attn.cumsum(dim=1) - 1).clamp(min=0)
        if pack:
            plan = pack_rows(ids.cpu(), attn.cpu())
            out = decoder(input_ids=plan.ids.to(device), position_ids=plan.position_ids.to(device), use_cache=False)
            h = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])
            # the token before response token t of row i is its (pos[i, tp+t] - 1)-th real token
            before = (plan.row_start.to(device)[:, None] + pos[:, tp:] - 1).clamp(min=0)[valid]
        else:
            out = decoder(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False)
            h = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])
            before = (torch.arange(b, device=device)[:, None] * t_all + tp - 1 + torch.arange(tr, device=device))[valid]
        lp, ent = chosen_logprob_entropy(h[before], head.weight, head.bias, resp[valid], temperature, chunk)
        zeros = torch.zeros((b, tr), dtype=lp.dtype, device=device)
        logps.append(zeros.masked_scatter(valid, lp))
        if with_entropy:
            ents.append(zeros.masked_scatter(valid, ent))
        if return_hidden:
            if pack:  # back to the padded layout, zeros on padding
                flat = h.new_zeros((b * t_all, h.shape[-1]))
                flat = flat.index_copy(0, plan.src.to(device), h[plan.dst.to(device)])
                hiddens.append(flat.view(b, t_all, -1))
            else:
                hiddens.append(h.view(b, t_all, -1))
    if rows == 0:
        logp = torch.zeros((0, tr), device=device)
        entropy = logp.clone() if with_entropy else None
        return (logp, entropy, torch.zeros((0, t_all, 0), device=device)) if return_hidden else (logp, entropy)
    logp = torch.cat(logps)
    entropy = torch.cat(ents) if with_entropy else None
    return (logp, entropy, torch.cat(hiddens)) if return_hidden else (logp, entropy)


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward instead of keeping them
    (Hugging Face's per-layer checkpointing, non-reentrant; active only in ``train()`` mode)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"perf.activation_checkpointing=true, but {type(model).__name__} does not support "
                         "gradient checkpointing; set perf.activation_checkpointing=false")
    kwargs = {"use_reentrant": False}
    if callable(getattr(model, "activation_checkpointing_enable", None)):  # transformers >= 5.x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def logprob_options(perf) -> dict:
    """The ``sequence_logprobs`` keyword arguments of a ``PerfConfig`` (``perf.*``): every learner-side
    log-prob (old, reference, new) uses the same ones, so an on-policy ratio starts at 1."""
    return {"chunk_tokens": perf.logprob_chunk_tokens, "pack": perf.packing, "autocast": perf.autocast}
