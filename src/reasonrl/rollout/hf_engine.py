"""The default engine: any Hugging Face causal LM, sampled with our own batched KV-cache loop.

Why our own loop rather than ``model.generate``: the pilot measured no speed difference, and owning
the loop gives direct control over padding, positions, stopping and the recorded log-probs — the
place where sampler/learner misalignment hides. The loop feeds the model exactly what
``sequence_logprobs`` feeds it later: left-padded prompts, an attention mask with 1 on every real
token, and ``position_ids = cumsum(mask) - 1``; ``tests/rollout`` checks the two agree to 1e-5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from reasonrl.batch import Rollouts, concat
from reasonrl.rollout.engine import ModuleEngine, stop_and_pad_ids
from reasonrl.rollout.lora_engine import forward_parameters
from reasonrl.rollout.sampling import SamplingParams, sample_next


class HFEngine(ModuleEngine):
    """Batched sampling from ``model`` (a HF causal LM) with a ``DynamicCache``.

    - ``micro_batch``: at most this many rows per forward (bounds KV-cache memory); ``None`` = all.
    - ``add_special_tokens``: passed to the tokenizer when encoding prompts (its default, ``True``,
      adds BOS only where the tokenizer's post-processor does).
    - ``eos_token_ids``: ids that end a sample; ``None`` = the tokenizer's EOS plus the model's
      ``generation_config.eos_token_id`` (chat models often end turns with a different id); ``[]``
      never stops on EOS (benchmarks). ``stop_token_ids`` adds more. Either kind of stop token is
      part of the response (``loss_mask`` 1), so the policy learns to emit it.
    - ``compact``: drop finished rows from the batch (and its cache) instead of feeding them pads.

    Stop strings: after each step the continuation of every still-running row is decoded; when one
    of ``params.stop`` appears (it can only first appear in the newest token) the row ends *with*
    that token, so the stop string is included in ``response_ids`` and ``response_text`` (as are
    any characters the same token carries after it). Matches spanning the prompt are not looked for.

    Output (CPU tensors): ``prompt_mask`` long, ``loss_mask`` float32, ``rollout_logp`` float32 under
    ``params.logp_temperature``, ``truncated`` bool (hit ``max_new_tokens`` without EOS/stop);
    ``info["finish_reason"]`` is ``"eos" | "stop" | "length"`` and ``info["prompt"]`` the prompt.
    The same ``params.seed`` with the same ``micro_batch``/``compact`` gives identical output.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        micro_batch: int | None = None,
        add_special_tokens: bool = True,
        eos_token_ids: Sequence[int] | None = None,
        stop_token_ids: Sequence[int] = (),
        compact: bool = True,
    ) -> None:
        if micro_batch is not None and micro_batch < 1:
            raise ValueError(f"micro_batch must be None or >= 1, got {micro_batch}")
        self.model = model
        self._tokenizer = tokenizer
        self.micro_batch = micro_batch
        self.add_special_tokens = add_special_tokens
        self.compact = compact
        self.stop_token_ids, self.pad_token_id = stop_and_pad_ids(tokenizer, model, eos_token_ids, stop_token_ids)
        params = forward_parameters(model)
        # transformers 5 renamed ``past_key_values`` to ``cache``; use whichever this model takes.
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_logits = "logits_to_keep" in params
        self.weight_version = 0
        self.last_seed: int | None = None
        self.last_load_s = 0.0

    def generate(
        self, prompts: list[str], params: SamplingParams, task_index: list[int] | None = None
    ) -> Rollouts:
        prompt_of_row, group_ids, row_tasks = self.expand_rows(prompts, params.n, task_index)
        encoded = self.encode_prompts(prompts)
        gen = self.seeded_generator(params.seed)

        rows = len(prompt_of_row)
        step = self.micro_batch or max(rows, 1)
        was_training = self.model.training
        self.model.eval()
        parts = []
        try:
            for start in range(0, rows, step):
                sl = slice(start, start + step)
                with torch.inference_mode():
                    raw = self._generate_chunk([encoded[i] for i in prompt_of_row[sl]], params, gen)
                # Clone outside inference mode: inference tensors cannot be saved for backward,
                # and the learner multiplies by the masks and embeds the ids.
                raw = {k: v.to("cpu").clone() if torch.is_tensor(v) else v for k, v in raw.items()}
                parts.append(
                    Rollouts(
                        prompt_ids=raw["prompt_ids"],
                        prompt_mask=raw["prompt_mask"],
                        response_ids=raw["response_ids"],
                        loss_mask=raw["loss_mask"],
                        rollout_logp=raw["rollout_logp"],
                        group_ids=group_ids[sl].clone(),
                        task_index=row_tasks[sl],
                        response_text=raw["response_text"],
                        truncated=raw["truncated"],
                        info={"prompt": [prompts[i] for i in prompt_of_row[sl]], "finish_reason": raw["finish"]},
                    )
                )
        finally:
            self.model.train(was_training)
        if not parts:
            return _empty_rollouts(self.pad_token_id)
        return concat(parts, self.pad_token_id)

    def generate_ids(self, row_ids: list[list[int]], params: SamplingParams, generator: torch.Generator) -> dict:
        """One continuation per row of token ids, never re-encoded (the multi-turn loop's primitive).

        ``params.n`` is ignored. Returns per row (lists) the generated ``response_ids`` and their
        ``rollout_logp``, the ``finish`` reason and the decoded ``response_text``, as ``generate`` has them.
        """
        step = self.micro_batch or max(len(row_ids), 1)
        was_training = self.model.training
        self.model.eval()
        out: dict[str, list] = {"response_ids": [], "rollout_logp": [], "finish": [], "response_text": []}
        try:
            for s in range(0, len(row_ids), step):
                with torch.inference_mode():
                    raw = self._generate_chunk(row_ids[s: s + step], params, generator)
                for i in range(len(raw["finish"])):
                    n = int(raw["loss_mask"][i].sum())
                    out["response_ids"].append(raw["response_ids"][i, :n].tolist())
                    out["rollout_logp"].append(raw["rollout_logp"][i, :n].tolist())
                out["finish"] += raw["finish"]
                out["response_text"] += raw["response_text"]
        finally:
            self.model.train(was_training)
        return out

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any) -> torch.Tensor:
        """Logits (b, V) of the last position."""
        kwargs = {self._cache_kw: cache}
        if self._keep_logits:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **kwargs)
        return out.logits[:, -1]

    def _generate_chunk(self, row_ids: list[list[int]], params: SamplingParams, gen: torch.Generator) -> dict:
        device, pad = self.device, self.pad_token_id
        b, max_new = len(row_ids), params.max_new_tokens

        # Prefill each distinct prompt once, then fan its cache out to its rows (n samples share it).
        uniq: dict[tuple[int, ...], int] = {}
        row_to_u = torch.tensor([uniq.setdefault(tuple(r), len(uniq)) for r in row_ids], device=device)
        tp = max(len(u) for u in uniq)
        ids_u = torch.full((len(uniq), tp), pad, dtype=torch.long, device=device)
        mask_u = torch.zeros((len(uniq), tp), dtype=torch.long, device=device)
        for u, k in uniq.items():
            ids_u[k, tp - len(u):] = torch.tensor(u, dtype=torch.long, device=device)
            mask_u[k, tp - len(u):] = 1
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(ids_u, mask_u, (mask_u.cumsum(1) - 1).clamp(min=0), cache)[row_to_u]
        if len(uniq) != b:
            cache.batch_select_indices(row_to_u)
        prompt_ids, prompt_mask = ids_u[row_to_u], mask_u[row_to_u]

        tokens = torch.full((b, max_new), pad, dtype=torch.long, device=device)
        logps = torch.zeros((b, max_new), dtype=torch.float32, device=device)
        lengths = torch.zeros(b, dtype=torch.long, device=device)
        finish = ["length"] * b
        stop_ids = torch.tensor(self.stop_token_ids, dtype=torch.long, device=device)
        # ``batch_rows[j]`` is the chunk row held at batch position j; ``live`` marks rows still sampling.
        batch_rows = torch.arange(b, device=device)
        live = torch.ones(b, dtype=torch.bool, device=device)
        attn = prompt_mask.clone()
        next_pos = attn.sum(1)
        for t in range(max_new):
            tok, lp = sample_next(logits, params, gen)
            idx = batch_rows[live]
            tokens[idx, t] = tok[live]
            logps[idx, t] = lp[live]
            lengths[idx] = t + 1
            done = live & torch.isin(tok, stop_ids)
            for j in done.nonzero().flatten().tolist():
                finish[int(batch_rows[j])] = "eos"
            if params.stop:
                check = (live & ~done).nonzero().flatten().tolist()
                if check:
                    texts = self._tokenizer.batch_decode(
                        [tokens[int(batch_rows[j]), : t + 1].tolist() for j in check], skip_special_tokens=True
                    )
                    for j, text in zip(check, texts):
                        if any(s in text for s in params.stop):
                            done[j] = True
                            finish[int(batch_rows[j])] = "stop"
            live = live & ~done
            if t == max_new - 1 or not bool(live.any()):
                break
            if self.compact and bool(done.any()):
                keep = live.nonzero().flatten()
                cache.batch_select_indices(keep)
                attn, next_pos, batch_rows = attn[keep], next_pos[keep], batch_rows[keep]
                tok, live = tok[keep], live[keep]
            feed = torch.where(live, tok, torch.full_like(tok, pad))
            attn = torch.cat([attn, live.long()[:, None]], dim=1)
            logits = self._forward(feed[:, None], attn, next_pos[:, None], cache)
            next_pos = next_pos + live.long()

        width = int(lengths.max()) if b else 0
        loss_mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).float()
        texts = self._tokenizer.batch_decode(
            [tokens[i, : int(lengths[i])].tolist() for i in range(b)], skip_special_tokens=True
        )
        return {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "response_ids": tokens[:, :width],
            "loss_mask": loss_mask,
            "rollout_logp": logps[:, :width],
            "truncated": torch.tensor([f == "length" for f in finish], dtype=torch.bool),
            "response_text": texts,
            "finish": finish,
        }




def _empty_rollouts(pad: int) -> Rollouts:
    z = torch.zeros((0, 0), dtype=torch.long)
    return Rollouts(
        prompt_ids=z, prompt_mask=z.clone(), response_ids=z.clone(), loss_mask=torch.zeros((0, 0)),
        rollout_logp=torch.zeros((0, 0)), group_ids=torch.zeros(0, dtype=torch.long), task_index=[],
        response_text=[], truncated=torch.zeros(0, dtype=torch.bool),
        info={"prompt": [], "finish_reason": []},
    )
