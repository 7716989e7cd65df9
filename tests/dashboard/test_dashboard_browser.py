"""The dashboard in a real browser: Debian's headless Chromium driven through chromedriver.

Installed by `make browser` (part of `make install`); the tests skip, saying so, only when the
browser cannot be found. Screenshots are kept under test-artifacts/dashboard/ (or
$REASONRL_TEST_ARTIFACTS) for a person to look at.
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from reasonrl.dashboard import DashboardServer, export_static

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install 'reasonrl[dashboard]'")
if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
    pytest.skip("headless Chromium not installed: run `make browser` (Debian chromium + chromium-driver)",
                allow_module_level=True)

ARTIFACTS = Path(os.environ.get("REASONRL_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "dashboard"


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1400,1800", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_script_timeout(20)
    yield drv
    drv.quit()


def wait_for(drv, script, ok, timeout=20.0):
    end = time.monotonic() + timeout
    val = None
    while time.monotonic() < end:
        val = drv.execute_script(script)
        if ok(val):
            return val
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting: {script} -> {val!r}")


def console_errors(drv):
    return [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def shot(drv, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    drv.save_screenshot(str(ARTIFACTS / name))


TRACE_LENGTHS = ("const d = document.getElementById('plot-reward/mean');"
                 "return d && d.data ? d.data.map(t => [t.name, t.x.length]) : null;")


def test_live_page_lists_runs_plots_searches_and_updates(runs, browser):
    srv = DashboardServer(runs, port=0)
    srv.start()
    try:
        browser.get(srv.url)
        names = wait_for(browser, "return [...document.querySelectorAll('li.run label')].map(e => e.textContent.trim())",
                         lambda v: len(v) == 2)
        assert names == ["alpha", "beta"]
        assert wait_for(browser, TRACE_LENGTHS, lambda v: v and len(v) == 2) == [["alpha", 5], ["beta", 2]]
        # the sample browser finds a known sample, shades its tokens, and shows model output as text
        browser.execute_script("const s = document.getElementById('sample-run'); s.value = 'alpha';"
                               "s.dispatchEvent(new Event('change'));"
                               "const q = document.getElementById('sample-search'); q.value = 'zebra-42';"
                               "q.dispatchEvent(new Event('input'));")
        rows = wait_for(browser, "return [...document.querySelectorAll('tr.sample')].map(r => r.textContent)",
                        lambda v: len(v) == 1 and "zebra-42" in v[0])
        assert "a3" in rows[0]
        assert browser.execute_script("return document.querySelectorAll('tr.sample span.tok').length") == 4
        shot(browser, "live_search.png")
        # a run still being written: new metric rows appear without a reload
        with (runs / "beta" / "metrics.jsonl").open("a") as f:
            for s in (3, 4):
                f.write(json.dumps({"step": s, "reward/mean": 0.5}) + "\n")
        assert wait_for(browser, TRACE_LENGTHS, lambda v: v and v[1][1] == 4)[1] == ["beta", 4]
        browser.execute_script("const s = document.getElementById('sample-run'); s.value = 'beta';"
                               "s.dispatchEvent(new Event('change'));"
                               "const q = document.getElementById('sample-search'); q.value = '';"
                               "q.dispatchEvent(new Event('input'));")
        wait_for(browser, "return [...document.querySelectorAll('tr.sample')].map(r => r.textContent)",
                 lambda v: len(v) == 1 and "<script>alert(1)</script>" in v[0])
        assert browser.execute_script("return document.querySelectorAll('tr.sample script').length") == 0
        shot(browser, "live_updated.png")
        assert console_errors(browser) == []
    finally:
        srv.shutdown()
        srv.server_close()


def test_static_export_shows_the_same_page_offline(runs, browser, tmp_path):
    out = export_static([runs], tmp_path / "dashboard.html")
    browser.get(out.as_uri())
    assert wait_for(browser, TRACE_LENGTHS, lambda v: v and len(v) == 2) == [["alpha", 5], ["beta", 2]]
    dist = wait_for(browser, "const d = document.getElementById('dist-reward'); return d.data ? d.data[0].x.length : 0",
                    lambda v: v > 0)
    assert dist == 5
    shot(browser, "static_export.png")
    assert console_errors(browser) == []


def test_real_tiny_run_samples_are_shaded_per_token(browser, tmp_path):
    """A real (1-step) training run's report.html embeds the dashboard export, whose sample browser shades
    each response token by the sampler's -log-prob, the hover text carrying the logged values."""
    from reasonrl.config import load_config
    from reasonrl.models.tiny import TinySpec, _tokenizer_corpus, build_model
    from reasonrl.models.tokenizer import train_tokenizer
    from reasonrl.trainer.loop import Trainer

    spec = TinySpec(hidden=32, layers=1, heads=2, ffn=64, demos=50, seed=0)
    tok = train_tokenizer(_tokenizer_corpus(spec), 128)
    build_model(spec, tok).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    cfg = load_config(None, [f"model.path={tmp_path / 'model'}", f"run.out_dir={tmp_path / 'runs'}", "run.name=real",
                             "run.threads=1", "data.eval_size=4", "rollout.n=2", "rollout.max_new_tokens=8",
                             "trainer.prompts_per_step=2", "trainer.steps=1", "trainer.log_samples=2",
                             "trainer.progress=false", "trainer.tensorboard=false", "eval.k=2"])
    from reasonrl.report import build_report

    run = tmp_path / "runs" / "real"
    report = build_report(run, Trainer(cfg, log=lambda *a: None).run())
    logged = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    first = logged[0]
    # report.html embeds the static export: open the report, then look inside its frame
    browser.get(report.as_uri())
    browser.switch_to.frame(browser.find_element("css selector", "iframe.dashboard"))
    assert wait_for(browser, TRACE_LENGTHS, lambda v: v and len(v) == 1) == [["real", 1]]
    browser.execute_script("const s = document.getElementById('sample-run'); s.value = 'real';"
                           "s.dispatchEvent(new Event('change'));")
    wait_for(browser, "return document.querySelectorAll('tr.sample').length", lambda v: v == len(logged))
    spans = browser.execute_script(
        "return [...document.querySelectorAll('tr.sample')].map(r => [...r.querySelectorAll('span.tok')]"
        ".map(s => [s.textContent, s.title, getComputedStyle(s).backgroundColor]))")
    shown = next(s for s in spans if "".join(t[0] for t in s) == "".join(t[0] for t in first["tokens"]))
    assert len(shown) == len(first["tokens"]) > 0
    assert shown[0][1].startswith("log-prob ") and "entropy " in shown[0][1]
    assert all(bg not in ("rgba(0, 0, 0, 0)", "transparent") for _, _, bg in shown)  # every token shaded
    browser.switch_to.default_content()
    shot(browser, "real_run_report.png")
    assert console_errors(browser) == []
