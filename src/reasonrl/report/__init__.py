"""Run reports: PNG plots of ``metrics.jsonl``, ``summary.json``, the dashboard's static export
``dashboard.html`` and ``report.html`` (which embeds it).

Submodules import matplotlib and rich lazily, so importing this package stays cheap for the
trainer and CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_report"]

DASHBOARD_FILE = "dashboard.html"


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
    export_dashboard(run_dir)
    return write_report(run_dir, summary, extra_sections)


def export_dashboard(run_dir: Path) -> Path | None:
    """The dashboard's static export (docs/dashboard.md) as ``run_dir/dashboard.html``, which ``report.html``
    embeds; ``None`` (and no file) when plotly is not installed (the 'dashboard' extra)."""
    import importlib.util

    from reasonrl.dashboard.data import is_run

    if importlib.util.find_spec("plotly") is None or not is_run(Path(run_dir)):
        return None
    from reasonrl.dashboard import export_static

    return export_static([run_dir], run_dir / DASHBOARD_FILE)

