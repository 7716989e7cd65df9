"""Run reports: PNG plots of ``metrics.jsonl``, ``summary.json`` and ``report.html``.

Submodules import matplotlib and rich lazily, so importing this package stays cheap for the
trainer and CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_report"]


def build_report(
    run_dir: Path,
    summary: dict,
    extra_sections: Sequence[tuple[str, str]] = (),
) -> Path:
    """Plot ``run_dir/metrics.jsonl`` (if present) into ``run_dir/plots``, write
    ``run_dir/summary.json`` and ``run_dir/report.html``; returns the report path."""
    from reasonrl.report.html import write_report
    from reasonrl.report.plots import plot_run
    from reasonrl.report.summary import write_summary

    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        plot_run(metrics, run_dir / "plots")
    write_summary(run_dir, summary)
    return write_report(run_dir, summary, extra_sections)
