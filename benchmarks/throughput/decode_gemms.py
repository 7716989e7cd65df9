"""All of SmolLM2-135M's per-token GEMMs at batch 8 (30 layers x QKV/O/gate-up/down + the 49k LM head,
random weights of the real shapes, 540 MB: streamed from memory as in decode), per call shape (issue 18).

Run: OMP_NUM_THREADS=1 nice -n 0 python benchmarks/throughput/decode_gemms.py 1
Prints ms per token (CPU clock for 1 thread, wall otherwise), the weight bytes per second that means, and
each variant's largest difference from one F.linear call (0 = bit-equal, tokens cannot change).
"""
import sys
import time

import torch
import torch.nn.functional as F

th = int(sys.argv[1]) if len(sys.argv) > 1 else 1
torch.set_num_threads(th)
torch.manual_seed(0)
shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)]
Ws = [torch.randn(n, k) * 0.02 for _ in range(30) for (n, k) in shapes] + [torch.randn(49152, 576) * 0.02]
B = sum(w.numel() * 4 for w in Ws)
xs = {k: torch.randn(8, k) for k in (576, 1536)}


def run(fn):
    for w in Ws:
        fn(xs[w.shape[1]], w)


def bench(f, n=4):
    f()
    best = 1e9
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        f()
        w, c = time.perf_counter() - t0, time.process_time() - c0
        best = min(best, c if th == 1 else w)
    return best


def blocked(rows):
    cache = {}

    def fn(x, w):
        cs = cache.setdefault(id(w), w.split(rows))
        return torch.cat([F.linear(x, c) for c in cs], -1) if len(cs) > 1 else F.linear(x, w)
    return fn


packed = {id(w): torch.ops.mkl._mkl_reorder_linear_weight(w, 8) for w in Ws}
variants = {"one F.linear per matrix": F.linear, **{f"{r}-row blocks": blocked(r) for r in (512, 1024, 2048, 4096)},
            "MKL packed weights": lambda x, w: torch.ops.mkl._mkl_linear(x, packed[id(w)], w, None, 8),
            "oneDNN linear": lambda x, w: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")}
ref = [F.linear(xs[w.shape[1]], w) for w in Ws[:4] + Ws[-1:]]
for name, fn in variants.items():
    d = max((fn(xs[w.shape[1]], w) - r).abs().max().item() for w, r in zip(Ws[:4] + Ws[-1:], ref))
    t = bench(lambda: run(fn))
    print(f"{name}: {t * 1e3:.1f} ms/token, {B / t / 1e9:.1f} GB/s of weights, {2 * 8 * B / 4 / t / 1e9:.1f} GFLOP/s, "
          f"max diff {d:.1e}", flush=True)
