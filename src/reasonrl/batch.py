"""The one batch type that flows through a training step (DESIGN.md: tasks -> rollout -> rewards ->
algorithm -> learner).

Layout, per sample i of B:
- ``prompt_ids`` (B, Tp) **left**-padded with ``prompt_mask`` 1 on real tokens;
- ``response_ids`` (B, Tr) **right**-padded with ``loss_mask`` 1 on generated tokens (up to and
  including EOS) and 0 on padding or tool/observation tokens;
- ``rollout_logp`` (B, Tr): log-probs of the response tokens under the sampling policy, computed
  from temperature-scaled logits;
- ``group_ids`` (B,): one prompt's samples share an id;
- ``rewards`` (B,): scalar outcome score, filled by the reward stage;
- typed optional fields for what the core knows, each ``None`` until a stage adds it (see
  ``TOKEN_FIELDS``/``ROW_FIELDS``): ``valid_mask`` (real response tokens incl. tool output, when it
  differs from ``loss_mask``), ``ref_logp``/``old_logp`` (learner-side log-probs), ``is_logw``
  (async truncated importance log-weights), ``advantages`` (the estimator's) and
  ``shaped_advantages`` (a recipe's reshaping of them, e.g. HPT's per-prompt weights; the loss uses
  ``policy_advantages``), ``is_demo``/``sft_weight`` (demonstration rows and their SFT weight);
- ``extras``: tensors private to one recipe (PPO's ``values``/``returns``, FlowRL's ``rhat``, ...).

Concatenating prompt and response gives one left-aligned-by-padding sequence per row whose
attention mask is ``cat(prompt_mask, response_valid)``; positions come from the mask's cumsum, so
the learner's forward sees exactly the tokens and positions the sampler saw.

Stages add fields; none reshuffles what an earlier one produced. ``select`` keeps rows together.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch


@dataclass
class Rollouts:
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    loss_mask: torch.Tensor
    rollout_logp: torch.Tensor
    group_ids: torch.Tensor
    task_index: list[int]
    response_text: list[str]
    truncated: torch.Tensor
    rewards: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, list[Any]] = field(default_factory=dict)
    valid_mask: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    old_logp: torch.Tensor | None = None
    is_logw: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    shaped_advantages: torch.Tensor | None = None
    is_demo: torch.Tensor | None = None
    sft_weight: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.response_ids.shape[0])

    @property
    def response_valid(self) -> torch.Tensor:
        """1 on every real response token (generated or tool), 0 on right padding."""
        return self.loss_mask if self.valid_mask is None else self.valid_mask

    @property
    def policy_advantages(self) -> torch.Tensor | None:
        """The advantages the policy loss uses: a recipe's shaped ones if it added them, else the estimator's."""
        return self.advantages if self.shaped_advantages is None else self.shaped_advantages

    def set_fields(self) -> list[str]:
        """Names of the typed optional fields (``TOKEN_FIELDS + ROW_FIELDS``) that are filled."""
        return [k for k in TOKEN_FIELDS + ROW_FIELDS if getattr(self, k) is not None]

    def _typed(self, fn_token, fn_row) -> dict[str, Any]:
        out = {k: None if getattr(self, k) is None else fn_token(getattr(self, k)) for k in TOKEN_FIELDS}
        out.update({k: None if getattr(self, k) is None else fn_row(getattr(self, k)) for k in ROW_FIELDS})
        return out

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.loss_mask.sum(dim=1)

    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_valid.to(self.prompt_mask.dtype)], dim=1)

    def select(self, idx: torch.Tensor | list[int]) -> "Rollouts":
        """Rows ``idx`` (in that order), every per-row field kept aligned."""
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        rows = idx_t.tolist()
        return Rollouts(
            prompt_ids=self.prompt_ids[idx_t],
            prompt_mask=self.prompt_mask[idx_t],
            response_ids=self.response_ids[idx_t],
            loss_mask=self.loss_mask[idx_t],
            rollout_logp=self.rollout_logp[idx_t],
            group_ids=self.group_ids[idx_t],
            task_index=[self.task_index[i] for i in rows],
            response_text=[self.response_text[i] for i in rows],
            truncated=self.truncated[idx_t],
            rewards=None if self.rewards is None else self.rewards[idx_t],
            extras={k: v[idx_t] for k, v in self.extras.items()},
            info={k: [v[i] for i in rows] for k, v in self.info.items()},
            **self._typed(lambda v: v[idx_t], lambda v: v[idx_t]),
        )

    def trim(self) -> "Rollouts":
        """Drop all-padding columns (left of prompts, right of responses) to save compute."""
        p_keep = self.prompt_mask.any(dim=0).nonzero()
        r_keep = self.response_valid.any(dim=0).nonzero()
        p0 = int(p_keep[0]) if len(p_keep) else self.prompt_ids.shape[1]
        r1 = int(r_keep[-1]) + 1 if len(r_keep) else 0
        out = Rollouts(
            prompt_ids=self.prompt_ids[:, p0:],
            prompt_mask=self.prompt_mask[:, p0:],
            response_ids=self.response_ids[:, :r1],
            loss_mask=self.loss_mask[:, :r1],
            rollout_logp=self.rollout_logp[:, :r1],
            group_ids=self.group_ids,
            task_index=list(self.task_index),
            response_text=list(self.response_text),
            truncated=self.truncated,
            rewards=self.rewards,
            extras={k: (v[:, :r1] if v.dim() == 2 and v.shape[1] == self.response_ids.shape[1] else v)
                    for k, v in self.extras.items()},
            info=dict(self.info),
            **self._typed(lambda v: v[:, :r1], lambda v: v),
        )
        return out

    def token_rewards(self) -> torch.Tensor:
        """Outcome reward placed at the last valid response token, zeros elsewhere (veRL layout)."""
        if self.rewards is None:
            raise ValueError("rewards are not filled yet: run the reward stage before the algorithm stage")
        out = torch.zeros_like(self.rollout_logp)
        lengths = self.loss_mask.sum(dim=1).long()
        rows = (lengths > 0).nonzero().flatten()
        last = _last_index(self.loss_mask)
        out[rows, last[rows]] = self.rewards[rows].to(out.dtype)
        return out


TOKEN_FIELDS = ("valid_mask", "ref_logp", "old_logp", "is_logw", "advantages", "shaped_advantages")
"""Typed optional (B, Tr) fields: sliced with the response columns, right-padded with 0 by ``concat``."""
ROW_FIELDS = ("is_demo", "sft_weight")
"""Typed optional (B,) fields."""
assert not set(TOKEN_FIELDS + ROW_FIELDS) - {f.name for f in fields(Rollouts)}


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row (0 for an all-zero row)."""
    t = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), t, torch.zeros_like(t)).max(dim=1).values


def concat(batches: list[Rollouts], pad_id: int) -> Rollouts:
    """Stack batches of possibly different widths (prompts re-left-padded, responses right-padded)."""
    if len(batches) == 1:
        return batches[0]
    tp = max(b.prompt_ids.shape[1] for b in batches)
    tr = max(b.response_ids.shape[1] for b in batches)

    def lpad(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
        return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)

    def rpad(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    keys = set(batches[0].extras)
    for b in batches[1:]:
        if set(b.extras) != keys:
            raise ValueError(f"cannot concatenate batches with different extras: {sorted(keys)} vs {sorted(b.extras)}")
    extras = {}
    for k in keys:
        vs = [b.extras[k] for b in batches]
        if vs[0].dim() == 2 and vs[0].shape[1] == batches[0].response_ids.shape[1]:
            extras[k] = torch.cat([rpad(v, tr, 0) for v in vs])
        else:
            extras[k] = torch.cat(vs)
    typed: dict[str, torch.Tensor | None] = {}
    for k in TOKEN_FIELDS + ROW_FIELDS:
        vs = [getattr(b, k) for b in batches]
        if all(v is None for v in vs):
            typed[k] = None
        elif k == "valid_mask":  # a batch without one is valid exactly where it is trained on
            typed[k] = torch.cat([rpad(b.response_valid, tr, 0) for b in batches])
        elif any(v is None for v in vs):
            raise ValueError(f"cannot concatenate batches where only some have {k!r}")
        else:
            typed[k] = torch.cat([rpad(v, tr, 0) for v in vs]) if k in TOKEN_FIELDS else torch.cat(vs)
    rewards = None
    if all(b.rewards is not None for b in batches):
        rewards = torch.cat([b.rewards for b in batches])
    info_keys = set(batches[0].info)
    return Rollouts(
        prompt_ids=torch.cat([lpad(b.prompt_ids, tp, pad_id) for b in batches]),
        prompt_mask=torch.cat([lpad(b.prompt_mask, tp, 0) for b in batches]),
        response_ids=torch.cat([rpad(b.response_ids, tr, pad_id) for b in batches]),
        loss_mask=torch.cat([rpad(b.loss_mask, tr, 0) for b in batches]),
        rollout_logp=torch.cat([rpad(b.rollout_logp, tr, 0) for b in batches]),
        group_ids=torch.cat([b.group_ids for b in batches]),
        task_index=[i for b in batches for i in b.task_index],
        response_text=[s for b in batches for s in b.response_text],
        truncated=torch.cat([b.truncated for b in batches]),
        rewards=rewards,
        extras=extras,
        info={k: [x for b in batches for x in b.info.get(k, [None] * len(b))] for k in info_keys},
        **typed,
    )


@dataclass
class PackPlan:
    """Where each row's real tokens go when a batch is packed (``pack_rows``).

    ``ids``/``position_ids`` (n_bins, L): several rows' real tokens back to back per bin, positions
    restarting at 0 for each row (that restart is what tells the model where one sequence ends:
    Hugging Face models build a block-diagonal causal mask from it when ``attention_mask`` is None);
    the tail of a bin that is not full is one filler sequence, computed and ignored.
    ``src``/``dst``: flat indices of the same real tokens in the padded (B*T) and packed (n_bins*L) layouts.
    ``row_start``: each row's first packed flat index.
    """

    ids: torch.Tensor
    position_ids: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    row_start: torch.Tensor


def pack_rows(ids: torch.Tensor, attention_mask: torch.Tensor, capacity: int = 0, filler_id: int = 0) -> PackPlan:
    """Pack the real tokens of ``ids`` (B, T) (where ``attention_mask`` is 1) into bins of ``capacity``
    tokens (0 = the longest row) by first-fit decreasing, so padding never goes through the model.

    Assumes what ``Rollouts`` guarantees: each row's real tokens are its prompt's then its response's,
    and the padded layout's position ids are ``cumsum(mask) - 1``.
    """
    mask = attention_mask.bool()
    lengths = mask.sum(1).tolist()
    cap = max(capacity, max(lengths, default=0), 1)
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(cap - lengths[i])
    n_bins = max(len(bins), 1)
    row_start = torch.zeros(len(lengths), dtype=torch.long)
    pos = torch.zeros((n_bins, cap), dtype=torch.long)
    for b, rows in enumerate(bins):
        o = 0
        for i in rows:
            row_start[i] = b * cap + o
            pos[b, o:o + lengths[i]] = torch.arange(lengths[i])
            o += lengths[i]
        pos[b, o:] = torch.arange(cap - o)  # the filler sequence
    src = mask.flatten().nonzero().squeeze(1)
    within = (mask.long().cumsum(1) - 1)[mask]
    dst = row_start.repeat_interleave(torch.tensor(lengths, dtype=torch.long)) + within
    packed = torch.full((n_bins * cap,), filler_id, dtype=ids.dtype)
    packed[dst] = ids.flatten()[src]
    return PackPlan(ids=packed.view(n_bins, cap), position_ids=pos, src=src, dst=dst, row_start=row_start)
