"""What the dashboard shows, read from run directories: runs, metrics, samples, episodes.

Pure reads of the files the trainer writes (``metrics.jsonl``, ``samples.jsonl``, ``summary.json``,
``episodes/*.gif``), so the dashboard works on a live run, a finished one, or a copied folder. A run
being written may end in a torn line: it is skipped, never an error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

#: Samples returned per search at most (the browser renders every one).
MAX_SAMPLES = 200
#: Episode animations listed per run at most.
MAX_EPISODES = 24


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line still being written
                continue
            if isinstance(row, dict):
                out.append(row)
    return out


def is_run(d: Path) -> bool:
    return d.is_dir() and ((d / "metrics.jsonl").exists() or (d / "samples.jsonl").exists())


def find_runs(root: Path) -> dict[str, Path]:
    """Runs under ``root`` by name: ``root`` itself if it is a run, else its run subfolders."""
    root = Path(root)
    if is_run(root):
        return {root.name: root}
    return {d.name: d for d in sorted(root.iterdir()) if is_run(d)} if root.is_dir() else {}


def run_info(name: str, d: Path) -> dict[str, Any]:
    metrics = _rows(d / "metrics.jsonl")
    summary = {}
    if (d / "summary.json").exists():
        try:
            summary = json.loads((d / "summary.json").read_text())
        except (json.JSONDecodeError, OSError):
            summary = {}
    stamps = [p.stat().st_mtime for p in (d / "metrics.jsonl", d / "samples.jsonl") if p.exists()]
    return {"name": name, "steps": max((int(r.get("step", 0)) for r in metrics), default=0),
            "rows": len(metrics), "updated": max(stamps, default=0.0), "finished": bool(summary),
            "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) or v is None},
            "episode_files": episodes(d)[:MAX_EPISODES]}


def metrics(d: Path, since: int = 0) -> dict[str, Any]:
    """Metric rows from row ``since`` on (the browser polls with the count it has), non-numbers dropped."""
    rows = _rows(d / "metrics.jsonl")
    clean = [{k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)} for r in rows[since:]]
    return {"rows": clean, "next": len(rows)}


def samples(d: Path, query: str = "", limit: int = MAX_SAMPLES) -> dict[str, Any]:
    """Samples whose prompt, response, answer or uid contains ``query`` (case-insensitive), newest first."""
    q = query.lower().strip()
    rows = _rows(d / "samples.jsonl")
    hits = [r for r in reversed(rows)
            if not q or any(q in str(r.get(k, "")).lower() for k in ("prompt", "response", "answer", "uid"))]
    return {"total": len(rows), "matched": len(hits), "samples": hits[:limit]}


def distributions(d: Path) -> dict[str, Any]:
    """Per-step reward and response-length values of the logged samples (histograms over steps)."""
    by_step: dict[int, dict[str, list[float]]] = {}
    for r in _rows(d / "samples.jsonl"):
        s = by_step.setdefault(int(r.get("step", 0)), {"reward": [], "length": []})
        if isinstance(r.get("reward"), (int, float)):
            s["reward"].append(float(r["reward"]))
        if isinstance(r.get("response"), str):
            s["length"].append(float(len(r.get("tokens") or []) or len(r["response"])))
    steps = sorted(by_step)
    return {"steps": steps, "reward": [by_step[s]["reward"] for s in steps],
            "length": [by_step[s]["length"] for s in steps]}


def episodes(d: Path) -> list[str]:
    """Episode animations of embodied runs (``episodes/*.gif``), by file name."""
    e = d / "episodes"
    return sorted(p.name for p in e.glob("*.gif")) if e.is_dir() else []


def snapshot(runs: dict[str, Path]) -> dict[str, Any]:
    """Everything the page needs, for the static export (the live server serves the same pieces);
    episode GIFs are inlined as data URIs so the file stands alone."""
    import base64

    out = {}
    for name, d in runs.items():
        info = run_info(name, d)
        gifs = {f: "data:image/gif;base64," + base64.b64encode((d / "episodes" / f).read_bytes()).decode()
                for f in info["episode_files"]}
        out[name] = {"info": info, "metrics": metrics(d), "samples": samples(d, limit=10**9),
                     "dist": distributions(d), "episodes": gifs}
    return out
