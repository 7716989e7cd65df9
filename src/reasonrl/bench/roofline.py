"""The roofline: what this machine can do (measured) and what a step asks of it (counted).

Counting (pure functions on a ``ModelShape``, hand-checked in ``tests/bench/test_roofline.py``):

- learner FLOPs: forward = 2 x (matmul parameters of the decoder layers) x (tokens through the model)
  + 2 x (LM head parameters) x (scored tokens: the fused head runs only there) + causal attention
  ``2 x layers x heads x head_dim x sum_i T_i^2`` (QK^T and AV, each 2 T^2 d / 2 with the causal half);
  forward + backward = 3 x forward, i.e. the usual ``6 x params x tokens + attention`` (Kaplan et al.
  2020; Chinchilla's appendix F counts the same terms);
- decode bytes per step: every weight matrix read once (the embedding only the B rows it looks up)
  plus each row's K and V cache read over its context, ``2 x layers x kv_heads x head_dim x ctx x bytes``;
  the bandwidth roofline of a decode step is ``bytes / bandwidth`` (decode at small batch is memory bound).

Measuring (``measure_gemm_peak``, ``measure_bandwidth``): the best of a few timed square matmuls per
dtype and of large tensor copies (read + write bytes), with whatever threads torch has, in the same
process as the step they are compared with.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class ModelShape:
    layers: int
    d_model: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    gated_mlp: bool = True

    @classmethod
    def from_config(cls, cfg) -> "ModelShape":
        """From a Hugging Face decoder config (Llama/Qwen/Mistral field names)."""
        heads = cfg.num_attention_heads
        return cls(layers=cfg.num_hidden_layers, d_model=cfg.hidden_size, heads=heads,
                   kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
                   head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
                   ffn=cfg.intermediate_size, vocab=cfg.vocab_size)

    @property
    def layer_matmul_params(self) -> int:
        """Weights one token multiplies through in one decoder layer (Q, K, V, O, MLP)."""
        d, hd = self.d_model, self.head_dim
        attn = d * self.heads * hd + 2 * d * self.kv_heads * hd + self.heads * hd * d
        mlp = (3 if self.gated_mlp else 2) * d * self.ffn
        return attn + mlp

    @property
    def head_params(self) -> int:
        return self.vocab * self.d_model

    def as_dict(self) -> dict:
        return asdict(self)


def learner_flops(shape: ModelShape, seq_lens: list[int], scored_tokens: int) -> float:
    """Forward + backward FLOPs of one learner pass over sequences of ``seq_lens`` real tokens, with
    the LM head applied to ``scored_tokens`` of them."""
    tokens = sum(seq_lens)
    fwd = 2.0 * shape.layers * shape.layer_matmul_params * tokens + 2.0 * shape.head_params * scored_tokens
    fwd += 2.0 * shape.layers * shape.heads * shape.head_dim * sum(t * t for t in seq_lens)
    return 3.0 * fwd


def decode_step_bytes(shape: ModelShape, contexts: list[int], dtype_bytes: int = 4) -> float:
    """Bytes one decode step must move: all layer and head weights, the looked-up embedding rows, and
    each row's K/V cache over its context (``contexts``: tokens already in each row's cache)."""
    weights = shape.layers * shape.layer_matmul_params + shape.head_params + len(contexts) * shape.d_model
    kv = 2 * shape.layers * shape.kv_heads * shape.head_dim * sum(contexts)
    return float((weights + kv) * dtype_bytes)


def decode_bytes(shape: ModelShape, prompt_lens: list[int], new_tokens: int, dtype_bytes: int = 4) -> float:
    """Bytes of decoding ``new_tokens`` for each row after its prompt (context grows by one per step);
    the prefill is counted as one step over the prompts (weights once, no cache read)."""
    total = decode_step_bytes(shape, [0] * len(prompt_lens), dtype_bytes)
    for k in range(1, new_tokens):
        total += decode_step_bytes(shape, [p + k for p in prompt_lens], dtype_bytes)
    return total


def decode_flops(shape: ModelShape, prompt_lens: list[int], new_tokens: int) -> float:
    """Forward FLOPs of prefill + decoding (one token per row per step; attention over the context)."""
    flops = learner_flops(shape, list(prompt_lens), len(prompt_lens)) / 3.0
    per_tok = 2.0 * (shape.layers * shape.layer_matmul_params + shape.head_params)
    for k in range(1, new_tokens):
        flops += len(prompt_lens) * per_tok
        flops += sum(4.0 * shape.layers * shape.heads * shape.head_dim * (p + k) for p in prompt_lens)
    return flops


# ---------------------------------------------------------------------------------------------- measuring
def measure_gemm_peak(dtype: torch.dtype = torch.float32, n: int = 1024, reps: int = 5,
                      device: str = "cpu", clock=time.perf_counter) -> float:
    """Best FLOP/s of an ``n x n @ n x n`` matmul in ``dtype`` over ``reps`` timed runs (one warm-up).
    ``clock``: wall time by default; a CPU clock gives the peak of the core time actually received."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = clock()
        a @ b
        _sync(device)
        best = min(best, clock() - t0)
    return 2.0 * n ** 3 / best


def measure_bandwidth(mbytes: int = 256, reps: int = 5, device: str = "cpu", clock=time.perf_counter) -> float:
    """Best bytes/s of copying an ``mbytes`` MiB tensor into another (counted as read + write)."""
    src = torch.empty(mbytes * 2 ** 20 // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = clock()
        dst.copy_(src)
        _sync(device)
        best = min(best, clock() - t0)
    return 2.0 * src.numel() * 4 / best


def bf16_supported() -> bool:
    """Whether this CPU has native bfloat16 matmul (AVX512-BF16 or AMX); without it torch emulates bf16 slowly."""
    cap = torch.backends.cpu.get_cpu_capability()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    return "avx512_bf16" in flags or "amx_bf16" in flags or cap.startswith("AMX")


def machine_peaks(threads: int, gemm_n: int = 1024, cpu_clock: bool = False) -> dict[str, float]:
    """fp32 (and bf16 where native) GEMM peak and copy bandwidth, measured now with ``threads`` threads.

    ``cpu_clock``: time with process CPU seconds / threads instead of wall (on a shared machine the wall
    peak is whatever share of a core the run got; compare CPU-time step costs with CPU-time peaks)."""
    was = torch.get_num_threads()
    torch.set_num_threads(threads)
    clock = (lambda: time.process_time() / threads) if cpu_clock else time.perf_counter
    try:
        out = {"gemm_fp32_flops": measure_gemm_peak(torch.float32, gemm_n, clock=clock),
               "bandwidth_bytes_s": measure_bandwidth(clock=clock)}
        if bf16_supported():
            out["gemm_bf16_flops"] = measure_gemm_peak(torch.bfloat16, gemm_n, clock=clock)
        out["threads"] = float(threads)
        return out
    finally:
        torch.set_num_threads(was)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
