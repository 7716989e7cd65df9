"""``reasonrl dashboard``: a local web page over run directories, live while runs are written.

The server is the standard library's threading HTTP server: a handful of JSON endpoints over
``dashboard.data`` plus one static page. Plots are drawn by plotly.js, taken from the ``plotly``
PyPI package (it ships ``plotly.min.js``), so the page works offline. It binds to loopback unless
told otherwise: run folders hold prompts and model outputs a user may not want on the network.
"""

from __future__ import annotations

import errno
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from reasonrl.dashboard import data

DEFAULT_PORT = 8765


class DashboardError(RuntimeError):
    """A dashboard that cannot start; the message says why and what to do."""


def plotly_js() -> bytes:
    try:
        import plotly
    except ImportError as e:
        raise DashboardError("the dashboard draws with plotly.js from the 'plotly' package: "
                             "pip install 'reasonrl[dashboard]'") from e
    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()


def page_html(static: dict | None = None, inline_js: bytes | None = None) -> str:
    """The page; ``static`` embeds a snapshot (export), ``inline_js`` inlines plotly.js (one file)."""
    html = resources.files("reasonrl.dashboard").joinpath("page.html").read_text(encoding="utf-8")
    if inline_js is not None:
        script = "<script>" + inline_js.decode("utf-8").replace("</script", "<\\/script") + "</script>"
    else:
        script = '<script src="static/plotly.min.js"></script>'
    # the snapshot is JSON inside a <script>: escape "<" so no model output can close the tag
    payload = "null" if static is None else json.dumps(static).replace("<", "\\u003c")
    return html.replace("<!--PLOTLY-->", script).replace("/*STATIC*/null", payload)


class _Handler(BaseHTTPRequestHandler):
    server: "DashboardServer"

    def log_message(self, fmt, *args):  # quiet: the terminal shows the URL, not every poll
        return

    def _send(self, body: bytes, ctype: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(json.dumps(obj).encode(), "application/json", status)

    def do_GET(self):  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        q = parse_qs(url.query)
        try:
            if not parts:
                return self._send(page_html().encode(), "text/html; charset=utf-8")
            if parts == ["static", "plotly.min.js"]:
                return self._send(self.server.plotly, "application/javascript")
            if parts == ["api", "runs"]:
                return self._json([data.run_info(n, d) for n, d in self.server.runs().items()])
            if len(parts) >= 4 and parts[:2] == ["api", "run"]:
                d = self.server.runs().get(parts[2])
                if d is None:
                    return self._json({"error": f"no run named {parts[2]!r}"}, HTTPStatus.NOT_FOUND)
                what = parts[3]
                if what == "metrics":
                    return self._json(data.metrics(d, int(q.get("since", ["0"])[0])))
                if what == "samples":
                    return self._json(data.samples(d, q.get("q", [""])[0]))
                if what == "dist":
                    return self._json(data.distributions(d))
                if what == "episodes" and len(parts) == 5 and parts[4] in data.episodes(d):
                    return self._send((d / "episodes" / parts[4]).read_bytes(), "image/gif")
            self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
        except ValueError as e:
            self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
        self.root = Path(root)
        self.plotly = plotly_js()
        try:
            super().__init__((host, port), _Handler)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise DashboardError(f"port {port} on {host} is already in use (another dashboard?); pick "
                                     f"another with --port N, or --port 0 for any free port") from None
            raise DashboardError(f"cannot listen on {host}:{port}: {e.strerror}") from None

    def runs(self) -> dict[str, Path]:
        return data.find_runs(self.root)  # rescanned per request: new runs appear while the page is open

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="reasonrl-dashboard", daemon=True)
        t.start()
        return t


def export_static(run_dirs: list[Path], out: Path) -> Path:
    """One self-contained HTML file (data and plotly.js inlined) showing ``run_dirs`` as the live page does."""
    runs: dict[str, Path] = {}
    for d in run_dirs:
        runs.update(data.find_runs(Path(d)))
    if not runs:
        raise DashboardError(f"no run (a folder with metrics.jsonl or samples.jsonl) in {', '.join(map(str, run_dirs))}")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page_html(data.snapshot(runs), plotly_js()), encoding="utf-8")
    tmp.replace(out)
    return out
