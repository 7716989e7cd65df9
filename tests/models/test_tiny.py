"""The built-in model builder: HF-format output loadable by from_pretrained, cached, deterministic."""

import json

from reasonrl.models.loading import load_policy
from reasonrl.models.tiny import TinySpec, build_default_model, demo_pool, validation_tasks
from reasonrl.models.tokenizer import train_tokenizer

SPEC = TinySpec(demos=64, sft_steps=6, hidden=32, layers=1, heads=2, ffn=64, val_size=8, eval_every=3, sft_batch=8)


def test_build_save_load_and_reuse(tmp_path):
    out = build_default_model(SPEC, tmp_path / "m", log=lambda *a: None)
    meta = json.loads((out / "reasonrl_build.json").read_text())
    assert meta["sft_steps"] == 6 and meta["spec"]["demos"] == 64 and 0 <= meta["val_pass@1"] <= 1
    model, tok = load_policy(out)
    assert model.config.model_type == "llama" and tok.eos_token_id is not None
    stamp = (out / "reasonrl_build.json").stat().st_mtime_ns
    assert build_default_model(SPEC, out, log=lambda *a: None) == out
    assert (out / "reasonrl_build.json").stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_demo_pool_and_validation_are_disjoint_streams():
    pool = {t.prompt for t in demo_pool(SPEC)}
    val = {t.prompt for t in validation_tasks(SPEC)}
    assert len(pool) > 50 and not (pool & val)


def test_tokenizer_keeps_digits_single_and_round_trips():
    tok = train_tokenizer(["Compute 18*3-16+98.\n18*3=54. 54-16=38. 38+98=136. \\boxed{136}"] * 20, 64)
    text = "Compute 123+4.\n123+4=127. \\boxed{127}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    pieces = tok.convert_ids_to_tokens(ids)
    assert all(len(p) == 1 for p in pieces if any(ch.isdigit() for ch in p))


def test_slip_rate_changes_demo_solutions_not_answers_and_the_key():
    import dataclasses

    import pytest

    slipped = dataclasses.replace(SPEC, slip_rate=0.5)
    assert slipped.key() != SPEC.key()
    clean, dirty = demo_pool(SPEC), demo_pool(slipped)
    assert [t.answer for t in clean] == [t.answer for t in dirty]
    assert 0 < sum(a.solution != b.solution for a, b in zip(clean, dirty)) < len(clean)
    with pytest.raises(ValueError, match="arith family only"):
        TinySpec(family="linear", slip_rate=0.5)


def test_direct_rate_replaces_some_worked_solutions_by_the_bare_true_answer():
    import dataclasses

    import pytest

    shortcut = dataclasses.replace(SPEC, direct_rate=0.5)
    assert shortcut.key() != SPEC.key()
    clean, direct = demo_pool(SPEC), demo_pool(shortcut)
    bare = [b for a, b in zip(clean, direct) if a.solution != b.solution]
    assert 0.3 * len(clean) < len(bare) < 0.7 * len(clean)
    assert all(b.solution == f"\\boxed{{{b.answer}}}" for b in bare)
    assert demo_pool(shortcut) == direct  # deterministic in the task uid
    assert all(t.solution == f"\\boxed{{{t.answer}}}" for t in demo_pool(dataclasses.replace(SPEC, direct_rate=1.0)))
    with pytest.raises(ValueError, match="direct_rate"):
        TinySpec(direct_rate=1.5)


def test_keep_last_saves_the_final_sft_step(tmp_path):
    import dataclasses

    spec = dataclasses.replace(SPEC, sft_steps=5, keep="last")
    meta = json.loads((build_default_model(spec, tmp_path / "m", log=lambda *a: None) / "reasonrl_build.json").read_text())
    assert meta["best_step"] == 5 and meta["spec"]["keep"] == "last"
