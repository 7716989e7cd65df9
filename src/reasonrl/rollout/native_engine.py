"""The native engine: our own prefill/decode over a HF Llama-family model's weights.

Why: HF's forward pays for generality on every decode step (cache objects, mask construction, a
module call per projection); for small models on CPU and for decode-bound GPUs that overhead is
most of the step. This engine keeps the model's own parameters (no copy, so the learner's in-place
updates are seen at the next ``generate``) and runs a lean decode step:

- one preallocated KV cache ``(layers, slots, 2, kv_heads, max_len, head_dim)``, zero-filled once;
- fused QKV and gate/up projections (rebuilt only when a parameter's version counter moved);
- continuous batching: rows wait in a queue; a finished row's slot is refilled at once from the
  queue (its prompt prefilled in a batch with the other newcomers, each distinct prompt once, its
  KV copied to the slots of its ``n`` samples), so long tails do not idle the batch; when the
  queue is empty and half the slots are idle the live slots are compacted to the front;
- sampling on device with ``sample_next`` (the same sampler and log-prob convention as
  ``HFEngine``); on CUDA the decode step can be captured once per (slots, window) bucket as a
  CUDA graph (``graph="cuda_graph"``) or compiled (``graph="compile"``).

Numerics follow ``transformers``' Llama/Qwen2 code (RMSNorm in fp32, the model's own rotary
table, softmax attention with ``head_dim ** -0.5``), so greedy output equals ``model.generate`` and
the recorded log-probs equal ``sequence_logprobs`` to float rounding (``tests/rollout``).
Supported: ``model_type`` llama and qwen2 (QKV bias) without sliding-window attention; anything
else fails at construction with a message pointing at ``rollout.engine=hf``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from reasonrl.batch import Rollouts
from reasonrl.rollout.engine import ModuleEngine, sample_and_record, stop_and_pad_ids
from reasonrl.rollout.hf_engine import _empty_rollouts
from reasonrl.rollout.sampling import SamplingParams

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
HEAD_ROWS = 2048  # vocabulary rows per LM-head call in the lean decode step (``NativeEngine._head``)
GraphMode = Literal["off", "compile", "cuda_graph"]
DecodeMode = Literal["lean", "reference"]


class UnsupportedModelError(ValueError):
    """The model's architecture is outside what the native decode step implements."""


def check_supported(model: torch.nn.Module) -> None:
    """Raise ``UnsupportedModelError`` naming the reason and the fix; return quietly if supported."""
    cfg = getattr(model, "config", None)
    mt = getattr(cfg, "model_type", None)
    fix = "set rollout.engine=hf (works with any causal LM)"
    if mt not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"rollout.engine=native supports model_type {list(SUPPORTED_MODEL_TYPES)} (LlamaForCausalLM, "
            f"Qwen2ForCausalLM); this model is {mt!r} ({type(model).__name__}): {fix}")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"rollout.engine=native needs hidden_act='silu', got {cfg.hidden_act!r}: {fix}")
    if any(t == "sliding_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        raise UnsupportedModelError(f"rollout.engine=native does not implement sliding-window attention: {fix}")
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        raise UnsupportedModelError(f"{type(model).__name__} lacks the .model.layers/.model.rotary_emb layout: {fix}")


@dataclass
class _Layer:
    ln1: torch.Tensor
    ln2: torch.Tensor
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor | None
    o_w: torch.Tensor
    o_b: torch.Tensor | None
    gu_w: torch.Tensor
    gu_b: torch.Tensor | None
    down_w: torch.Tensor
    down_b: torch.Tensor | None


def _cat_bias(*linears: torch.nn.Linear) -> torch.Tensor | None:
    bs = [lin.bias for lin in linears]
    if all(b is None for b in bs):
        return None
    return torch.cat([b if b is not None else lin.weight.new_zeros(lin.weight.shape[0]) for b, lin in zip(bs, linears)])


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """HF ``LlamaRMSNorm``: normalise in fp32, cast back, then scale.

    In fp32 the fused ``F.rms_norm`` computes the same expression in one op (checked equal in
    ``tests/rollout``); other dtypes follow HF's cast order exactly.
    """
    if x.dtype == torch.float32 and w.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


class NativeEngine(ModuleEngine):
    """Continuous-batching sampler over a Llama/Qwen2 HF model (module docstring).

    - ``slots``: rows decoded at once (KV-cache rows); ``None`` = every row of the call (no refill).
      Memory is ``slots * (longest prompt + max_new_tokens)`` KV positions.
    - ``add_special_tokens``, ``eos_token_ids``, ``stop_token_ids``: as in ``HFEngine``.
    - ``graph``: ``"off"`` (eager, any device), ``"cuda_graph"`` (CUDA only: capture the decode step
      per (slots, 128-position window) bucket and replay it), ``"compile"`` (``torch.compile`` of
      the decode step with a fixed window; recompiles per slot bucket).
    - ``decode``: ``"lean"`` (fewer ops per token, ``_decode``) or ``"reference"`` (the first
      implementation, kept for side-by-side measurement and tests); same tokens.

    Output layout and stop-string rule are ``HFEngine``'s. ``last_stats`` holds the last call's
    decode steps, mean slot occupancy, prefill/decode seconds and generated tokens.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        slots: int | None = None,
        add_special_tokens: bool = True,
        eos_token_ids: Sequence[int] | None = None,
        stop_token_ids: Sequence[int] = (),
        graph: GraphMode = "off",
        decode: DecodeMode = "lean",
    ) -> None:
        check_supported(model)
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be None or >= 1, got {slots}")
        if graph not in ("off", "compile", "cuda_graph"):
            raise ValueError(f"graph must be 'off', 'compile' or 'cuda_graph', got {graph!r}")
        if decode not in ("lean", "reference"):
            raise ValueError(f"decode must be 'lean' or 'reference', got {decode!r}")
        self.model = model
        self._tokenizer = tokenizer
        self.slots = slots
        self.add_special_tokens = add_special_tokens
        self.graph = graph
        self.decode = decode
        self.stop_token_ids, self.pad_token_id = stop_and_pad_ids(tokenizer, model, eos_token_ids, stop_token_ids)
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = float(cfg.rms_norm_eps)
        self.scale = self.head_dim ** -0.5
        self.weight_version = 0
        self.last_seed: int | None = None
        self.last_load_s = 0.0
        self.last_fuse_s = 0.0
        self.last_stats: dict[str, float] = {}
        self._sig: tuple | None = None
        self._layers: list[_Layer] = []
        self._rope: tuple[int, torch.dtype, torch.device, torch.Tensor, torch.Tensor] | None = None
        self._cache: torch.Tensor | None = None
        self._graphs: dict[tuple[int, int], Any] = {}
        self._compiled = None
        if graph == "cuda_graph" and self.device.type != "cuda":
            raise ValueError(f"graph='cuda_graph' needs the model on a CUDA device (it is on {self.device}); "
                             "use graph='off' on CPU")

    def _params(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters()]

    def _refresh(self) -> None:
        """Rebuild the fused QKV / gate-up weights if any parameter changed since the last build.

        ``Tensor._version`` counts in-place writes (optimizer steps, ``load_state_dict``), and the
        data pointer catches replaced parameters, so a stale fused copy is never used.
        """
        sig = tuple((p.data_ptr(), p._version) for p in self._params())
        if sig == self._sig:
            return
        t0 = time.perf_counter()
        layers = []
        with torch.no_grad():
            for blk in self.model.model.layers:
                a, m = blk.self_attn, blk.mlp
                layers.append(_Layer(
                    ln1=blk.input_layernorm.weight.detach(), ln2=blk.post_attention_layernorm.weight.detach(),
                    qkv_w=torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach(),
                    qkv_b=_cat_bias(a.q_proj, a.k_proj, a.v_proj),
                    o_w=a.o_proj.weight.detach(), o_b=None if a.o_proj.bias is None else a.o_proj.bias.detach(),
                    gu_w=torch.cat([m.gate_proj.weight, m.up_proj.weight]).detach(),
                    gu_b=_cat_bias(m.gate_proj, m.up_proj),
                    down_w=m.down_proj.weight.detach(),
                    down_b=None if m.down_proj.bias is None else m.down_proj.bias.detach(),
                ))
        self._layers = layers
        self._sig = sig
        self._graphs.clear()  # captured graphs hold the old fused tensors' addresses
        self.last_fuse_s = time.perf_counter() - t0

    def _rope_table(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, signed_sin)`` of shape (length, head_dim) from the model's own rotary module.

        ``rotate_half(x) * sin == roll(x, d/2) * cat(-sin1, sin2)`` exactly (a sign flip commutes
        with rounding), which saves the slice/negate/cat of ``rotate_half`` per step.
        """
        dev, dt = self.device, self._layers[0].o_w.dtype
        if self._rope is not None and self._rope[0] >= length and self._rope[1] == dt and self._rope[2] == dev:
            return self._rope[3], self._rope[4]
        length = max(length, 2 * (self._rope[0] if self._rope else 0))
        pos = torch.arange(length, device=dev)[None]
        cos, sin = self.model.model.rotary_emb(torch.zeros(1, dtype=dt, device=dev), pos)
        cos, sin = cos[0], sin[0]
        h = self.head_dim // 2
        ssin = torch.cat([-sin[:, :h], sin[:, h:]], dim=-1)
        self._rope = (length, dt, dev, cos, ssin)
        return cos, ssin

    # ------------------------------------------------------------------ model maths
    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head. The lean step runs the head over ``HEAD_ROWS``-row blocks of the
        vocabulary: each logit is the same dot product (bit-equal), but at a few rows per call MKL's
        GEMM streams a 49k x 576 matrix at ~6 GB/s in one call and ~8-11 GB/s in L2/L3-sized blocks."""
        m = self.model
        h = rms_norm(x, m.model.norm.weight, self.eps)
        w, b = m.lm_head.weight, m.lm_head.bias
        if self.decode == "reference" or w.shape[0] <= 2 * HEAD_ROWS or h.device.type != "cpu":
            return F.linear(h, w, b)
        return torch.cat([F.linear(h, w[i:i + HEAD_ROWS], None if b is None else b[i:i + HEAD_ROWS])
                          for i in range(0, w.shape[0], HEAD_ROWS)], dim=-1)

    def _prefill(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded prompts (m, T) -> (kv (layers, m, 2, KV, T, hd), last-token logits (m, V)).

        Right padding needs only a causal mask: a real token never sees a pad to its right. The pads'
        own K/V land beyond each prompt's length, where decode masks them until it overwrites them.
        """
        m_, t_ = ids.shape
        H, KV, hd = self.n_heads, self.n_kv, self.head_dim
        g = H // KV
        cos, ssin = self._rope_table(t_)
        cos, ssin = cos[:t_, None, :], ssin[:t_, None, :]  # (T, 1, hd) broadcast over heads
        x = F.embedding(ids, self.model.model.embed_tokens.weight)
        kv = x.new_empty((len(self._layers), m_, 2, KV, t_, hd))
        for li, lw in enumerate(self._layers):
            h = rms_norm(x, lw.ln1, self.eps)
            qkv = F.linear(h, lw.qkv_w, lw.qkv_b).view(m_, t_, H + 2 * KV, hd)
            qk = qkv[:, :, : H + KV]
            qk = qk * cos + qk.roll(hd // 2, -1) * ssin
            q = qk[:, :, :H].transpose(1, 2)
            k = qk[:, :, H:].transpose(1, 2)
            v = qkv[:, :, H + KV:].transpose(1, 2)
            kv[li, :, 0] = k
            kv[li, :, 1] = v
            if g > 1:
                k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
            x = x + F.linear(a.transpose(1, 2).reshape(m_, t_, H * hd), lw.o_w, lw.o_b)
            h = rms_norm(x, lw.ln2, self.eps)
            gate, up = F.linear(h, lw.gu_w, lw.gu_b).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, lw.down_w, lw.down_b)
        last = x[torch.arange(m_, device=x.device), lengths - 1]
        return kv, self._head(last)

    def _decode(self, cache: torch.Tensor, tok: torch.Tensor, pos: torch.Tensor, window: int) -> torch.Tensor:
        """One token per slot: write its K/V at ``pos``, attend to positions ``<= pos``; logits (S, V).

        The lean step (``decode="lean"``, the default): everything that depends only on the step
        (rotary rows, the additive mask, the flat K/V write offsets) is built once, not per layer; each
        layer writes K and V with one ``index_copy_`` into the flat cache row of its slot and position
        (instead of two advanced-index writes), and attends with two batched matmuls and a softmax
        (at one query per slot the fused SDPA kernel's set-up costs more than the maths). Grouped-query
        attention without copying K/V: the ``g`` query heads sharing a KV head are ``g`` query rows of
        one matmul. Same maths as ``_decode_reference``; tokens equal (``tests/rollout``).
        """
        if self.decode == "reference":
            return self._decode_reference(cache, tok, pos, window)
        s_, t_ = tok.shape[0], cache.shape[4]
        H, KV, hd = self.n_heads, self.n_kv, self.head_dim
        g = H // KV
        cos_t, ssin_t = self._rope[3], self._rope[4]
        cos, ssin = cos_t[pos][:, None, :], ssin_t[pos][:, None, :]
        mask = (torch.arange(window, device=tok.device)[None, :] <= pos[:, None])[:, None, None, :]
        # flat row of (slot s, k/v j, head h, position pos[s]) in one layer's (S * 2 * KV * T, hd) cache view
        idx = ((torch.arange(s_, device=tok.device)[:, None] * (2 * KV) + torch.arange(2 * KV, device=tok.device))
               * t_ + pos[:, None]).flatten()
        x = F.embedding(tok, self.model.model.embed_tokens.weight)
        for li, lw in enumerate(self._layers):
            h = rms_norm(x, lw.ln1, self.eps)
            qkv = F.linear(h, lw.qkv_w, lw.qkv_b).view(s_, H + 2 * KV, hd)
            qk = qkv[:, : H + KV]
            qk = qk * cos + qk.roll(hd // 2, -1) * ssin
            c = cache[li]
            c.view(-1, hd).index_copy_(0, idx, torch.cat([qk[:, H:], qkv[:, H + KV:]], 1).view(-1, hd))
            q = qk[:, :H].reshape(s_, KV, g, hd)
            a = F.scaled_dot_product_attention(q, c[:, 0, :, :window], c[:, 1, :, :window], attn_mask=mask,
                                               scale=self.scale)
            x = x + F.linear(a.reshape(s_, H * hd), lw.o_w, lw.o_b)
            h = rms_norm(x, lw.ln2, self.eps)
            gate, up = F.linear(h, lw.gu_w, lw.gu_b).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, lw.down_w, lw.down_b)
        return self._head(x).float()

    def _decode_reference(self, cache: torch.Tensor, tok: torch.Tensor, pos: torch.Tensor, window: int) -> torch.Tensor:
        """The first decode step (``decode="reference"``): one token per slot, K/V written by advanced
        indexing, SDPA attention; kept to measure the lean step against (``bench.mode=decode``) and to test it.

        Grouped-query attention without copying K/V: the ``g`` query heads sharing a KV head are laid
        out as ``g`` query rows of one attention call (the mask is per key, so they share it).
        """
        s_ = tok.shape[0]
        H, KV, hd = self.n_heads, self.n_kv, self.head_dim
        g = H // KV
        cos_t, ssin_t = self._rope[3], self._rope[4]
        cos, ssin = cos_t[pos][:, None, :], ssin_t[pos][:, None, :]
        rows = torch.arange(s_, device=tok.device)
        mask = (torch.arange(window, device=tok.device)[None, :] <= pos[:, None])[:, None, None, :]
        x = F.embedding(tok, self.model.model.embed_tokens.weight)
        for li, lw in enumerate(self._layers):
            h = rms_norm(x, lw.ln1, self.eps)
            qkv = F.linear(h, lw.qkv_w, lw.qkv_b).view(s_, H + 2 * KV, hd)
            qk = qkv[:, : H + KV]
            qk = qk * cos + qk.roll(hd // 2, -1) * ssin
            c = cache[li]
            c[rows, 0, :, pos] = qk[:, H:]
            c[rows, 1, :, pos] = qkv[:, H + KV:]
            q = qk[:, :H].reshape(s_, KV, g, hd)
            a = F.scaled_dot_product_attention(q, c[:, 0, :, :window], c[:, 1, :, :window], attn_mask=mask,
                                               scale=self.scale)
            x = x + F.linear(a.reshape(s_, H * hd), lw.o_w, lw.o_b)
            h = rms_norm(x, lw.ln2, self.eps)
            gate, up = F.linear(h, lw.gu_w, lw.gu_b).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, lw.down_w, lw.down_b)
        return self._head(x).float()

    def _decode_step(self, cache: torch.Tensor, tok: torch.Tensor, pos: torch.Tensor, need: int) -> torch.Tensor:
        """Dispatch the decode step: eager (exact window), compiled, or a replayed CUDA graph."""
        if self.graph == "off":
            return self._decode(cache, tok, pos, need)
        cap = cache.shape[4]
        if self.graph == "compile":
            if self._compiled is None:
                self._compiled = torch.compile(self._decode, dynamic=False)
            return self._compiled(cache, tok, pos, cap)
        window = min(cap, -(-need // 128) * 128)
        key = (tok.shape[0], window, cache.data_ptr())
        gr = self._graphs.get(key)
        if gr is None:
            gr = _CudaGraphStep(self, cache, tok, pos, window)
            self._graphs[key] = gr
        return gr(tok, pos)

    # ------------------------------------------------------------------ generation
    def generate(
        self, prompts: list[str], params: SamplingParams, task_index: list[int] | None = None
    ) -> Rollouts:
        prompt_of_row, group_ids, row_tasks = self.expand_rows(prompts, params.n, task_index)
        encoded = self.encode_prompts(prompts)
        gen = self.seeded_generator(params.seed)
        if not prompt_of_row:
            return _empty_rollouts(self.pad_token_id)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                self._refresh()
                raw = self._run(encoded, prompt_of_row, params, gen)
        finally:
            self.model.train(was_training)
        return self.assemble_rollouts(prompts, encoded, prompt_of_row, group_ids, row_tasks, raw)

    def _cache_for(self, slots: int, length: int) -> torch.Tensor:
        """The persistent zero-filled KV buffer, grown when a call needs more (zeros: a masked
        position must never hold NaN, since 0 attention weight times NaN is NaN)."""
        L = len(self._layers)
        shape = (L, slots, 2, self.n_kv, length, self.head_dim)
        c = self._cache
        dt = self._layers[0].o_w.dtype
        if c is None or c.shape[1] < slots or c.shape[4] < length or c.dtype != dt or c.device != self.device:
            self._cache = c = torch.zeros(shape, dtype=dt, device=self.device)
            self._graphs.clear()
        return c

    def _run(self, encoded: list[list[int]], prompt_of_row: list[int], params: SamplingParams,
             gen: torch.Generator) -> dict[str, Any]:
        dev, pad = self.device, self.pad_token_id
        rows, max_new = len(prompt_of_row), params.max_new_tokens
        n_slots = min(self.slots or rows, rows)
        max_len = max(len(e) for e in encoded) + max_new
        cache_all = self._cache_for(n_slots, max_len)
        self._rope_table(max_len)
        stop_ids = torch.tensor(self.stop_token_ids, dtype=torch.long)
        out_tok = torch.full((rows, max_new), pad, dtype=torch.long)
        out_lp = torch.zeros((rows, max_new), dtype=torch.float32)
        count = torch.zeros(rows, dtype=torch.long)
        finish = ["length"] * rows
        # per-slot state (CPU mirrors; device copies are made per step)
        s_eff = n_slots
        slot_row = torch.full((s_eff,), -1, dtype=torch.long)
        pos = torch.zeros(s_eff, dtype=torch.long)
        active = torch.zeros(s_eff, dtype=torch.bool)
        tok_dev = torch.zeros(s_eff, dtype=torch.long, device=dev)
        logits: torch.Tensor | None = None
        queue = deque(range(rows))
        prefilled: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}
        remaining = {u: 0 for u in set(prompt_of_row)}
        for u in prompt_of_row:
            remaining[u] += 1
        stats = {"decode_steps": 0, "slot_busy": 0.0, "prefill_s": 0.0, "decode_s": 0.0, "prefill_prompts": 0}

        def admit(free: list[int], logits: torch.Tensor | None) -> torch.Tensor:
            t0 = time.perf_counter()
            take = [queue.popleft() for _ in range(min(len(free), len(queue)))]
            need = sorted({prompt_of_row[r] for r in take if prompt_of_row[r] not in prefilled})
            if need:
                t_ = max(len(encoded[u]) for u in need)
                ids = torch.full((len(need), t_), pad, dtype=torch.long)
                for j, u in enumerate(need):
                    ids[j, : len(encoded[u])] = torch.tensor(encoded[u])
                lens = torch.tensor([len(encoded[u]) for u in need])
                kv, lg = self._prefill(ids.to(dev), lens.to(dev))
                for j, u in enumerate(need):
                    prefilled[u] = (kv[:, j], lg[j].float(), len(encoded[u]))
                stats["prefill_prompts"] += len(need)
            if logits is None:
                logits = torch.zeros((s_eff, self.model.lm_head.weight.shape[0]), dtype=torch.float32, device=dev)
            for s, r in zip(free, take):
                u = prompt_of_row[r]
                kv_u, lg_u, n_u = prefilled[u]
                cache_all[:, s, :, :, :n_u] = kv_u[:, :, :, :n_u]
                logits[s] = lg_u
                slot_row[s], pos[s], active[s] = r, n_u, True
                remaining[u] -= 1
                if remaining[u] == 0:
                    del prefilled[u]
            stats["prefill_s"] += time.perf_counter() - t0
            return logits

        logits = admit(list(range(s_eff)), None)
        while True:
            act = active.clone()
            tok_s, done = sample_and_record(logits, act, params, gen, 0, slot_row, count, out_tok, out_lp,
                                            stop_ids, max_new, finish, self._tokenizer, stats)
            tok_dev = tok_s
            active &= ~done
            if not queue and not bool(active.any()):
                break
            n_live = int(active.sum())
            if not queue and n_live <= s_eff // 2:
                # compact live slots to the front (one copy), so idle slots stop costing compute
                keep = active.nonzero().flatten()
                new_s = n_live if self.graph == "off" else min(s_eff, 1 << max(0, (n_live - 1).bit_length()))
                order = torch.cat([keep, (~active).nonzero().flatten()])[:new_s]
                od = order.to(dev)
                cache_all[:, :new_s] = cache_all[:, od]
                slot_row, pos, active = slot_row[order], pos[order], active[order]
                tok_dev = tok_dev[od]
                s_eff = new_s
            t0 = time.perf_counter()
            need = int(pos[active].max()) + 1 if n_live else 1
            cache = cache_all[:, :s_eff]
            logits = self._decode_step(cache, tok_dev, pos.to(dev), need)
            stats["decode_s"] += time.perf_counter() - t0
            stats["decode_steps"] += 1
            pos += active.long()
            free = (~active).nonzero().flatten().tolist()
            if queue and free:
                logits = admit(free, logits)
        stats["slot_busy"] /= max(1, stats["decode_steps"] + 1)
        stats["gen_tokens"] = float(count.sum())
        self.last_stats = stats
        return {"tokens": out_tok, "logp": out_lp, "lengths": count, "finish": finish}


class _CudaGraphStep:
    """One captured decode step for fixed (slots, window, cache): copy inputs in, replay, read logits.

    The warm-up runs execute the real step with the real inputs (writing the same K/V the replay
    writes again), so capturing lazily at first use needs no dummy state.
    """

    def __init__(self, eng: NativeEngine, cache: torch.Tensor, tok: torch.Tensor, pos: torch.Tensor, window: int):
        self.tok, self.pos = tok.clone(), pos.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                eng._decode(cache, self.tok, self.pos, window)
        torch.cuda.current_stream().wait_stream(stream)
        self.g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.g):
            self.out = eng._decode(cache, self.tok, self.pos, window)

    def __call__(self, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        self.tok.copy_(tok)
        self.pos.copy_(pos)
        self.g.replay()
        return self.out.clone()


def decode_bytes_per_step(model: torch.nn.Module, slots: int, mean_context: float) -> float:
    """Bytes a decode step must read from memory: every weight once plus each slot's K/V context.

    The HBM roofline of decode is ``slots / (bytes / bandwidth)`` tokens per second (used by the
    GPU benchmark); activations are ignored (small next to weights and KV at these sizes).
    """
    cfg = model.config
    w = sum(p.numel() * p.element_size() for p in model.parameters())  # a tied matrix counts once
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    elt = next(model.parameters()).element_size()
    kv = 2 * cfg.num_hidden_layers * kv_heads * hd * elt * slots * mean_context
    return float(w + kv)


__all__ = ["NativeEngine", "UnsupportedModelError", "check_supported", "decode_bytes_per_step", "rms_norm",
           "SUPPORTED_MODEL_TYPES"]
