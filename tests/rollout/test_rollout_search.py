"""Search backend: SQLite FTS5/BM25 indexing and retrieval, the HTTP endpoint round trip."""

import json
import urllib.request

import pytest

from reasonrl.rollout.search import HTTPSearchTool, SearchIndex, SearchServer, SearchTool, fts5_available, load_corpus

DOCS = [
    {"id": "a", "text": "The mentor of Alba is Boro."},
    {"id": "b", "text": "The mentor of Boro is Alba."},
    {"id": "c", "text": "Alba was born in Varno."},
    {"id": "d", "text": "Boro was born in Lusk. Boro likes Lusk. Lusk Lusk."},
    {"id": "e", "text": "Cedi works as a baker."},
]


@pytest.fixture()
def index(tmp_path):
    idx = SearchIndex(tmp_path / "idx.sqlite")
    assert idx.add(DOCS) == 5
    return idx


def test_fts5_present():
    assert fts5_available()


def test_phrase_first_then_bm25(index):
    # a bag of words cannot tell a from b; the phrase pass puts the right one first
    assert [h["id"] for h in index.search("the mentor of Alba", 2)] == ["a", "b"]
    assert [h["id"] for h in index.search("mentor of boro", 2)] == ["b", "a"]
    assert index.search("Alba was born in", 1)[0]["id"] == "c"
    # no phrase hit: BM25 over the terms; the doc repeating "lusk" ranks first
    hits = index.search("lusk varno", 3)
    assert [h["id"] for h in hits][:2] == ["d", "c"] and hits[0]["score"] <= hits[1]["score"]
    assert [(h["id"], h["text"]) for h in index.search("baker", 5)] == [("e", "Cedi works as a baker.")]


def test_no_hits_operators_and_top_k(index):
    assert index.search("zzz", 3) == []
    assert index.search("!!! ??", 3) == []
    assert index.search('NEAR AND OR * "', 3) == []  # FTS5 syntax is quoted away, never an error
    assert len(index.search("alba boro", 10)) == 4
    with pytest.raises(ValueError, match="top_k"):
        index.search("alba", 0)


def test_index_persists(tmp_path, index):
    again = SearchIndex(tmp_path / "idx.sqlite")
    assert len(again) == 5 and again.search("Cedi works as", 1)[0]["id"] == "e"


def test_bad_documents_fail_fast():
    with pytest.raises(ValueError, match="document 1"):
        SearchIndex().add([{"text": "ok"}, {"text": "  "}])


def test_tool_output_and_corpus_loading(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    tool = SearchTool.from_corpus(str(p), top_k=2)
    assert tool.call("Cedi works as a") .startswith("Cedi works as a baker.")
    assert tool.call("qqq") == "no results"
    assert len(load_corpus("builtin:knowledge")) == 300
    with pytest.raises(ValueError, match="jsonl"):
        load_corpus(str(tmp_path / "missing.jsonl"))
    p.write_text("{not json\n")
    with pytest.raises(ValueError, match="c.jsonl:1"):
        load_corpus(str(p))


def test_http_round_trip(index):
    tool = SearchTool(index, top_k=2)
    with SearchServer(tool) as server:
        client = HTTPSearchTool(server.url, top_k=2)
        assert client.documents("the mentor of Alba") == tool.documents("the mentor of Alba")
        assert client.documents("alba", top_k=1) == tool.documents("alba", top_k=1)
        assert client.call("zzz") == "no results"
        bad = urllib.request.Request(server.url + "/search", data=b'{"top_k": 1}',
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=5)
        assert e.value.code == 400
    with pytest.raises(RuntimeError, match="failed after"):
        HTTPSearchTool(server.url, retries=0, timeout_s=1).documents("alba")
    with pytest.raises(ValueError, match="http"):
        HTTPSearchTool("localhost:80")
