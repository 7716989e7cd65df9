"""A real search backend for sim-to-real (SSRL, algorithms.md §5.1): a local BM25 index and its HTTP form.

Choice: SQLite FTS5 with its built-in ``bm25()`` ranking. It ships with Python's standard library
(``sqlite3``; FTS5 is compiled into the SQLite CPython bundles on every mainstream platform), so
the project gains no dependency; the index is one file that can be built once and reopened; queries
are fast C code; and BM25 (k1=1.2, b=0.75) is the lexical baseline the search-agent papers use
(Search-R1's sparse retriever). A pure-Python BM25 library would add a dependency and keep the
index in memory; a dense retriever would need an embedding model we cannot download.

Ranking: documents that contain the query as an exact phrase come first (by BM25), then the
remaining documents that contain any query term (by BM25). The phrase pass matters for relational
facts, where a bag of words cannot tell "the mentor of A is B" from "the mentor of B is A".

``SearchServer`` serves any ``Tool`` (normally a ``SearchTool``) over HTTP (stdlib ``http.server``):
``POST /search`` with JSON ``{"query": str, "top_k": int}`` answers ``{"documents": [str, ...]}``.
``HTTPSearchTool`` is the client, so a user can point the rollout loop at their own engine by
serving that one route.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["SearchIndex", "SearchTool", "HTTPSearchTool", "SearchServer", "fts5_available", "load_corpus"]

_WORD_RE = re.compile(r"\w+", re.UNICODE)


def fts5_available() -> bool:
    try:
        sqlite3.connect(":memory:").execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        return True
    except sqlite3.OperationalError:
        return False


class SearchIndex:
    """A BM25 full-text index over documents (``{"id": str, "text": str}``) in SQLite FTS5.

    ``path=None`` keeps the index in memory; a path persists it (reopen with ``SearchIndex(path)``).
    """

    def __init__(self, path: str | Path | None = None):
        if not fts5_available():
            raise RuntimeError("this Python's sqlite3 was built without FTS5; install a Python whose SQLite "
                               "has FTS5 (python.org and most distro builds do) or serve an engine over HTTP "
                               "and use HTTPSearchTool")
        self.path = str(path) if path is not None else ":memory:"
        # one connection shared by the HTTP server's threads, serialised by a lock
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS docs USING fts5(doc_id UNINDEXED, text)")

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM docs").fetchone()[0])

    def add(self, docs: Iterable[dict]) -> int:
        rows = []
        for i, d in enumerate(docs):
            if not isinstance(d, dict) or not isinstance(d.get("text"), str) or not d["text"].strip():
                raise ValueError(f"document {i} must be a dict with a non-empty 'text' string, got {str(d)[:80]!r}")
            rows.append((str(d.get("id", i)), d["text"]))
        with self._lock, self._db:
            self._db.executemany("INSERT INTO docs (doc_id, text) VALUES (?, ?)", rows)
        return len(rows)

    def search(self, query: str, top_k: int = 3) -> list[dict]:
        """Up to ``top_k`` hits ``{"id", "text", "score"}`` (score: FTS5 bm25, lower is better);
        phrase matches first (module docstring). A query without word characters finds nothing."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        words = _WORD_RE.findall(query.lower())
        if not words:
            return []
        quoted = [f'"{w}"' for w in words]  # quoting makes FTS5 operators (AND, NEAR, *) plain words
        hits: list[dict] = []
        seen: set[str] = set()
        with self._lock:
            for match in (" ".join(quoted) if len(words) == 1 else f'"{" ".join(words)}"', " OR ".join(quoted)):
                cur = self._db.execute(
                    "SELECT rowid, doc_id, text, bm25(docs) AS s FROM docs WHERE docs MATCH ? ORDER BY s, rowid LIMIT ?",
                    (match, top_k))
                for rowid, doc_id, text, s in cur:
                    if rowid not in seen and len(hits) < top_k:
                        seen.add(rowid)
                        hits.append({"id": doc_id, "text": text, "score": float(s)})
                if len(hits) >= top_k:
                    break
        return hits


def load_corpus(source: str) -> list[dict]:
    """Documents from ``builtin:knowledge`` or a jsonl file of ``{"id"?, "text"}`` rows."""
    if source == "builtin:knowledge":
        from reasonrl.tasks.knowledge import corpus

        return corpus()
    p = Path(source).expanduser()
    if not p.is_file():
        raise ValueError(f"search corpus {source!r} is neither 'builtin:knowledge' nor an existing jsonl file")
    docs = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{n}: not valid JSON ({e}); each line must be {{\"text\": ...}}") from e
    return docs


class SearchTool:
    """The ``search`` tool: ``<search>query</search>`` -> ``<information>`` top-k documents, one per line."""

    name = "search"
    output_tag = "information"

    def __init__(self, index: SearchIndex, top_k: int = 3):
        self.index, self.top_k = index, top_k

    @classmethod
    def from_corpus(cls, source: str, top_k: int = 3) -> "SearchTool":
        idx = SearchIndex()
        idx.add(load_corpus(source))
        return cls(idx, top_k)

    def documents(self, query: str, top_k: int | None = None) -> list[str]:
        return [h["text"] for h in self.index.search(query, top_k or self.top_k)]

    def call(self, query: str) -> str:
        return "\n".join(self.documents(query)) or "no results"


class HTTPSearchTool:
    """Client for any engine that answers ``POST {url}/search`` (module docstring) — ours or the user's."""

    name = "search"
    output_tag = "information"

    def __init__(self, url: str, top_k: int = 3, timeout_s: float = 10.0, retries: int = 2):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"search URL must start with http:// or https://, got {url!r}")
        self.url, self.top_k, self.timeout_s, self.retries = url.rstrip("/"), top_k, timeout_s, retries

    def documents(self, query: str, top_k: int | None = None) -> list[str]:
        body = json.dumps({"query": query, "top_k": top_k or self.top_k}).encode()
        req = urllib.request.Request(self.url + "/search", data=body, headers={"Content-Type": "application/json"})
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    data = json.loads(r.read())
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == self.retries:
                    raise RuntimeError(f"search engine at {self.url} failed after {self.retries + 1} tries: {e}") from e
                time.sleep(0.2 * (attempt + 1))
        docs = data.get("documents") if isinstance(data, dict) else None
        if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
            raise RuntimeError(f"search engine at {self.url} answered {str(data)[:120]!r}; expected "
                               '{"documents": [str, ...]}')
        return docs

    def call(self, query: str) -> str:
        return "\n".join(self.documents(query)) or "no results"


class SearchServer:
    """Serve ``tool.documents(query, top_k)`` at ``POST /search`` on ``host:port`` (port 0 = any free port).

    Use as a context manager, or ``start()``/``stop()``; ``url`` is the base URL once started.
    """

    def __init__(self, tool: SearchTool, host: str = "127.0.0.1", port: int = 0):
        self.tool = tool
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                if self.path.rstrip("/") != "/search":
                    return self._send(404, {"error": f"unknown path {self.path}; POST /search"})
                try:
                    req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    query, k = req["query"], int(req.get("top_k", outer.tool.top_k))
                    if not isinstance(query, str) or k < 1:
                        raise ValueError("query must be a string and top_k >= 1")
                except (ValueError, KeyError, TypeError) as e:
                    return self._send(400, {"error": f"bad request: {e}; send {{\"query\": str, \"top_k\": int}}"})
                self._send(200, {"documents": outer.tool.documents(query, k)})

            def _send(self, code: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep training logs clean
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "SearchServer":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def __enter__(self) -> "SearchServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m reasonrl.rollout.search --corpus builtin:knowledge --port 8765``: serve a BM25 index over HTTP."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m reasonrl.rollout.search", description="Serve a BM25 search index over HTTP.")
    p.add_argument("--corpus", default="builtin:knowledge", help="'builtin:knowledge' or a jsonl of {\"text\": ...}")
    p.add_argument("--index", default=None, help="SQLite file to build/reuse (default: in memory)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--top-k", type=int, default=3)
    a = p.parse_args(argv)
    idx = SearchIndex(a.index)
    if len(idx) == 0:
        idx.add(load_corpus(a.corpus))
    server = SearchServer(SearchTool(idx, a.top_k), a.host, a.port)
    print(f"serving {len(idx)} documents at {server.url}/search (POST {{\"query\", \"top_k\"}}); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
