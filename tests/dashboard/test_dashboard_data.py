import json
import socket
import urllib.request

import pytest

from reasonrl.dashboard import DashboardError, DashboardServer, export_static
from reasonrl.dashboard import data


def test_runs_metrics_samples_and_distributions(runs):
    found = data.find_runs(runs)
    assert sorted(found) == ["alpha", "beta"]
    info = data.run_info("alpha", found["alpha"])
    assert (info["steps"], info["rows"], info["finished"]) == (5, 5, True)
    m = data.metrics(found["alpha"], since=3)
    assert [r["step"] for r in m["rows"]] == [4, 5] and m["next"] == 5
    hits = data.samples(found["alpha"], "ZEBRA-42")
    assert hits["matched"] == 1 and hits["samples"][0]["uid"] == "a3"
    d = data.distributions(found["alpha"])
    assert d["steps"] == [1, 2, 3, 4, 5] and d["reward"][0] == [1.0] and d["length"][0] == [4.0]  # 4 tokens


def test_torn_line_of_a_live_run_is_skipped(runs):
    beta = runs / "beta"
    with (beta / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "reward/me')
    assert [r["step"] for r in data.metrics(beta)["rows"]] == [1, 2]


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def test_server_endpoints_and_unknown_run(runs):
    srv = DashboardServer(runs, port=0)
    srv.start()
    try:
        assert srv.server_address[0] == "127.0.0.1"  # loopback unless asked
        status, body = _get(srv.url + "api/runs")
        assert status == 200 and [r["name"] for r in json.loads(body)] == ["alpha", "beta"]
        _, body = _get(srv.url + "api/run/alpha/samples?q=zebra")
        assert json.loads(body)["matched"] == 1
        _, js = _get(srv.url + "static/plotly.min.js")
        assert b"plotly" in js[:2000].lower()
        for bad in ("api/run/..%2F..%2Fetc/metrics", "api/run/nope/metrics", "api/run/alpha/episodes/..%2Fsummary.json"):
            with pytest.raises(urllib.error.HTTPError) as e:
                _get(srv.url + bad)
            assert e.value.code == 404
    finally:
        srv.shutdown()
        srv.server_close()


def test_port_in_use_gives_a_clear_message(runs):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        with pytest.raises(DashboardError, match=r"already in use.*--port"):
            DashboardServer(runs, port=s.getsockname()[1])
    finally:
        s.close()


def test_static_export_is_one_file_with_escaped_data(runs, tmp_path):
    out = export_static([runs], tmp_path / "dash.html")
    html = out.read_text()
    assert "zebra-42" in html and "<script>alert(1)</script>" not in html  # model output cannot close the tag
    assert 'src="static/' not in html  # plotly.js inlined: opens offline from anywhere
    with pytest.raises(DashboardError, match="no run"):
        export_static([tmp_path / "empty"], tmp_path / "x.html")


def test_cli_dashboard_export(runs, tmp_path):
    from reasonrl.cli.main import main

    assert main(["dashboard", str(runs / "alpha"), "--export", str(tmp_path / "a.html")]) == 0
    assert "zebra-42" in (tmp_path / "a.html").read_text()
