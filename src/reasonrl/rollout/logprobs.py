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

import inspect

import torch

from reasonrl.batch import Rollouts


def sequence_logprobs(
    model: torch.nn.Module,
    rollouts: Rollouts,
    temperature: float,
    micro_batch: int | None = None,
    with_entropy: bool = False,
    return_hidden: bool = False,
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
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    own = getattr(model, "sequence_logprobs", None)  # the policy seam (module docstring)
    if callable(own):
        return own(rollouts, temperature=temperature, with_entropy=with_entropy, return_hidden=return_hidden,
                   micro_batch=micro_batch)
    device = next(model.parameters()).device
    ids = rollouts.input_ids().to(device)
    attn = rollouts.attention_mask().to(device=device, dtype=torch.long)
    pos = (attn.cumsum(dim=1) - 1).clamp(min=0)
    resp = rollouts.response_ids.to(device)
    valid = rollouts.response_valid.to(device).bool()
    tr = resp.shape[1]
    keep_ok = "logits_to_keep" in inspect.signature(model.forward).parameters

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

