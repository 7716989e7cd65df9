"""User data loaders: good rows become Tasks; every bad case names file, row and field."""

import json

import pytest

from reasonrl.tasks import Task, TaskDataError, load_tasks
from reasonrl.tasks.files import load_file

GOOD = [
    {"prompt": "What is 2+2?", "answer": "4", "solution": "2+2=4. \\boxed{4}"},
    {"prompt": "Use 3 5 7 to make 22.", "answer": "3*5+7", "verifier": "countdown", "numbers": [3, 5, 7],
     "target": 22},
    {"prompt": "Half of 7?", "answer": 3.5, "id": "q-3"},
    {"prompt": "Twice 21?", "answer": 42},
]


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_good_rows(tmp_path):
    tasks = load_file(_jsonl(tmp_path / "mine.jsonl", GOOD))
    assert all(isinstance(t, Task) for t in tasks)
    assert [t.answer for t in tasks] == ["4", "3*5+7", "3.5", "42"]
    assert [t.verifier for t in tasks] == ["math", "countdown", "math", "math"]
    assert tasks[0].solution.endswith("\\boxed{4}") and tasks[3].solution is None
    assert tasks[1].meta["numbers"] == [3, 5, 7] and tasks[1].meta["target"] == 22
    assert tasks[2].uid == "q-3" and tasks[0].uid == "mine-1"
    assert len({t.uid for t in tasks}) == 4


@pytest.mark.parametrize("row, field", [
    ({"answer": "4"}, "prompt"),
    ({"prompt": "x?"}, "answer"),
    ({"prompt": 5, "answer": "4"}, "prompt"),
    ({"prompt": "x?", "answer": ["4"]}, "answer"),
    ({"prompt": "x?", "answer": True}, "answer"),
    ({"prompt": "x?", "answer": "4", "solution": 4}, "solution"),
    ({"prompt": "x?", "answer": "4", "verifier": 1}, "verifier"),
])
def test_jsonl_bad_field_names_file_row_and_field(tmp_path, row, field):
    path = _jsonl(tmp_path / "bad_rows.jsonl", [GOOD[0], GOOD[3], row])
    with pytest.raises(TaskDataError) as e:
        load_file(path)
    msg = str(e.value)
    assert "bad_rows.jsonl" in msg and "row 3" in msg and repr(field) in msg
    assert isinstance(e.value, ValueError)


def test_bad_json_line_and_non_object(tmp_path):
    path = _jsonl(tmp_path / "broken.jsonl", [GOOD[0], '{"prompt": "x", "answer": '])
    with pytest.raises(TaskDataError, match=r"broken\.jsonl: row 2: invalid JSON"):
        load_file(path)
    path = _jsonl(tmp_path / "listy.jsonl", [GOOD[0], "[1, 2]"])
    with pytest.raises(TaskDataError, match=r"listy\.jsonl: row 2: expected an object"):
        load_file(path)


def test_empty_and_unsupported_files(tmp_path):
    for name, text in (("empty.jsonl", ""), ("blank.jsonl", "\n\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(TaskDataError, match=f"{name}: no rows found"):
            load_file(tmp_path / name)
    (tmp_path / "data.csv").write_text("prompt,answer\n")
    with pytest.raises(TaskDataError, match="unsupported format"):
        load_file(tmp_path / "data.csv")
    with pytest.raises(FileNotFoundError):
        load_file(tmp_path / "nope.jsonl")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(TaskDataError, match="not a datasets save_to_disk folder"):
        load_file(tmp_path / "plain_dir")


def test_parquet_round_trip_and_bad_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [{"prompt": r["prompt"], "answer": str(r["answer"]), "level": i} for i, r in enumerate(GOOD)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "set.parquet")
    tasks = load_file(tmp_path / "set.parquet")
    assert [t.prompt for t in tasks] == [r["prompt"] for r in GOOD] and tasks[2].meta["level"] == 2
    pq.write_table(pa.Table.from_pylist([{"prompt": "a", "answer": "1"}, {"prompt": None, "answer": "2"}]),
                   tmp_path / "gap.parquet")
    with pytest.raises(TaskDataError, match=r"gap\.parquet: row 2: missing required field 'prompt'"):
        load_file(tmp_path / "gap.parquet")
    pq.write_table(pa.Table.from_pylist([{"prompt": "a", "answer": [1]}]), tmp_path / "typed.parquet")
    with pytest.raises(TaskDataError, match=r"typed\.parquet: row 1: field 'answer'"):
        load_file(tmp_path / "typed.parquet")


def test_hf_datasets_dir_with_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_list([{"prompt": f"p{i}", "answer": str(i)} for i in range(5)])
    test = datasets.Dataset.from_list([{"prompt": "q0", "answer": "0"}, {"prompt": "q1", "answer": "1"}])
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))
    train.save_to_disk(str(tmp_path / "single"))
    assert [t.prompt for t in load_tasks(str(tmp_path / "dd"), None, "test")] == ["q0", "q1"]
    assert len(load_tasks(str(tmp_path / "dd"), 0, "train")) == 5
    assert [t.answer for t in load_file(tmp_path / "single")] == ["0", "1", "2", "3", "4"]
    bad = datasets.Dataset.from_list([{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": None}])
    bad.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(TaskDataError, match=r"bad: row 2: missing required field 'answer'"):
        load_file(tmp_path / "bad")


def test_load_tasks_split_column_and_cyclic_start(tmp_path):
    rows = [{"prompt": f"p{i}", "answer": i, "split": "test" if i % 2 else "train"} for i in range(6)]
    path = str(_jsonl(tmp_path / "s.jsonl", rows))
    assert [t.prompt for t in load_tasks(path, None, "train")] == ["p0", "p2", "p4"]
    assert [t.prompt for t in load_tasks(path, 4, "test", start=2)] == ["p5", "p1", "p3", "p5"]
    assert [t.prompt for t in load_tasks(path, 0, "train", start=1)] == ["p2", "p4", "p0"]
    with pytest.raises(TaskDataError, match="no rows with split == 'dev'"):
        load_tasks(path, None, "dev")
    nosplit = str(_jsonl(tmp_path / "n.jsonl", GOOD))
    assert len(load_tasks(nosplit, None, "test")) == 4  # no split column: split is ignored


def test_load_tasks_sees_a_rewritten_file(tmp_path):
    path = _jsonl(tmp_path / "live.jsonl", GOOD[:1])
    assert len(load_tasks(str(path), None, "train")) == 1
    _jsonl(path, GOOD)
    assert len(load_tasks(str(path), None, "train")) == 4


def test_non_utf8_row_names_file_row_and_fix(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(b'{"prompt": "1+1", "answer": "2"}\n' + '{"prompt": "caf\u00e9?", "answer": "1"}\n'.encode("latin-1"))
    with pytest.raises(TaskDataError) as e:
        load_file(p)
    msg = str(e.value)
    assert str(p) in msg and "row 2" in msg and "UTF-8" in msg and "0xe9" in msg


def test_prompt_longer_than_the_context_is_named_at_load():
    from reasonrl.tasks.files import check_prompt_lengths

    class Tok:  # one token per character, like a worst-case tokenizer
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": list(range(len(text) + 1))}

    ok = Task(uid="a", prompt="x" * 40, answer="1", meta={"source": "d.jsonl", "row": 1})
    long = Task(uid="b", prompt="x" * 10_000_000, answer="1", meta={"source": "d.jsonl", "row": 2})
    check_prompt_lengths([ok], lambda t: t.prompt, Tok(), context=64, max_new_tokens=16)
    with pytest.raises(TaskDataError) as e:
        check_prompt_lengths([ok, long], lambda t: t.prompt, Tok(), context=64, max_new_tokens=16)
    msg = str(e.value)
    assert "d.jsonl: row 2" in msg and "over 48 tokens (10000000 characters)" in msg and "context is 64" in msg
    assert "rollout.max_new_tokens" in msg
    check_prompt_lengths([long], lambda t: t.prompt, Tok(), context=None, max_new_tokens=16)  # unknown: no check
