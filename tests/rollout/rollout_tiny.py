"""Tiny, download-free model and tokenizer for the rollout tests and the throughput script."""

from __future__ import annotations

import math

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 +-*=."
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
PAD, BOS, EOS = 0, 1, 2


def build_tokenizer(add_bos: bool = True) -> PreTrainedTokenizerFast:
    """Character-level WordLevel tokenizer; prepends BOS by default (so ``add_special_tokens`` matters)."""
    vocab = {s: i for i, s in enumerate(SPECIALS + list(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def build_model(
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 128,
    init: float = 0.1,
    eos_bias: float = 0.0,
    attn: str = "sdpa",
) -> LlamaForCausalLM:
    """Random Llama over the tokenizer's vocabulary; ``eos_bias`` adds an lm_head bias on EOS."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(SPECIALS) + len(CHARS),
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        initializer_range=init,
        tie_word_embeddings=False,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        attn_implementation=attn,
    )
    model = LlamaForCausalLM(cfg)
    if eos_bias:
        head = torch.nn.Linear(hidden, cfg.vocab_size, bias=True)
        with torch.no_grad():
            head.weight.copy_(model.lm_head.weight)
            head.bias.zero_()
            head.bias[EOS] = eos_bias
        model.lm_head = head
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = EOS
    model.generation_config.bos_token_id = BOS
    return model.eval()


def chi2_ok(counts: torch.Tensor, probs: torch.Tensor) -> None:
    """Pearson chi-square against ``probs`` over bins with expected count >= 5 (rest merged)."""
    n = counts.sum()
    exp = probs * n
    big = exp >= 5
    obs = torch.cat([counts[big], counts[~big].sum(0, keepdim=True)])
    ex = torch.cat([exp[big], exp[~big].sum(0, keepdim=True)])
    keep = ex > 0
    chi2 = float((((obs - ex) ** 2)[keep] / ex[keep]).sum())
    df = int(keep.sum()) - 1
    assert chi2 < df + 6 * math.sqrt(2 * df), (chi2, df)  # ~ 5-sigma bound, fixed seed
    assert counts[probs == 0].sum() == 0, "sampled a token the truncation removed"
