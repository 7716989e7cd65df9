"""Run report: plots, summary.json and report.html from a synthetic run directory."""

from __future__ import annotations

import io
import json
import math

import pytest

from reasonrl.report import build_report
from reasonrl.report.html import write_report
from reasonrl.report.plots import ema, plot_run
from reasonrl.report.summary import print_summary_table, write_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_metrics(path, steps=20, with_kl=True):
    with open(path, "w") as f:
        for s in range(steps):
            row = {
                "step": s,
                "reward/mean": 0.1 + 0.03 * s,
                "reward/accuracy": 0.05 + 0.04 * s,
                "response/length_mean": 100 + 5 * s,
                "actor/entropy": 1.5 - 0.05 * s,
                "actor/clipfrac": 0.01,
                "batch/zero_var_frac": 0.3,
                "perf/tokens_per_s": 900.0,
                "time/gen_s": 2.0,
                "time/reward_s": 0.1,
                "time/train_s": 1.0,
                "something/else": "text",
            }
            if with_kl:
                row["actor/kl"] = 0.001 * s
            if s % 5 == 0:
                row["eval/pass@1"] = 0.2 + 0.02 * s
                row["eval/pass@8"] = 0.5 + 0.01 * s
            f.write(json.dumps(row) + "\n")
        f.write('{"step": 20, "reward/me')  # truncated last line from a killed run


def _assert_png(p):
    data = p.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC, p


def test_plot_run_writes_valid_pngs(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    _write_metrics(metrics)
    paths = plot_run(metrics, tmp_path / "plots")
    names = {p.stem for p in paths}
    assert {"reward", "length", "entropy", "kl", "time"} <= names
    for p in paths:
        assert p.parent == tmp_path / "plots"
        _assert_png(p)


def test_plot_run_skips_missing_keys(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps({"step": s, "reward/mean": s * 0.1}) for s in range(5)))
    paths = plot_run(metrics, tmp_path / "plots")
    assert [p.stem for p in paths] == ["reward"]
    _assert_png(paths[0])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert plot_run(empty, tmp_path / "plots2") == []


def test_ema_bias_corrected():
    assert ema([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0
    assert ema([1.0, 3.0], smoothing=0.0) == [1.0, 3.0]


def test_summary_round_trips_and_sanitises(tmp_path):
    summary = {"pass@1_before": 0.25, "pass@1_after": 0.5, "pass@1_after_ci": [0.4, 0.6],
               "bad": math.nan, "inf": math.inf, "steps": 20, "nested": {"x": (1, 2.5)}}
    path = write_summary(tmp_path, summary)
    loaded = json.loads(path.read_text())
    assert loaded["pass@1_after"] == 0.5 and loaded["pass@1_after_ci"] == [0.4, 0.6]
    assert loaded["bad"] is None and loaded["inf"] is None
    assert loaded["nested"] == {"x": [1, 2.5]}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_print_summary_table():
    from rich.console import Console

    buf = io.StringIO()
    print_summary_table({"pass@1_after": 0.5, "pass@1_after_ci": 0.05, "x": None},
                        "Results", console=Console(file=buf, width=100))
    out = buf.getvalue()
    assert "Results" in out and "pass@1_after" in out and "± 0.05" in out
    assert "pass@1_after_ci" not in out  # folded into the CI column


def test_build_report_full_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _write_metrics(run / "metrics.jsonl")
    (run / "config.yaml").write_text("model:\n  name: tiny<&>\n")
    with open(run / "samples.jsonl", "w") as f:
        for i in range(10):
            resp = "<script>alert('x')</script>" if i == 0 else f"answer {i} & more"
            f.write(json.dumps({"step": i, "prompt": f"q{i}", "response": resp, "reward": 1.0}) + "\n")
    summary = {"pass@1_before": 0.1234, "pass@1_after": 0.5678, "pass@1_after_ci": [0.51, 0.62],
               "pass@1_sft_control": 0.3456}
    report = build_report(run, summary, extra_sections=[("Notes <x>", "<p id=extra>hi</p>")])
    assert report == run / "report.html"
    text = report.read_text()
    for num in ("0.1234", "0.5678", "0.3456", "[0.51, 0.62]"):
        assert num in text
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "tiny&lt;&amp;&gt;" in text
    assert 'src="plots/reward.png"' in text and 'href="metrics.jsonl"' in text
    assert 'href="samples.jsonl"' in text
    assert "Notes &lt;x&gt;" in text and "<p id=extra>hi</p>" in text
    assert "q9" in text and "q0" in text  # early and late samples
    assert json.loads((run / "summary.json").read_text())["pass@1_after"] == 0.5678
    for name in ("reward", "length", "entropy", "kl", "time"):
        _assert_png(run / "plots" / f"{name}.png")


def test_report_without_metrics_or_optional_keys(tmp_path):
    build_report(tmp_path, {"only": 1})
    text = (tmp_path / "report.html").read_text()
    assert "only" in text and "No plots" in text
    assert not (tmp_path / "plots").exists()
    # metrics without KL and time keys: those plots are simply absent.
    _write_metrics(tmp_path / "metrics.jsonl", steps=3, with_kl=False)
    build_report(tmp_path, {})
    assert not (tmp_path / "plots" / "kl.png").exists()
    assert 'src="plots/kl.png"' not in write_report(tmp_path, {}).read_text()


def test_report_embeds_the_dashboard_export(tmp_path):
    pytest.importorskip("plotly", reason="the dashboard export needs the 'dashboard' extra")
    run = tmp_path / "run"
    run.mkdir()
    _write_metrics(run / "metrics.jsonl")
    with open(run / "samples.jsonl", "w") as f:
        f.write(json.dumps({"step": 1, "prompt": "q", "response": "ab", "reward": 1.0,
                            "tokens": [["a", -0.5, 1.0, 0.3], ["b", -1.5, 2.0, 0.3]]}) + "\n")
    text = build_report(run, {"pass@1_after": 0.5}).read_text()
    dash = run / "dashboard.html"
    assert dash.is_file() and '<iframe src="dashboard.html"' in text and 'href="dashboard.html"' in text
    assert "<script" not in text  # the report itself stays script-free; the export carries plotly.js
    assert "<th>tokens</th>" not in text  # per-token data is shown shaded in the dashboard
    d = dash.read_text()
    assert "Plotly" in d and '"tokens"' in d


def test_no_dashboard_for_a_folder_without_a_run(tmp_path):
    build_report(tmp_path, {"only": 1})
    assert not (tmp_path / "dashboard.html").exists()
    assert "<iframe" not in (tmp_path / "report.html").read_text()
