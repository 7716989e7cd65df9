"""Optional vLLM engine behind the ``Engine`` interface (``rollout.engine=vllm``).

``vllm`` is not a dependency (it needs CUDA and pins its own torch), so nothing here imports it at
module level: ``require_vllm`` fails with a clear message when it is missing, and everything the
adapter does besides calling vLLM is plain conversion code, tested on CPU with objects shaped like
vLLM's (``tests/rollout/test_rollout_vllm_adapter.py``):

- ``sampling_kwargs``: our ``SamplingParams`` -> vLLM ``SamplingParams`` keyword arguments;
- ``rollouts_from_outputs``: vLLM ``RequestOutput``s -> one ``Rollouts`` batch in our row layout,
  with the sampled tokens' log-probs;
- ``weight_items``: the learner's named parameters -> the ``(name, tensor)`` pairs vLLM's
  ``model.load_weights`` takes (HF names; vLLM fuses q/k/v and gate/up itself).

Log-prob convention. Ours (``sampling.py``) is ``log_softmax(logits / T)`` before top-k/top-p
truncation. vLLM returns that when the engine is built with ``logprobs_mode="processed_logprobs"``
and no truncation is used; with top-k/top-p its processed log-probs are renormalised over the kept
tokens, so they are larger than the learner's. ``from_pretrained`` sets that mode; the trainer's
``rollout/logp_mismatch_*`` metrics show any remaining gap.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from reasonrl.batch import Rollouts
from reasonrl.rollout.engine import Engine, stop_and_pad_ids
from reasonrl.rollout.hf_engine import _empty_rollouts
from reasonrl.rollout.sampling import SamplingParams

# prefixes that wrappers add to parameter names (DDP, torch.compile, FSDP1, activation checkpointing)
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


class VLLMUnavailableError(ValueError):
    """``rollout.engine=vllm`` was asked for but the package is not importable."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    if not vllm_available():
        raise VLLMUnavailableError(
            "rollout.engine=vllm needs the `vllm` package (a CUDA machine; `pip install vllm`), which is not "
            "installed here; use rollout.engine=native (Llama/Qwen2) or rollout.engine=hf")


def sampling_kwargs(params: SamplingParams, stop_token_ids: Sequence[int] = ()) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` that reproduce ``params``.

    Greedy is ``temperature=0`` (vLLM then records log-probs at temperature 1, as we do);
    ``top_k=0`` (ours: off) is ``-1`` (vLLM: off); ``logprobs=0`` returns the sampled token's
    log-prob only; stop strings stay in the output text, as in our engines.
    """
    return {
        "n": params.n,
        "temperature": 0.0 if params.greedy else float(params.temperature),
        "top_p": 1.0 if params.greedy else float(params.top_p),
        "top_k": -1 if params.greedy or params.top_k == 0 else int(params.top_k),
        "max_tokens": params.max_new_tokens,
        "stop": list(params.stop),
        "stop_token_ids": [int(t) for t in stop_token_ids],
        "include_stop_str_in_output": True,
        "seed": params.seed,
        "logprobs": 0,
    }


def _logprob_value(entry: Any) -> float:
    return float(entry.logprob if hasattr(entry, "logprob") else entry)


def rollouts_from_outputs(
    outputs: Sequence[Any],
    prompts: list[str],
    tokenizer: Any,
    params: SamplingParams,
    *,
    pad_token_id: int,
    stop_token_ids: Sequence[int],
    task_index: list[int] | None = None,
) -> Rollouts:
    """vLLM ``RequestOutput``s (one per prompt, ``n`` completions each) -> ``Rollouts``.

    Completion ``j`` of request ``i`` becomes row ``i*n + j`` (``Engine`` layout). A completion
    ending in one of ``stop_token_ids`` is ``"eos"``, vLLM ``finish_reason="stop"`` otherwise is a
    stop string (``"stop"``), ``"length"`` sets ``truncated``. Texts are decoded with our tokenizer
    (``skip_special_tokens``), exactly as the other engines decode.
    """
    _, group_ids, row_tasks = Engine.expand_rows(prompts, params.n, task_index)
    if len(outputs) != len(prompts):
        raise ValueError(f"vLLM returned {len(outputs)} request outputs for {len(prompts)} prompts")
    stop_set = {int(t) for t in stop_token_ids}
    prompt_rows, resp, lps, finish = [], [], [], []
    for i, out in enumerate(outputs):
        comps = sorted(out.outputs, key=lambda c: getattr(c, "index", 0))
        if len(comps) != params.n:
            raise ValueError(f"request {i} has {len(comps)} completions, expected n={params.n}")
        for c in comps:
            ids = [int(t) for t in c.token_ids]
            if c.logprobs is None:
                raise ValueError("vLLM returned no log-probs: the adapter needs SamplingParams(logprobs=0)")
            if len(c.logprobs) != len(ids):
                raise ValueError(f"request {i}: {len(ids)} tokens but {len(c.logprobs)} log-prob entries")
            lps.append([_logprob_value(d[t]) for d, t in zip(c.logprobs, ids)])
            resp.append(ids)
            prompt_rows.append([int(t) for t in out.prompt_token_ids])
            reason = c.finish_reason
            if reason == "length":
                finish.append("length")
            elif reason == "stop":
                finish.append("eos" if ids and ids[-1] in stop_set and not isinstance(c.stop_reason, str) else "stop")
            else:
                raise ValueError(f"request {i}: unexpected finish_reason {reason!r} (aborted request?)")
    rows = len(resp)
    if rows == 0:
        return _empty_rollouts(pad_token_id)
    tp = max(len(p) for p in prompt_rows)
    tr = max(1, max(len(r) for r in resp))
    prompt_ids = torch.full((rows, tp), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((rows, tp), dtype=torch.long)
    response_ids = torch.full((rows, tr), pad_token_id, dtype=torch.long)
    loss_mask = torch.zeros((rows, tr), dtype=torch.float32)
    logp = torch.zeros((rows, tr), dtype=torch.float32)
    for k in range(rows):
        p, r = prompt_rows[k], resp[k]
        prompt_ids[k, tp - len(p):] = torch.tensor(p, dtype=torch.long)
        prompt_mask[k, tp - len(p):] = 1
        if r:
            response_ids[k, : len(r)] = torch.tensor(r, dtype=torch.long)
            loss_mask[k, : len(r)] = 1
            logp[k, : len(r)] = torch.tensor(lps[k], dtype=torch.float32)
    width = int(loss_mask.sum(1).max())
    return Rollouts(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=response_ids[:, :width],
        loss_mask=loss_mask[:, :width], rollout_logp=logp[:, :width], group_ids=group_ids, task_index=row_tasks,
        response_text=tokenizer.batch_decode(resp, skip_special_tokens=True),
        truncated=torch.tensor([f == "length" for f in finish], dtype=torch.bool),
        info={"prompt": [prompts[i // params.n] for i in range(rows)], "finish_reason": finish},
    )


def strip_wrapper_prefixes(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for pre in WRAPPER_PREFIXES:
            if name.startswith(pre):
                name, changed = name[len(pre):], True
            name = name.replace("." + pre, ".")
    return name


def weight_items(
    named: Iterable[tuple[str, torch.Tensor]] | Mapping[str, torch.Tensor], *, tie_word_embeddings: bool,
    dtype: torch.dtype | None = None,
) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` pairs for vLLM ``model.load_weights``: HF names without wrapper prefixes.

    A tied ``lm_head.weight`` is dropped (vLLM ties it to the embedding itself and some models
    reject the extra name); rotary ``inv_freq`` buffers are not weights. Tensors are detached and
    cast to ``dtype`` (the engine's) when given.
    """
    items = named.items() if isinstance(named, Mapping) else named
    out = []
    for name, t in items:
        n = strip_wrapper_prefixes(name)
        if n.endswith("rotary_emb.inv_freq") or (tie_word_embeddings and n == "lm_head.weight"):
            continue
        t = t.detach()
        out.append((n, t.to(dtype) if dtype is not None else t))
    return out


def _runner_model(llm: Any) -> Any:
    """The worker's ``nn.Module`` in a single-process vLLM (the path TRL's colocate mode also uses)."""
    try:
        return llm.llm_engine.model_executor.driver_worker.model_runner.model
    except AttributeError:
        return None


class VLLMEngine(Engine):
    """Sampling with a ``vllm.LLM``; the conversion helpers above do all the translating.

    ``policy``: the learner's module; when given, its weights are pushed to vLLM before a
    ``generate`` whenever a parameter changed since the last push (version counters), so the
    trainer needs no extra call. ``sampling_cls`` is ``vllm.SamplingParams`` (injectable for tests).
    """

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        *,
        policy: torch.nn.Module | None = None,
        eos_token_ids: Sequence[int] | None = None,
        stop_token_ids: Sequence[int] = (),
        add_special_tokens: bool = True,
        sampling_cls: Any = None,
    ) -> None:
        self.llm = llm
        self._tokenizer = tokenizer
        self.policy = policy
        self.add_special_tokens = add_special_tokens
        self.stop_token_ids, self.pad_token_id = stop_and_pad_ids(tokenizer, policy, eos_token_ids, stop_token_ids)
        if sampling_cls is None:
            require_vllm()
            from vllm import SamplingParams as sampling_cls  # noqa: N813
        self._sampling_cls = sampling_cls
        self.weight_version = 0
        self.last_load_s = 0.0
        self._sig = self._policy_sig()

    @classmethod
    def from_pretrained(cls, model_dir: str, tokenizer: Any, *, policy: torch.nn.Module | None = None,
                        dtype: str = "bfloat16", gpu_memory_utilization: float = 0.5, **llm_kwargs: Any) -> "VLLMEngine":
        """Start a ``vllm.LLM`` on ``model_dir`` with the log-prob mode our convention needs."""
        require_vllm()
        from vllm import LLM

        llm = LLM(model=str(model_dir), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                  logprobs_mode="processed_logprobs", **llm_kwargs)
        return cls(llm, tokenizer, policy=policy)

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def _policy_sig(self) -> tuple | None:
        if self.policy is None:
            return None
        return tuple((p.data_ptr(), p._version) for p in self.policy.parameters())

    def load_weights(self, weights: Mapping[str, torch.Tensor] | torch.nn.Module) -> None:
        t0 = time.perf_counter()
        if isinstance(weights, torch.nn.Module):
            tied = bool(getattr(getattr(weights, "config", None), "tie_word_embeddings", False))
            named = list(weights.named_parameters())
        else:
            tied = bool(getattr(getattr(self.policy, "config", None), "tie_word_embeddings", False))
            named = list(weights.items())
        items = weight_items(named, tie_word_embeddings=tied)
        model = _runner_model(self.llm)
        if model is not None:
            model.load_weights(items)
        elif hasattr(self.llm, "apply_model"):
            self.llm.apply_model(lambda m: m.load_weights(items))
        else:
            raise RuntimeError("cannot reach the vLLM worker's model to load weights (unknown vLLM layout)")
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()  # cached prefixes hold K/V of the old weights
        self.weight_version += 1
        self.last_load_s = time.perf_counter() - t0

    def generate(self, prompts: list[str], params: SamplingParams, task_index: list[int] | None = None) -> Rollouts:
        Engine.expand_rows(prompts, params.n, task_index)  # validate before any work
        sig = self._policy_sig()
        if sig is not None and sig != self._sig:
            self.load_weights(self.policy)
            self._sig = sig
        enc = [list(self._tokenizer(p, add_special_tokens=self.add_special_tokens)["input_ids"]) for p in prompts]
        sp = self._sampling_cls(**sampling_kwargs(params, self.stop_token_ids))
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids in enc], sp, use_tqdm=False)
        return rollouts_from_outputs(outs, prompts, self._tokenizer, params, pad_token_id=self.pad_token_id,
                                     stop_token_ids=self.stop_token_ids, task_index=task_index)
