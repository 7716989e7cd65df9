"""``report.html``: one self-contained page per run.

No JavaScript, no external CSS or fonts, so the page opens offline and from a copied run
directory; plots are referenced by relative path (``plots/<name>.png``). When the run directory holds
the dashboard's static export (``dashboard.html``, self-contained, written by ``build_report``), the
report embeds it in an iframe: the interactive plots, distributions and sample browser, kept in their
own file so the report itself stays small and script-free. Everything that comes
from the run (config text, sample prompts and responses, summary keys) is HTML-escaped: model
output is untrusted and routinely contains ``<`` and ``&``.
"""

from __future__ import annotations

import html
import json
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasonrl.report.plots import PLOT_NAMES
from reasonrl.report.summary import atomic_write_text, summary_rows

__all__ = ["write_report"]

#: Samples shown from each end of samples.jsonl (early and late behaviour of the policy).
SAMPLES_PER_END = 3
#: Longer cell texts are cut; the full text stays in samples.jsonl.
MAX_CELL_CHARS = 2000

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: .85em;
          max-width: 600px; overflow-wrap: anywhere; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; }
.plots img { max-width: 100%; display: block; margin: .5em 0 1.5em; }
iframe.dashboard { width: 100%; height: 1400px; border: 1px solid #ccc; }
"""


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _summary_section(summary: dict) -> str:
    rows = summary_rows(summary)
    if not rows:
        return "<p>No summary values.</p>"
    has_ci = any(ci for _, _, ci in rows)
    head = "<tr><th>metric</th><th>value</th>" + ("<th>CI</th>" if has_ci else "") + "</tr>"
    body = []
    for key, value, ci in rows:
        cells = f"<td>{_esc(key)}</td><td class=num>{_esc(value)}</td>"
        if has_ci:
            cells += f"<td class=num>{_esc(ci)}</td>"
        body.append(f"<tr>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _plot_paths(run_dir: Path) -> list[Path]:
    """PNGs under ``run_dir/plots`` in ``PLOT_NAMES`` order, then any others by name."""
    plots_dir = run_dir / "plots"
    if not plots_dir.is_dir():
        return []
    pngs = {p.stem: p for p in plots_dir.glob("*.png") if p.is_file()}
    ordered = [pngs.pop(n) for n in PLOT_NAMES if n in pngs]
    return ordered + [pngs[k] for k in sorted(pngs)]


def _plots_section(run_dir: Path) -> str:
    paths = _plot_paths(run_dir)
    if not paths:
        return "<p>No plots (no metrics.jsonl, or no plottable keys).</p>"
    imgs = [
        f'<img src="{_esc(p.relative_to(run_dir).as_posix())}" alt="{_esc(p.stem)}">'
        for p in paths
    ]
    return f"<div class=plots>{''.join(imgs)}</div>"


def _episodes_section(run_dir: Path) -> list[str]:
    """Episode strips of embodied runs (``episodes/*.png``, before first; a same-named GIF is linked)."""
    d = run_dir / "episodes"
    pngs = sorted(d.glob("*.png"), key=lambda p: (p.stem != "before", p.stem)) if d.is_dir() else []
    if not pngs:
        return []
    out = ["<h2>Episodes</h2>"]
    for p in pngs:
        rel = _esc(p.relative_to(run_dir).as_posix())
        gif = p.with_suffix(".gif")
        link = f' (<a href="{_esc(gif.relative_to(run_dir).as_posix())}">animation</a>)' if gif.is_file() else ""
        out.append(f'<h3>{_esc(p.stem)}{link}</h3><div class=plots><img src="{rel}" alt="{_esc(p.stem)}"></div>')
    return out


def _read_sample_rows(path: Path) -> list[dict[str, Any]]:
    """First and last ``SAMPLES_PER_END`` parseable rows, streaming (the file can be large)."""
    head: list[dict[str, Any]] = []
    tail: deque[tuple[int, dict[str, Any]]] = deque(maxlen=SAMPLES_PER_END)
    from reasonrl.report.plots import iter_jsonl

    for i, row in enumerate(iter_jsonl(path)):
        if len(head) < SAMPLES_PER_END:
            head.append(row)
        else:
            tail.append((i, row))
    return head + [r for _, r in tail]


def _cell(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"<td class=num>{_esc(f'{v:.4g}' if isinstance(v, float) else v)}</td>"
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    if len(text) > MAX_CELL_CHARS:
        text = text[:MAX_CELL_CHARS] + f"… [{len(text) - MAX_CELL_CHARS} more chars]"
    return f"<td class=text>{_esc(text)}</td>"


def _samples_section(path: Path) -> str:
    try:
        rows = _read_sample_rows(path)
    except OSError as e:
        return f"<p>Could not read samples: {_esc(e)}</p>"
    if not rows:
        return "<p>samples.jsonl has no rows.</p>"
    cols: list[str] = []
    for row in rows:  # per-token data is the dashboard's to show (shaded), not a table cell's
        cols += [str(k) for k in row if str(k) not in cols and k != "tokens"]
    head = "<tr>" + "".join(f"<th>{_esc(c)}</th>" for c in cols) + "</tr>"
    body = "".join(
        "<tr>" + "".join(_cell(row.get(c, "")) for c in cols) + "</tr>" for row in rows
    )
    return f"<table>{head}{body}</table>"


def write_report(
    run_dir: Path,
    summary: dict,
    extra_sections: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write ``run_dir/report.html`` and return its path.

    Sections: summary table (``<key>_ci`` folded next to ``<key>``), plots from ``run_dir/plots``,
    links to the raw logs, the resolved ``config.yaml``, a few early and late rows of
    ``samples.jsonl``, then ``extra_sections``. Extra section titles are escaped; their bodies are
    inserted as given, so callers must pass trusted HTML (escape any model output themselves).
    Missing files just drop their section. The write is atomic.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    title = f"reasonrl run: {run_dir.resolve().name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        "<h2>Summary</h2>",
        _summary_section(summary),
        "<h2>Training curves</h2>",
        _plots_section(run_dir),
    ]
    if (run_dir / "dashboard.html").is_file():
        parts += ["<h2>Dashboard</h2>",
                  '<p>Interactive plots, distributions and the sample browser with per-token shading '
                  '(<a href="dashboard.html">open on its own</a>).</p>',
                  '<iframe src="dashboard.html" title="run dashboard" class=dashboard></iframe>']
    parts += _episodes_section(run_dir)
    links = [n for n in ("metrics.jsonl", "samples.jsonl", "summary.json", "config.yaml")
             if (run_dir / n).is_file()]
    if links:
        items = "".join(f'<li><a href="{_esc(n)}">{_esc(n)}</a></li>' for n in links)
        parts += ["<h2>Files</h2>", f"<ul>{items}</ul>"]
    config = run_dir / "config.yaml"
    if config.is_file():
        text = config.read_text(encoding="utf-8", errors="replace")
        parts += ["<h2>Resolved config</h2>", f"<pre>{_esc(text)}</pre>"]
    samples = run_dir / "samples.jsonl"
    if samples.is_file():
        parts += ["<h2>Samples</h2>", _samples_section(samples)]
    for sec_title, body in extra_sections:
        parts += [f"<h2>{_esc(sec_title)}</h2>", body]
    parts.append("</body></html>\n")
    path = run_dir / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path
