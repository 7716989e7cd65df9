"""veRL / TRL dataset rows read directly, and the built-in suite written out in veRL's format."""

import json

import pytest

from reasonrl.tasks import TaskDataError, load_file, load_tasks
from reasonrl.tasks.formats import write_verl_parquet
from reasonrl.tasks.templates import render_prompt

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def verl_row(i, q, gt, source="openai/gsm8k", **extra):
    # the shape veRL's examples/data_preprocess scripts write
    return {"data_source": source, "prompt": [{"role": "user", "content": q}], "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": gt},
            "extra_info": {"split": "train", "index": i, **extra}}


def test_verl_parquet_rows_become_tasks(tmp_path):
    p = tmp_path / "train.parquet"
    rows = [verl_row(0, "What is 2+3? Let's think step by step.", "5"),
            verl_row(1, "Who wrote Hamlet?", "Shakespeare", source="searchR1_nq")]
    pq.write_table(pa.Table.from_pylist(rows), p)
    a, b = load_file(p)
    assert (a.prompt, a.answer, a.verifier, a.uid) == ("What is 2+3? Let's think step by step.", "5", "math", "0")
    assert a.meta["data_source"] == "openai/gsm8k" and a.meta["extra_info"]["index"] == 0
    assert a.meta["messages"] == [{"role": "user", "content": "What is 2+3? Let's think step by step."}]
    assert (b.answer, b.verifier) == ("Shakespeare", "qa")
    # the file is the split (as in veRL): extra_info.split does not filter
    assert len(load_tasks(str(p), None, split="test")) == 2


def test_verl_list_ground_truth_gives_aliases(tmp_path):
    p = tmp_path / "qa.jsonl"
    p.write_text(json.dumps(verl_row(0, "Who wrote Hamlet?", ["Shakespeare", "William Shakespeare"],
                                     source="searchR1_nq")) + "\n")
    (t,) = load_file(p)
    assert (t.answer, t.verifier, t.meta["aliases"]) == ("Shakespeare", "qa", ["William Shakespeare"])


def test_verl_row_errors_name_row_and_field(tmp_path):
    p = tmp_path / "bad.parquet"
    good = verl_row(0, "1+1?", "2")
    bad = {**verl_row(1, "2+2?", "4"), "reward_model": {"style": "rule", "ground_truth": None}}
    pq.write_table(pa.Table.from_pylist([good, bad]), p)
    with pytest.raises(TaskDataError, match=r"row 2 \(verl format\).*reward_model.ground_truth"):
        load_file(p)
    p2 = tmp_path / "bad2.jsonl"
    p2.write_text(json.dumps({**good, "prompt": [{"role": "bot", "content": "x"}]}) + "\n")
    with pytest.raises(TaskDataError, match=r"row 1 \(verl format\).*prompt\[0\]"):
        load_file(p2)


def test_trl_conversational_and_standard_rows(tmp_path):
    p = tmp_path / "trl.jsonl"
    rows = [
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3*4?"}],
         "completion": [{"role": "assistant", "content": "3*4=12. \\boxed{12}"}]},
        {"prompt": "7-2?", "solution": "7-2=5, so \\boxed{5}"},
        {"prompt": "1+1?", "ground_truth": "2"},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b, c = load_file(p)
    assert (a.prompt, a.answer, a.solution) == ("3*4?", "12", "3*4=12. \\boxed{12}")
    assert a.meta["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (b.answer, b.solution) == ("5", "7-2=5, so \\boxed{5}")
    assert c.answer == "2"
    p.write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(TaskDataError, match=r"row 1 \(trl format\).*no gold answer"):
        load_file(p)


class ChatTok:
    chat_template = "x"

    def apply_chat_template(self, msgs, tokenize, add_generation_prompt):
        return "|".join(f"{m['role']}:{m['content']}" for m in msgs) + ("|assistant:" if add_generation_prompt else "")


def test_chat_template_renders_the_datasets_own_messages(tmp_path):
    p = tmp_path / "trl.jsonl"
    p.write_text(json.dumps({"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
                             "answer": "1"}) + "\n")
    (t,) = load_file(p)
    assert render_prompt(t, "chat", ChatTok()) == "system:S|user:Q|assistant:"
    assert render_prompt(t, "plain") == "Q\n"


def test_builtin_suite_round_trips_through_verl_format(tmp_path):
    tasks = load_tasks("builtin:arith", 20, split="train", seed=3)
    out = write_verl_parquet(tasks, tmp_path / "arith.parquet")
    rows = pq.read_table(out).to_pylist()
    assert rows[0]["reward_model"]["ground_truth"] == tasks[0].answer
    assert rows[0]["prompt"][0]["role"] == "user" and "\\boxed{}" in rows[0]["prompt"][0]["content"]
    back = load_file(out)
    assert [t.answer for t in back] == [t.answer for t in tasks]
    assert [t.solution for t in back] == [t.solution for t in tasks]
    assert all(b.prompt.startswith(t.prompt) for b, t in zip(back, tasks))


def test_cli_data_export(tmp_path):
    from reasonrl.cli.main import main

    out = tmp_path / "c.parquet"
    assert main(["data", "export", "builtin:countdown", str(out), "--n", "5", "--split", "test"]) == 0
    back = load_file(out)
    orig = load_tasks("builtin:countdown", 5, split="test", seed=0)
    assert [t.verifier for t in back] == ["countdown"] * 5
    # Countdown's verifier needs its numbers and target back
    assert [(t.meta["numbers"], t.meta["target"]) for t in back] == [(t.meta["numbers"], t.meta["target"]) for t in orig]


def test_exported_tasks_grade_like_the_originals(tmp_path):
    from reasonrl.rewards import Scorer

    for fam in ("arith", "countdown"):
        orig = load_tasks(f"builtin:{fam}", 6, split="test", seed=1)
        back = load_file(write_verl_parquet(orig, tmp_path / f"{fam}.parquet"))
        responses = [t.solution or "" for t in orig]
        assert Scorer().score(back, responses).correct == Scorer().score(orig, responses).correct
        assert any(Scorer().score(back, responses).correct)
