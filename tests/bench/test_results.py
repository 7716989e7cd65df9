"""The shared result writer: exact command, environment and load recorded, files written atomically,
markdown rendered from the saved JSON; and every `reasonrl bench` name resolves to a function."""

import importlib
import json
import math
import os

import pytest

from reasonrl.bench import BENCHES, run_bench
from reasonrl.bench.results import BenchRun, env_markdown
from reasonrl.provenance import write_atomic


def test_run_records_command_environment_and_load(tmp_path):
    run = BenchRun("toy", ["a=1", "b=two words"])
    assert run.command == "reasonrl bench toy a=1 'b=two words'"
    doc = run.write(tmp_path / "out", {"command": "ignored", "rows": [1, 2], "x": math.nan},
                    lambda d: f"# toy\n\n{d['command']}\n\n{env_markdown(d['env'])}\n")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["command"] == doc["command"] == run.command and saved["rows"] == [1, 2] and math.isnan(saved["x"])
    env = saved["env"]
    assert {"python", "torch", "torch_threads", "thread_env", "cpu_model", "cpus", "git_commit", "date",
            "load_before", "load_after", "wall_s"} <= set(env)
    assert env["cpus"] == os.cpu_count() and len(env["load_before"]) == 3 and env["wall_s"] >= 0
    assert env["git_commit"] is None or len(env["git_commit"].split("+")[0]) == 40
    md = (tmp_path / "out" / "results.md").read_text()
    assert run.command in md and "load average (1/5/15 min) before" in md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.json", "results.md"]  # no temp files


def test_write_atomic_replaces_whole_files(tmp_path):
    p = tmp_path / "d" / "f.txt"
    write_atomic(p, "first, longer text")
    write_atomic(p, "second")
    assert p.read_text() == "second" and [x.name for x in p.parent.iterdir()] == ["f.txt"]


def test_env_markdown_of_older_results_shows_what_was_saved():
    assert env_markdown(None) == "Environment: not recorded."
    assert env_markdown({"python": "3.11.7", "threads": 1}) == 'Environment: {"python": "3.11.7", "threads": 1}.'


def test_every_benchmark_resolves_and_unknown_names_fail():
    for name, target in BENCHES.items():
        mod, _, fn = target.partition(":")
        assert callable(getattr(importlib.import_module(mod), fn)), name
    with pytest.raises(ValueError, match="unknown benchmark 'nope'; valid: algorithms"):
        run_bench("nope", [])
