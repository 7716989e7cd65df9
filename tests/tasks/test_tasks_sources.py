"""The load_tasks entry point, prompt templates, and the reasoning-gym source."""

import pytest

from reasonrl.tasks import Task, generate, load_tasks
from reasonrl.tasks.base import cycle_tasks
from reasonrl.tasks.templates import BOXED_SUFFIX, render_prompt

T = Task(uid="u", prompt="Compute 2+3.", answer="5")


def test_load_tasks_builtin_matches_generate():
    a = load_tasks("builtin:linear", 5, "test", seed=2, difficulty=2, start=3)
    assert [t.prompt for t in a] == [t.prompt for t in generate("linear", 5, "test", 2, 2, start=3)]
    assert [t.meta["family"] for t in load_tasks("builtin:mix", 3, "train")] == ["arith", "countdown", "linear"]


def test_load_tasks_bad_sources():
    with pytest.raises(ValueError, match="builtin:arith.*reasoning_gym:<dataset>"):
        load_tasks("/no/such/file.jsonl", 3, "train")
    with pytest.raises(ValueError, match="builtin:mix"):
        load_tasks("builtin:geometry", 3, "train")
    with pytest.raises(ValueError, match="n > 0"):
        load_tasks("builtin:arith", None, "train")


class _ChatTok:
    chat_template = "{{ messages }}"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return f"<user>{messages[0]['content']}</user><assistant>"


def test_arith_rule_reaches_pretrained_templates_only():
    """The left-to-right convention is told to pretrained models (boxed/chat); the tiny model's plain prompts,
    on which it was trained, stay exactly as they were."""
    from reasonrl.tasks import generate
    from reasonrl.tasks.builtin import ARITH_RULE

    t = generate("arith", 1, split="test", seed=0, difficulty=2)[0]
    assert render_prompt(t, "plain") == t.prompt + "\n"
    assert render_prompt(t, "boxed") == f"{t.prompt} {ARITH_RULE}{BOXED_SUFFIX}"
    assert ARITH_RULE in render_prompt(t, "chat", _ChatTok())
    assert "instruction" not in generate("countdown", 1, seed=0)[0].meta


def test_templates():
    assert render_prompt(T, "plain") == "Compute 2+3.\n"
    assert render_prompt(T, "boxed") == "Compute 2+3." + BOXED_SUFFIX
    assert BOXED_SUFFIX == " Please reason step by step, and put your final answer within \\boxed{}."
    assert render_prompt(T, "chat", _ChatTok()) == f"<user>Compute 2+3.{BOXED_SUFFIX}</user><assistant>"
    with pytest.raises(ValueError, match="chat template"):
        render_prompt(T, "chat", None)
    no_template = type("Tok", (), {"chat_template": None})()
    with pytest.raises(ValueError, match="no chat_template"):
        render_prompt(T, "chat", no_template)
    with pytest.raises(ValueError, match="plain, boxed, chat"):
        render_prompt(T, "fancy")


def test_reasoning_gym_round_trip():
    pytest.importorskip("reasoning_gym")
    import json

    from reasonrl.rewards.verifiers.reasoning_gym import score_reasoning_gym
    from reasonrl.tasks.reasoning_gym_source import load_reasoning_gym

    train = load_reasoning_gym("chain_sum", 40, seed=1, split="train", test_pool=100)
    test = load_reasoning_gym("chain_sum", 100, seed=1, split="test", test_pool=100)
    assert not {t.prompt for t in train} & {t.prompt for t in test}
    again = load_reasoning_gym("chain_sum", 10, seed=1, split="train", start=30, test_pool=100)
    assert [t.prompt for t in again] == [t.prompt for t in train[30:]]
    t = train[0]
    assert t.verifier == "reasoning_gym" and t.meta["rg_dataset"] == "chain_sum"
    json.dumps(t.meta)  # serialisable, so tasks can be logged and shipped to workers
    assert score_reasoning_gym(t, t.answer) == 1.0
    assert score_reasoning_gym(t, "not a number") == 0.0
    via_entry = load_tasks("reasoning_gym:chain_sum", 3, "train", seed=1)
    assert [x.prompt for x in via_entry] == [x.prompt for x in load_reasoning_gym("chain_sum", 3, 1, "train")]
    with pytest.raises(ValueError, match="chain_sum"):
        load_reasoning_gym("chain_summ", 3, 0, "train")
    with pytest.raises(ValueError, match="test_pool"):
        load_reasoning_gym("chain_sum", 101, 0, "test", test_pool=100)


def test_reasoning_gym_missing_package_message(monkeypatch):
    import builtins

    from reasonrl.tasks import reasoning_gym_source

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "reasoning_gym":
            raise ImportError("No module named 'reasoning_gym'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install reasonrl\[gym\]"):
        reasoning_gym_source.load_reasoning_gym("chain_sum", 1, 0, "train")


def test_cycle_tasks_covers_each_epoch_once_and_is_deterministic():
    pool = list("abcde")
    first = cycle_tasks(pool, 5, 0, seed=1)
    assert sorted(first) == pool
    stream = cycle_tasks(pool, 12, 0, seed=1)
    assert stream[:5] == first and sorted(stream[5:10]) == pool
    assert cycle_tasks(pool, 4, 3, seed=1) == stream[3:7]  # resuming at a cursor replays the same stream
    with pytest.raises(ValueError):
        cycle_tasks([], 1, 0, seed=0)


# ------------------------------------------------------------------ the trainer stage
