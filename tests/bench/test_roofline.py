"""FLOP and byte counting of the roofline harness on a shape small enough to count by hand."""

import pytest
import torch
from transformers import LlamaConfig

from reasonrl.bench.roofline import (ModelShape, decode_bytes, decode_flops, decode_step_bytes, learner_flops,
                                     measure_bandwidth, measure_gemm_peak)

# layers=2, d=4, heads=2 (head_dim 2), kv_heads=1, ffn=6, vocab=10
S = ModelShape(layers=2, d_model=4, heads=2, kv_heads=1, head_dim=2, ffn=6, vocab=10)


def test_param_counts_by_hand():
    # q 4*2*2=16, k+v 2*4*1*2=16, o 2*2*4=16, gated mlp 3*4*6=72
    assert S.layer_matmul_params == 120
    assert S.head_params == 40


def test_shape_from_hf_config_matches_the_model_parameters():
    cfg = LlamaConfig(vocab_size=10, hidden_size=4, intermediate_size=6, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, tie_word_embeddings=False)
    assert ModelShape.from_config(cfg) == S
    from transformers import LlamaForCausalLM

    m = LlamaForCausalLM(cfg)
    linear = sum(p.numel() for n, p in m.named_parameters() if p.dim() == 2 and "embed" not in n)
    assert linear == S.layers * S.layer_matmul_params + S.head_params


def test_learner_flops_by_hand():
    # tokens 3+5=8: 2*2 layers*120*8 = 3840; head 2*40*4 scored = 320; attention 2*2*2*2*(9+25) = 544
    assert learner_flops(S, [3, 5], scored_tokens=4) == 3 * (3840 + 320 + 544)
    # 6 * params * tokens when attention and the head are out of the picture
    assert learner_flops(S, [1] * 7, 0) == pytest.approx(6 * 240 * 7 + 3 * 2 * 2 * 2 * 2 * 7)


def test_decode_bytes_by_hand():
    # weights 2*120 + 40 + 2 rows * 4 (embedding rows) = 288; kv 2*2 layers*1*2*(2+3) = 40; fp32
    assert decode_step_bytes(S, [2, 3]) == (288 + 40) * 4
    assert decode_step_bytes(S, [2, 3], dtype_bytes=2) == (288 + 40) * 2
    # prefill (no cache read) + steps with contexts [p+1], [p+2]
    assert decode_bytes(S, [2], 3) == decode_step_bytes(S, [0]) + decode_step_bytes(S, [3]) + decode_step_bytes(S, [4])


def test_decode_flops_by_hand():
    # prefill of one 2-token prompt: 2*2*120*2 + 2*40*1 + 2*2*2*2*4 = 960 + 80 + 64; one step at context 3:
    # 2*(240+40) + 4*2*2*2*3
    assert decode_flops(S, [2], 2) == (960 + 80 + 64) + (560 + 96)


def test_measurements_are_positive_and_plausible():
    torch.set_num_threads(1)
    f = measure_gemm_peak(torch.float32, n=128, reps=2)
    bw = measure_bandwidth(mbytes=8, reps=2)
    assert 1e7 < f < 1e13 and 1e7 < bw < 1e13
