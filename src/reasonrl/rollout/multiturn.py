"""Multi-turn tool rollouts and SSRL information masking, as ``Engine`` wrappers over ``HFEngine``.

``MultiTurnEngine``: generate until a tool's close tag (``</search>``), run the tool on the text after
its open tag, append ``<output_tag>result</output_tag>`` and continue, up to ``max_turns`` calls; after
the last allowed call the sample continues with tools off, so it can still answer (Search-R1's final
turn). Token-in/token-out: each turn continues from the exact ids so far (``HFEngine.generate_ids``),
inserted outputs are encoded once on their own and appended, and the row is trained on exactly those
ids — never on a re-encoding of the decoded text, which can tokenise differently and would silently
break the sampler/learner log-prob match. Inserted tokens are in the sequence (``response_valid`` 1)
with ``loss_mask`` 0 and ``rollout_logp`` 0. Positions stay contiguous, so ``sequence_logprobs``
reproduces every generated token's ``rollout_logp``.

``InformationMaskEngine``: SSRL trains by single-pass generation in which the policy writes its own
``<information>`` blocks; their tokens get ``loss_mask`` 0 (algorithms.md §5.3). Spans are found on
the decoded text with DOTALL (the released code's regex misses multi-line blocks) and mapped to tokens
through per-token character offsets of the generated ids (no prefix re-encoding). A token that
overlaps a span at all is masked; a block that never closes masks nothing (spec edge case).

A tool is anything with ``name`` (called as ``<name>query</name>``), ``output_tag`` and
``call(query) -> str``; ``Calculator`` here and ``reasonrl.rollout.search.SearchTool`` are two.
"""

from __future__ import annotations

import ast
import operator
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from reasonrl.batch import Rollouts
from reasonrl.rollout.engine import Engine
from reasonrl.rollout.sampling import SamplingParams

__all__ = ["Tool", "Calculator", "MultiTurnEngine", "InformationMaskEngine", "char_ends", "span_token_mask",
           "tag_spans"]


class Tool(Protocol):
    name: str
    output_tag: str

    def call(self, query: str) -> str: ...


_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class Calculator:
    """``<calc>3*(4+5)</calc>`` -> ``<result>27</result>``: + - * / // % ** on numbers, nothing else.

    Parsed with ``ast`` and walked (never ``eval``); exponents are capped so a policy cannot stall a
    rollout with ``9**9**9``. Errors become the tool's output (the policy sees and learns from them).
    """

    name = "calc"
    output_tag = "result"
    max_exponent = 64

    def call(self, query: str) -> str:
        try:
            v = self._eval(ast.parse(query.strip(), mode="eval").body)
        except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError) as e:
            return f"error: {type(e).__name__}"
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return str(round(v, 6) if isinstance(v, float) else v)

    def _eval(self, node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            a, b = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Pow) and abs(b) > self.max_exponent:
                raise ValueError("exponent too large")
            return _BIN[type(node.op)](a, b)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self._eval(node.operand))
        raise ValueError("unsupported expression")


def char_ends(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """``ends[k]`` = length of ``decode(ids[:k+1])``: where each token's text ends in the decoded response.

    Decodes prefixes (one batched call), so it holds for any tokenizer whose decoding is
    prefix-stable; made non-decreasing for byte-level tokenizers that decode half a UTF-8 char to U+FFFD.
    """
    if not ids:
        return []
    texts = tokenizer.batch_decode([list(ids[: k + 1]) for k in range(len(ids))], skip_special_tokens=True)
    ends, hi = [], 0
    for t in texts:
        hi = max(hi, len(t))
        ends.append(hi)
    return ends


def tag_spans(text: str, tag: str = "information") -> list[tuple[int, int]]:
    """Character spans of complete ``<tag>...</tag>`` blocks (tags included, DOTALL, non-greedy)."""
    return [m.span() for m in re.finditer(rf"<{re.escape(tag)}>.*?</{re.escape(tag)}>", text, re.DOTALL)]


def span_token_mask(ends: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[float]:
    """1.0 for tokens outside every span, 0.0 for tokens whose character range overlaps one."""
    keep = []
    start = 0
    for end in ends:
        hit = any(start < s1 and s0 < end for s0, s1 in spans) if end > start else any(s0 < start < s1 for s0, s1 in spans)
        keep.append(0.0 if hit else 1.0)
        start = end
    return keep


class _Wrapper(Engine):
    """An engine around ``self.base``: same tokenizer, weights pushed through to the base."""

    base: Any

    @property
    def tokenizer(self) -> Any:
        return self.base.tokenizer

    def load_weights(self, weights: Mapping[str, torch.Tensor] | torch.nn.Module) -> None:
        self.base.load_weights(weights)


class InformationMaskEngine(_Wrapper):
    """Wraps an engine; zeroes ``loss_mask`` on self-generated ``<tag>`` blocks (module docstring)."""

    def __init__(self, base: Engine, tag: str = "information"):
        self.base, self.tag = base, tag
        self.last_metrics: dict[str, float] = {}

    def generate(self, prompts: list[str], params: SamplingParams, task_index: list[int] | None = None) -> Rollouts:
        ro = self.base.generate(prompts, params, task_index)
        self.last_metrics = dict(getattr(self.base, "last_metrics", {}))
        valid = ro.response_valid.clone()
        before = float(ro.loss_mask.sum())
        mask = ro.loss_mask.clone()
        for i in range(len(ro)):
            n = int(valid[i].sum())
            ids = ro.response_ids[i, :n].tolist()
            ends = char_ends(self.tokenizer, ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            keep = torch.tensor(span_token_mask(ends, tag_spans(text, self.tag)), dtype=mask.dtype)
            mask[i, :n] = mask[i, :n] * keep
        ro.valid_mask = valid
        ro.loss_mask = mask
        self.last_metrics["rollout/info_masked_frac"] = (before - float(mask.sum())) / max(before, 1.0)
        return ro


class MultiTurnEngine(_Wrapper):
    """Tool loop over an ``HFEngine`` (module docstring). ``max_new_tokens`` bounds the whole response,
    generated and inserted tokens together; a tool output that does not fit is cut and the row ends
    with ``finish_reason`` "length".

    ``info`` per row: ``finish_reason``, ``tool_calls`` (names, in order), ``turn_lengths`` (generated
    tokens per turn), ``tool_latency_s`` (per call). ``last_metrics``: batch means for the trainer log.
    """

    def __init__(self, base: Any, tools: Sequence[Tool], max_turns: int = 3):
        if not hasattr(base, "generate_ids"):
            raise TypeError(f"MultiTurnEngine needs an engine with generate_ids (HFEngine); got {type(base).__name__}")
        names = [t.name for t in tools]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"tools must be a non-empty list with distinct names, got {names}")
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.base, self.tools, self.max_turns = base, {t.name: t for t in tools}, max_turns
        self.last_metrics: dict[str, float] = {}

    def _find_call(self, text: str) -> tuple[str, str] | None:
        """``(tool name, query)`` if ``text`` (one turn's output) ends a tool call, else ``None``."""
        best = None
        for name in self.tools:
            pos = text.find(f"</{name}>")
            if pos >= 0 and (best is None or pos < best[0]):
                best = (pos, name)
        if best is None:
            return None
        pos, name = best
        head = text[:pos]
        start = head.rfind(f"<{name}>")
        return name, (head[start + len(name) + 2:] if start >= 0 else head).strip()

    def generate(self, prompts: list[str], params: SamplingParams, task_index: list[int] | None = None) -> Rollouts:
        tok = self.tokenizer
        prompt_of_row, group_ids, row_tasks = self.expand_rows(prompts, params.n, task_index)
        enc = [list(tok(p, add_special_tokens=self.base.add_special_tokens)["input_ids"]) for p in prompts]
        for p, ids in zip(prompts, enc):
            if not ids:
                raise ValueError(f"prompt {p!r} encodes to no tokens; the first token would have no context")
        gen = torch.Generator(device=self.base.device)
        if params.seed is None:
            gen.seed()
        else:
            gen.manual_seed(params.seed)
        rows = len(prompt_of_row)
        budget = params.max_new_tokens
        ids: list[list[int]] = [[] for _ in range(rows)]
        mask: list[list[float]] = [[] for _ in range(rows)]
        logp: list[list[float]] = [[] for _ in range(rows)]
        finish = ["length"] * rows
        calls: list[list[str]] = [[] for _ in range(rows)]
        turn_lengths: list[list[int]] = [[] for _ in range(rows)]
        latency: list[list[float]] = [[] for _ in range(rows)]
        live = list(range(rows))
        tool_stops = [f"</{n}>" for n in self.tools]
        while live:
            nxt = []
            # rows that may still call a tool stop at a close tag; rows at the limit generate to the end
            for group in ([r for r in live if len(calls[r]) < self.max_turns],
                          [r for r in live if len(calls[r]) >= self.max_turns]):
                if not group:
                    continue
                tools_on = len(calls[group[0]]) < self.max_turns
                room = max(budget - len(ids[r]) for r in group)
                sp = SamplingParams(n=1, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                                    max_new_tokens=room, greedy=params.greedy,
                                    stop=list(params.stop) + (tool_stops if tools_on else []))
                out = self.base.generate_ids([enc[prompt_of_row[r]] + ids[r] for r in group], sp, gen)
                for j, r in enumerate(group):
                    new, lp, fin = out["response_ids"][j], out["rollout_logp"][j], out["finish"][j]
                    left = budget - len(ids[r])
                    if len(new) > left:
                        new, lp, fin = new[:left], lp[:left], "length"
                    ids[r] += new
                    logp[r] += lp
                    mask[r] += [1.0] * len(new)
                    turn_lengths[r].append(len(new))
                    call = self._find_call(out["response_text"][j]) if fin == "stop" and tools_on else None
                    if call is None:
                        finish[r] = fin
                        continue
                    name, query = call
                    tool = self.tools[name]
                    t0 = time.perf_counter()
                    result = tool.call(query)
                    latency[r].append(time.perf_counter() - t0)
                    calls[r].append(name)
                    ins = list(tok(f"<{tool.output_tag}>{result}</{tool.output_tag}>", add_special_tokens=False)["input_ids"])
                    left = budget - len(ids[r])
                    ids[r] += ins[:left]
                    logp[r] += [0.0] * len(ins[:left])
                    mask[r] += [0.0] * len(ins[:left])
                    if len(ins) >= left:
                        finish[r] = "length"
                        continue
                    nxt.append(r)
            live = sorted(nxt)
        return self._pack(prompts, prompt_of_row, group_ids, row_tasks, enc, ids, mask, logp, finish, calls,
                          turn_lengths, latency)

    def _pack(self, prompts, prompt_of_row, group_ids, row_tasks, enc, ids, mask, logp, finish, calls,
              turn_lengths, latency) -> Rollouts:
        pad = self.base.pad_token_id
        rows = len(ids)
        tp = max((len(enc[p]) for p in prompt_of_row), default=0)
        tr = max((len(x) for x in ids), default=0)
        prompt_ids = torch.full((rows, tp), pad, dtype=torch.long)
        prompt_mask = torch.zeros((rows, tp), dtype=torch.long)
        response_ids = torch.full((rows, tr), pad, dtype=torch.long)
        loss_mask = torch.zeros((rows, tr))
        rollout_logp = torch.zeros((rows, tr))
        valid = torch.zeros((rows, tr))
        for r in range(rows):
            p = enc[prompt_of_row[r]]
            prompt_ids[r, tp - len(p):] = torch.tensor(p)
            prompt_mask[r, tp - len(p):] = 1
            n = len(ids[r])
            response_ids[r, :n] = torch.tensor(ids[r], dtype=torch.long)
            loss_mask[r, :n] = torch.tensor(mask[r])
            rollout_logp[r, :n] = torch.tensor(logp[r])
            valid[r, :n] = 1.0
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        n_calls = [len(c) for c in calls]
        lat = [x for row in latency for x in row]
        turns = [x for row in turn_lengths for x in row]
        self.last_metrics = {
            "rollout/tool_calls_mean": sum(n_calls) / max(rows, 1),
            "rollout/turn_length_mean": sum(turns) / max(len(turns), 1),
            "rollout/tool_latency_mean_s": sum(lat) / len(lat) if lat else 0.0,
            "rollout/tool_latency_max_s": max(lat, default=0.0),
        }
        return Rollouts(
            prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=response_ids, loss_mask=loss_mask,
            rollout_logp=rollout_logp, group_ids=group_ids, task_index=row_tasks, response_text=texts,
            truncated=torch.tensor([f == "length" for f in finish], dtype=torch.bool),
            valid_mask=valid,
            info={"prompt": [prompts[p] for p in prompt_of_row], "finish_reason": finish, "tool_calls": calls,
                  "turn_lengths": turn_lengths, "tool_latency_s": latency})
