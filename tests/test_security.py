"""Security of the public app (issue 13): each test is an exploit or a regression test, run against real components:
uvicorn on loopback, SQLite, PostgreSQL (Debian's server, started by the `postgres_url` fixture), headless Chromium."""
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
import requests
import yaml
from conftest import FAKENEWS, ROOT, trained_tiny_home

from fakenews.core import Config, MonitorConfig, ServeConfig
from fakenews.predlog import PredictionLog, read_predictions

CHROMIUM = Path(os.environ.get("FAKENEWS_CHROMIUM", "/usr/bin/chromium"))
TOKEN = "monitor-token-for-the-tests"
# Titles that break out of the <script> block Evidently embeds its data in, or try other ways to run.
PAYLOADS = ["x</script><script>window.__pwned=1;window.top.document.title='PWNED';document.title='PWNED'</script>",
            "y<!--<script>window.__pwned=2</script>",
            "z${window.__pwned=3}</script><img src=x onerror=\"window.__pwned=4;window.top.document.title='PWNED'\">"]
# threads=0: the in-process servers must not change torch's thread count for the other tests of the session
LIMITS = dict(max_titles=64, max_upload_bytes=300_000, max_csv_rows=2000, threads=0, queue_size=4,
              log_queue_rows=100, log_stuck_seconds=1.0, log_attempts=3)
BODY_LIMIT = 300_000 + 64 * 1024  # max_upload_bytes plus room for a multipart envelope


@pytest.fixture(scope="session")
def sec_home(tmp_path_factory, sample_corpora) -> Path:
    "An artifact root with prepared splits and a tiny model trained in this session, aliased `production`; its own, since these tests write into it."
    return trained_tiny_home(tmp_path_factory, sample_corpora, "security_home")


def _start(cfg: Config):
    "A context manager serving `cfg` on a free port once its model is loaded: yields (url, app)."
    from contextlib import contextmanager

    from fakenews.app import build_app
    from fakenews.serve import run_in_thread

    @contextmanager
    def running():
        app = build_app(cfg)
        with run_in_thread(app) as url:
            deadline = time.monotonic() + 60
            while requests.get(f"{url}/ready", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, requests.get(f"{url}/ready", timeout=5).text
                time.sleep(0.1)
            yield url, app
    return running()


@pytest.fixture(scope="module")
def token_env():
    "The monitoring token, set while this module's servers are built and run."
    old = os.environ.get("FAKENEWS_MONITOR_TOKEN")
    os.environ["FAKENEWS_MONITOR_TOKEN"] = TOKEN
    yield TOKEN
    if old is None: os.environ.pop("FAKENEWS_MONITOR_TOKEN", None)
    else: os.environ["FAKENEWS_MONITOR_TOKEN"] = old


@pytest.fixture(scope="module")
def server(sec_home, tmp_path_factory, token_env):
    "(url, app): the app over the tiny model with a SQLite log, the monitoring token set."
    db = tmp_path_factory.mktemp("sqlite_log") / "log.db"
    cfg = Config(home=str(sec_home), serve=ServeConfig(db_url=f"sqlite:///{db}", **LIMITS),
                 monitor=MonitorConfig(window=300, min_rows=50))
    with _start(cfg) as running: yield running


@pytest.fixture(scope="module")
def pg_server(sec_home, postgres_url, token_env):
    "(url, app): the same app logging to PostgreSQL."
    cfg = Config(home=str(sec_home), serve=ServeConfig(db_url=postgres_url, **LIMITS))
    with _start(cfg) as running: yield running


@pytest.fixture(params=["sqlite", "postgres"])
def backend_server(request):
    return request.getfixturevalue({"sqlite": "server", "postgres": "pg_server"}[request.param])


def stored(app) -> pd.DataFrame:
    "The prediction log of `app` once everything queued is stored."
    assert app.state.service.log.flush(timeout=60)
    return read_predictions(app.state.db_url)


def gradio_call(url: str, api_name: str, data: list, timeout: float = 60) -> tuple[int, str]:
    "POST /gradio_api/call/<api_name>, then read its event stream: (status of the POST, the stream's text or the POST's)."
    r = requests.post(f"{url}/gradio_api/call/{api_name}", json={"data": data}, timeout=timeout)
    if r.status_code != 200: return r.status_code, r.text
    return 200, requests.get(f"{url}/gradio_api/call/{api_name}/{r.json()['event_id']}", timeout=timeout).text


@pytest.fixture(scope="module")
def payload_report(server):
    "300 predictions whose titles carry script payloads, logged by the server, and the monitoring report made on them."
    url, app = server
    from fakenews.monitor import monitor_report
    titles = [f"headline {i}: {PAYLOADS[i % len(PAYLOADS)]}" for i in range(300)]
    for i in range(0, 300, 50):
        r = requests.post(f"{url}/predict", json={"titles": titles[i:i + 50]}, timeout=60)
        assert r.status_code == 200, r.text
    stored(app)
    return monitor_report(app.state.config, window=300, db_url=app.state.db_url)


# 1. Stored XSS through the monitoring report ------------------------------------------------------------------------

def _browser(p):
    return p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"])


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install -y chromium chromium-driver")
def test_stored_xss_in_the_monitoring_report_does_not_run(server, payload_report):
    url, _ = server
    from playwright.sync_api import expect, sync_playwright
    assert Path(payload_report["folder"], "report.html").is_file()
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page()
            page.goto(f"{url}/", timeout=60_000)
            page.get_by_role("tab", name="Monitoring").click()
            for _ in range(20):  # give a report that would load on its own the time to run
                if page.title() == "PWNED": break
                page.wait_for_timeout(500)
            # without the token: no report, no logged headline anywhere in the page
            assert page.title() == "fakenews"
            assert page.locator("iframe").count() == 0
            assert "headline 1:" not in page.content()
            page.locator("#monitor-token input").fill("a wrong guess")
            page.locator("#monitor-show").click()
            expect(page.get_by_text("wrong token").first).to_be_visible(timeout=30_000)
            assert page.locator("iframe").count() == 0
            # with it: the report, in a sandboxed frame where none of the payloads runs
            page.locator("#monitor-token input").fill(TOKEN)
            page.locator("#monitor-show").click()
            frame = page.locator("#monitor-report iframe")
            expect(frame).to_have_count(1, timeout=60_000)
            assert frame.get_attribute("sandbox") == "allow-scripts"  # no allow-same-origin: an opaque origin
            report = page.frame_locator("#monitor-report iframe")
            expect(report.get_by_text(re.compile("drift", re.I)).first).to_be_visible(timeout=60_000)
            page.wait_for_timeout(2000)
            assert page.title() == "fakenews"
            for f in page.frames:
                assert f.evaluate("window.__pwned === undefined"), f.url
                assert f.title() != "PWNED", f.url
        finally:
            browser.close()


def test_report_and_headlines_need_the_token(server, payload_report):
    url, _ = server
    marker = "headline 1:"
    for path in ("/", "/config", "/gradio_api/info"):
        assert marker not in requests.get(f"{url}{path}", timeout=30).text, path
    # only the two documented endpoints are API endpoints: no load events, no internal handlers
    named = requests.get(f"{url}/gradio_api/info", timeout=30).json()["named_endpoints"]
    assert set(named) == {"/classify", "/batch"}, set(named)
    # the endpoints the page used to expose: none of them hands out the report any more
    for name in ("lambda", "lambda_1", "lambda_2", "generate"):
        status, text = gradio_call(url, name, [])
        assert marker not in text and "Evidently" not in text, (name, status, text[:200])


# 2. Server-file read through the batch endpoint --------------------------------------------------------------------

def test_gradio_batch_reads_only_uploaded_files(server, tmp_path):
    url, app = server
    import gradio.utils
    cache = Path(gradio.utils.get_upload_folder())
    secret = tmp_path / f"server-side-{time.time_ns()}.csv"  # any CSV on the server, outside Gradio's upload folder
    secret.write_text("title,api_key\nSenate passes the budget,SECRET-KEY-123\n")
    status, text = gradio_call(url, "batch", [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}])
    assert "SECRET-KEY-123" not in text and "Senate passes the budget" not in text, text[:500]
    assert "event: error" in text, text[:500]
    # a server path sent to any input, not just the file one: never copied into Gradio's cache (and so its file route)
    status, text = gradio_call(url, "classify", [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}])
    assert "event: error" in text and str(secret) not in text, text[:500]
    assert not list(cache.rglob(secret.name)), "a server file was copied into Gradio's cache"
    # a path that does not exist: the same refusal, nothing about the file system in the answer
    status, text = gradio_call(url, "batch", [{"path": "/etc/nothing-here.csv", "meta": {"_type": "gradio.FileData"}}])
    assert "event: error" in text and "nothing-here" not in text and "Errno" not in text, text[:500]
    assert "Senate passes the budget" not in stored(app).title.tolist()
    # Gradio's own file route stays closed too
    assert requests.get(f"{url}/gradio_api/file={secret}", timeout=10).status_code == 403


# 4. Control characters, the dead letter, a bounded queue, readiness ----------------------------------------------

BAD_TITLES = {  # kind: (title, the character's code point)
    "NUL": ("Senate\x00passes the budget", "U+0000"), "bell": ("Senate passes\x07 the budget", "U+0007"),
    "lone surrogate": ("Senate \ud800passes the budget", "U+D800"), "terminal escape": ("Senate \x1b[2Jpasses", "U+001B")}


@pytest.mark.parametrize("kind", list(BAD_TITLES))
def test_control_characters_are_refused_at_the_edge(backend_server, kind):
    url, app = backend_server
    title, code = BAD_TITLES[kind]
    before = len(stored(app))
    r = requests.post(f"{url}/predict", data=json.dumps({"titles": ["fine", title]}), timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert f"title 1 contains the control character {code}" in r.json()["detail"], r.json()
    csv = f'title\nfine\n"{title}"\n'.encode("utf-8", "surrogatepass")
    r = requests.post(f"{url}/predict/csv", files={"file": ("x.csv", csv)}, timeout=30)
    assert r.status_code == 422 and re.search("control character|not UTF-8", r.json()["detail"]), r.text  # a lone surrogate is not UTF-8
    status, text = gradio_call(url, "classify", [title])
    assert "event: error" in text and "control character" in text, text[:300]
    assert len(stored(app)) == before
    assert requests.get(f"{url}/ready", timeout=5).status_code == 200
    ok = requests.post(f"{url}/predict", json={"titles": f"a fine title after the {kind} one"}, timeout=30)
    assert ok.status_code == 200 and f"a fine title after the {kind} one" in stored(app).title.tolist()


POISON = {"sqlite": "poison \ud800 title", "postgres": "poison \x00 title"}  # what each database refuses


@pytest.fixture(params=["sqlite", "postgres"])
def log_url(request, tmp_path, home):
    "(backend, SQLAlchemy URL of a fresh prediction log on it)."
    if request.param == "sqlite": return "sqlite", f"sqlite:///{tmp_path / 'log.db'}"
    return "postgres", request.getfixturevalue("postgres_url")


def test_rows_that_keep_failing_are_dead_lettered(log_url):
    backend, url = log_url
    run = f"run {time.time_ns()}"
    row = lambda title: {"title": title, "prob_fake": 0.5, "label": "real", "model_version": "fakenews:v1", "source": "api"}
    log = PredictionLog(url, retry_seconds=0.05)
    try:
        good = [log.write([row(f"{run} good {i}")]) for i in range(3)]
        bad = log.write([row(f"{run} {POISON[backend]}")])
        good += [log.write([row(f"{run} good {i}")]) for i in range(3, 6)]
        assert log.flush(timeout=20), f"{log.pending} rows still pending: the writer retries them forever"
        titles = read_predictions(url).title.tolist()
        assert sorted(t for t in titles if t.startswith(run)) == sorted(f"{run} good {i}" for i in range(6))
        assert all(len(f.result(timeout=1)) == 1 for f in good)
        with pytest.raises(Exception, match="dead letter"):
            bad.result(timeout=1)
        assert log.healthy and log.dead_lettered == 1
        lines = [json.loads(x) for x in Path(log.dead_letter).read_text().splitlines()]
        [letter] = [x for x in lines if x["row"]["title"].startswith(run)]
        assert letter["row"]["title"] == f"{run} {POISON[backend]}" and letter["error"]
    finally:
        log.close()


@pytest.fixture
def locked(backend_server):
    "(url, app, lock, unlock): lock and unlock the server's prediction table from another connection."
    url, app = backend_server
    db_url = app.state.db_url
    state = {}
    if db_url.startswith("sqlite"):
        def lock():
            state["conn"] = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
            state["conn"].execute("BEGIN EXCLUSIVE")
        def unlock(): state.pop("conn").execute("ROLLBACK")
    else:
        import sqlalchemy as sa
        engine = sa.create_engine(db_url)
        def lock():
            state["conn"] = engine.connect()
            state["conn"].exec_driver_sql("BEGIN")
            state["conn"].exec_driver_sql("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")
        def unlock():
            conn = state.pop("conn"); conn.exec_driver_sql("ROLLBACK"); conn.close()
    yield url, app, lock, unlock
    if "conn" in state: unlock()


def test_stuck_log_fails_ready_and_a_full_queue_answers_503(locked):
    url, app, lock, unlock = locked
    run = f"stuck {time.time_ns()}"
    stored(app)
    lock()
    try:
        accepted, busy = [], 0
        for i in range(30):  # 10 titles per request; the queue holds 100 rows
            titles = [f"{run} {i} {j}" for j in range(10)]
            r = requests.post(f"{url}/predict", json={"titles": titles}, timeout=30)
            if r.status_code == 200: accepted += titles
            else:
                assert r.status_code == 503 and "busy" in r.json()["detail"], r.text
                busy += 1
        assert busy > 0, "the queue grew without bound"
        deadline = time.monotonic() + 15
        while (ready := requests.get(f"{url}/ready", timeout=5)).status_code == 200:
            assert time.monotonic() < deadline, "/ready stayed green while the log was stuck"
            time.sleep(0.2)
        assert ready.status_code == 503 and ready.json()["status"] == "failed", ready.text
    finally:
        unlock()
    deadline = time.monotonic() + 60
    while requests.get(f"{url}/ready", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the server did not recover once the log could write again"
        time.sleep(0.2)
    titles = stored(app).title
    assert sorted(titles[titles.str.startswith(run)]) == sorted(accepted)  # every accepted prediction, once


def test_shutdown_dead_letters_what_it_cannot_store(log_url):
    backend, url = log_url
    import sqlalchemy as sa
    run = f"shutdown {time.time_ns()}"
    log = PredictionLog(url, retry_seconds=0.05)
    holder = sa.create_engine(url).connect()
    holder.exec_driver_sql("BEGIN EXCLUSIVE" if backend == "sqlite" else "BEGIN")
    if backend == "postgres": holder.exec_driver_sql("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")
    try:
        for i in range(20):
            log.write([{"title": f"{run} {i}", "prob_fake": 0.5, "label": "real", "model_version": "fakenews:v1", "source": "api"}])
        start = time.monotonic()
        log.close(timeout=2)
        assert time.monotonic() - start < 20
    finally:
        holder.exec_driver_sql("ROLLBACK"); holder.close()
    assert Path(log.dead_letter).is_file(), "queued predictions were dropped at shutdown"
    letters = [json.loads(x)["row"]["title"] for x in Path(log.dead_letter).read_text().splitlines()]
    assert sorted(t for t in letters if t.startswith(run)) == sorted(f"{run} {i}" for i in range(20))


# 5. Body limits, a bounded Gradio queue, generic errors ---------------------------------------------------------

def _chunked(url: str, path: str, prefix: bytes, suffix: bytes, pad: int, content_type="application/json"):
    "Send `prefix`, `pad` bytes of spaces and `suffix` as a chunked body (no Content-Length): (status, body)."
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    def body():
        yield prefix
        for _ in range(pad // 16_384): yield b" " * 16_384
        yield suffix
    try:
        conn.request("POST", path, body=body(), headers={"Content-Type": content_type}, encode_chunked=True)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    except (BrokenPipeError, ConnectionResetError) as e:  # the server stopped reading: also a refusal
        return 413, repr(e)
    finally:
        conn.close()


def test_body_limits_cover_chunked_bodies_and_gradio(server):
    url, app = server
    before = len(stored(app))
    big = 3 * BODY_LIMIT
    status, text = _chunked(url, "/predict", b'{"titles": "chunked"', b"}", big)
    assert status == 413 and "the request body has more than" in text, (status, text[:200])
    status, text = _chunked(url, "/gradio_api/call/classify", b'{"data": ["chunked"', b"]}", big)
    assert status == 413, (status, text[:200])
    status, text = _chunked(url, "/gradio_api/queue/join", b'{"data": ["chunked"',
                            b'], "fn_index": 0, "session_hash": "abc"}', big)
    assert status == 413, (status, text[:200])
    boundary = b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.csv\"\r\n\r\ntitle\nchunked\n"
    status, text = _chunked(url, "/gradio_api/upload", boundary, b"\r\n--x--\r\n", big, "multipart/form-data; boundary=x")
    assert status == 413, (status, text[:200])
    r = requests.post(f"{url}/gradio_api/call/classify", data=b'{"data": ["long"' + b" " * big + b"]}", timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text[:200]
    assert len(stored(app)) == before
    assert requests.post(f"{url}/predict", json={"titles": "a small request"}, timeout=30).status_code == 200


def test_gradio_queue_is_bounded(server):
    url, app = server
    service = app.state.service
    blocker = threading.Thread(target=service.run_model, args=(time.sleep, 4))
    blocker.start()  # the model is busy: Gradio events wait in its queue
    try:
        time.sleep(0.2)
        responses = []
        def call(i): responses.append(requests.post(f"{url}/gradio_api/call/classify", json={"data": [f"queued {i}"]}, timeout=30))
        callers = [threading.Thread(target=call, args=(i,)) for i in range(12)]
        for c in callers: c.start()
        for c in callers: c.join()
        statuses = [r.status_code for r in responses]
        assert statuses.count(503) > 0, statuses  # queue_size=4: the rest are refused, not queued without end
        assert set(statuses) <= {200, 503}, statuses
    finally:
        blocker.join()
    for r in responses:  # the queued events run once the model is free: wait for each, so later tests see a quiet server
        if r.status_code == 200:
            assert "event: complete" in requests.get(f"{url}/gradio_api/call/classify/{r.json()['event_id']}", timeout=60).text


@pytest.fixture
def server_log():
    "Records of the `fakenews` logger while the test runs (it does not propagate to pytest's caplog)."
    records = []
    handler = logging.Handler(); handler.emit = records.append
    logger = logging.getLogger("fakenews"); logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_errors_are_generic_for_clients_and_detailed_in_the_log(sec_home, tmp_path, server_log):
    from fakenews.app import build_app
    from fakenews.serve import run_in_thread
    cfg = Config(home=str(sec_home), serve=ServeConfig(model="fakenews:v9", threads=0, db_url=f"sqlite:///{tmp_path / 'log.db'}"))
    with run_in_thread(build_app(cfg)) as url:
        deadline = time.monotonic() + 30
        while (ready := requests.get(f"{url}/ready", timeout=5).json())["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        predict = requests.post(f"{url}/predict", json={"titles": "Senate passes the budget"}, timeout=10)
        summary = requests.get(f"{url}/monitoring/summary", timeout=10)
    assert ready["status"] == "failed"
    for answer in (json.dumps(ready), predict.text):
        assert "v9" not in answer and "ModelError" not in answer and str(sec_home) not in answer, answer
    assert predict.status_code == 503
    assert any("v9" in r.getMessage() for r in server_log), "the reason belongs in the server log"
    assert summary.status_code in (403, 404), summary.text[:200]  # Gradio's event analytics are not public


# 6. Explanations ------------------------------------------------------------------------------------------------

def test_explanations_are_bounded_by_the_token_window(sec_home, tmp_path):
    from fakenews.predict import Predictor
    from fakenews.serve import Service
    predictor = Predictor.load("production", Config(home=str(sec_home)).paths)
    scored = []
    def counting(titles, _score=predictor.predict_proba):
        scored.append(len(titles)); return _score(titles)
    predictor.predict_proba = counting  # count the titles each explanation scores
    service = Service(Config(home=str(sec_home), serve=ServeConfig(threads=0, db_url=f"sqlite:///{tmp_path / 'log.db'}")), predictor)
    title = " ".join(["w"] * 500)  # 999 characters, 500 words: far past the model's 64-token window
    words = service.explain(title)
    assert sum(scored) < predictor.max_length, f"{sum(scored)} titles scored for one explanation"
    assert [w for w, _ in words] == title.split()  # every word is shown
    assert sum(scored) <= service.limits.max_explained_words + 1, sum(scored)
    explained = [s for _, s in words if s is not None]
    assert 0 < len(explained) <= service.limits.max_explained_words
    assert all(s is None for _, s in words[predictor.max_length:])  # past the window: not explained
    scored.clear()
    short = "Senate passes the budget after a long night"
    assert all(s is not None for _, s in service.explain(short)) and sum(scored) == len(short.split()) + 1
    service.close()


# 7. Atomic writes -----------------------------------------------------------------------------------------------

def test_metrics_survive_a_half_written_summary(server, payload_report):
    url, app = server
    from fakenews.monitor import monitoring_dir
    torn = monitoring_dir(app.state.config.paths) / "99991231-235959-999999"
    torn.mkdir()
    try:
        (torn / "summary.json").write_text(json.dumps(payload_report)[:200])  # what a reader sees mid-write
        r = requests.get(f"{url}/metrics", timeout=10)
        assert r.status_code == 200, r.text[:300]
        assert f'fakenews_monitor_window_rows{{model="{payload_report["model"]}"}} 300.0' in r.text
    finally:
        shutil.rmtree(torn)


def test_concurrent_reports_share_one_reference_cache(sec_home, tmp_path):
    from fakenews.monitor import reference_frame
    from fakenews.predict import Predictor
    home = tmp_path / "home"
    for sub in ("data", "registry"): (home / sub).parent.mkdir(parents=True, exist_ok=True); (home / sub).symlink_to(sec_home / sub)
    cfg = Config(home=str(home))
    predictor = Predictor.load("production", cfg.paths)
    expected = reference_frame(predictor, cfg)[0]
    for trial in range(3):
        shutil.rmtree(home / "reports", ignore_errors=True)
        errors, barrier = [], threading.Barrier(4)
        def report(errors=errors, barrier=barrier):
            barrier.wait()
            try: pd.testing.assert_frame_equal(reference_frame(predictor, cfg)[0], expected)
            except Exception as e: errors.append(repr(e))
        threads = [threading.Thread(target=report) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert not errors, (trial, errors)
        assert not [p.name for p in (home / "reports" / "monitoring" / "reference").iterdir() if not p.name.endswith(".parquet")]


def test_summary_is_written_atomically(tmp_path):
    from fakenews.monitor import write_atomic
    target = tmp_path / "summary.json"
    docs = [json.dumps({"n": n, "pad": "x" * 200_000}) for n in range(2)]
    stop, errors = threading.Event(), []
    write_atomic(target, docs[1])  # from here on a reader sees the old file or the new one: never none, never part of one
    def read():
        while not stop.is_set():
            try: json.loads(target.read_text())
            except (FileNotFoundError, ValueError) as e: errors.append(e)
    reader = threading.Thread(target=read); reader.start()
    try:
        for i in range(300): write_atomic(target, docs[i % 2])
    finally:
        stop.set(); reader.join()
    assert not errors, f"{len(errors)} torn or missing reads, the first: {errors[:1]}"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


# 8. Retention ---------------------------------------------------------------------------------------------------

def test_prediction_log_keeps_rows_for_the_retention_period(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    now = datetime.now(timezone.utc)
    row = lambda title, age: {"title": title, "prob_fake": 0.5, "label": "real", "model_version": "fakenews:v1",
                              "source": "api", "ts": now - age}
    with PredictionLog(url, retention_days=7, prune_every=0.2) as log:
        log.write([row("a month old", timedelta(days=30)), row("a week and a day old", timedelta(days=8)),
                   row("six days old", timedelta(days=6)), row("new", timedelta(0))]).result(timeout=10)
        deadline = time.monotonic() + 10
        while len(read_predictions(url)) > 2:
            assert time.monotonic() < deadline, "the writer did not prune old rows"
            time.sleep(0.1)
    assert read_predictions(url).title.tolist() == ["six days old", "new"]
    assert ServeConfig().log_retention_days > 0  # on by default


def test_gradio_files_and_batch_outputs_expire(sec_home, tmp_path):
    cfg = Config(home=str(sec_home), serve=ServeConfig(threads=0, db_url=f"sqlite:///{tmp_path / 'log.db'}", temp_retention_minutes=0.05))
    with _start(cfg) as (url, app):
        [uploaded] = requests.post(f"{url}/gradio_api/upload", files={"files": ("in.csv", b"title\nSenate passes the budget\n")},
                                   timeout=30).json()
        status, text = gradio_call(url, "batch", [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}])
        assert "event: complete" in text, text[:300]
        output = json.loads(text.split("data: ", 1)[1].splitlines()[0])[1]["path"]
        files = [Path(uploaded), Path(output)]  # both on the server
        assert all(f.is_file() for f in files)
        deadline = time.monotonic() + 30
        while any(f.exists() for f in files):
            assert time.monotonic() < deadline, f"outlived their retention: {[str(f) for f in files if f.exists()]}"
            time.sleep(0.5)
    assert ServeConfig().temp_retention_minutes > 0


def test_old_monitoring_reports_are_pruned(tmp_path):
    from fakenews.core import Paths
    from fakenews.monitor import monitoring_dir, prune_reports
    paths = Paths.from_env(tmp_path)
    now = datetime(2026, 6, 30, tzinfo=timezone.utc)
    names = ["20260101-000000-000000", "20260530-120000-000000", "20260625-000000-000000"]
    for name in names:
        (monitoring_dir(paths) / name).mkdir(parents=True); (monitoring_dir(paths) / name / "summary.json").write_text("{}")
    removed = prune_reports(paths, MonitorConfig(report_retention_days=14), now=now)
    assert sorted(p.name for p in removed) == names[:2]
    assert [p.name for p in monitoring_dir(paths).iterdir()] == names[2:]
    # the newest report stays, however old
    assert prune_reports(paths, MonitorConfig(report_retention_days=1), now=now + timedelta(days=365)) == []
    assert MonitorConfig().report_retention_days > 0


# 3 (monitoring part). A log row never names the model monitoring loads -----------------------------------------

def test_monitoring_loads_no_model_a_log_row_names(sec_home, tmp_path):
    from fakenews.monitor import MonitorError, monitor_report
    planted = tmp_path / "planted-model"  # a loadable model folder outside the registry
    shutil.copytree(sec_home / "registry" / "fakenews" / "v1", planted)
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with PredictionLog(url) as log:
        log.write([{"title": f"headline {i}", "prob_fake": 0.5, "label": "real", "model_version": str(planted), "source": "api"}
                   for i in range(60)])
    cfg = Config(home=str(sec_home), monitor=MonitorConfig(window=60, min_rows=50))
    with pytest.raises(MonitorError, match="not a registry version"):
        monitor_report(cfg, db_url=url)


# 9. Workers serve the version the parent resolved -----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_workers_serve_the_version_the_parent_resolved(tmp_path):
    from fakenews.core import ModelConfig, Paths
    from fakenews.model import build_classifier, load_tokenizer
    from fakenews.registry import promote, register
    paths = Paths.from_env(tmp_path / "home")
    for _ in range(2): register(build_classifier(ModelConfig(backbone="tiny")), load_tokenizer("tiny"), {}, paths=paths)
    promote("fakenews:v1", "production", paths, force=True)
    port = _free_port()
    proc = subprocess.Popen([FAKENEWS, "serve", "--home", str(paths.home), "--port", str(port), "--workers", "2",
                             "--set", f"serve.db_url=sqlite:///{tmp_path / 'log.db'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        announced = ""
        while "at http://" not in announced:
            announced = proc.stdout.readline()
            assert announced, "the server stopped before it said what it serves"
        promote("fakenews:v2", "production", paths, force=True)  # a promotion while the workers start
        assert "serving fakenews:v1" in announced, announced
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
        while True:
            assert proc.poll() is None
            try:
                if requests.get(f"{url}/ready", timeout=2).status_code == 200: break
            except requests.ConnectionError: pass
            assert time.monotonic() < deadline, "the workers did not get ready"
            time.sleep(0.3)
        models = {requests.post(f"{url}/predict", json={"titles": f"headline {i}"}, headers={"Connection": "close"},
                                timeout=30).json()["model"] for i in range(30)}
        assert models == {"fakenews:v1"}, models
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


# CI and disclosure -------------------------------------------------------------------------------------------------

def test_ci_workflows_have_minimal_permissions():
    allowed_writes = {("docs.yaml", "deploy"): {"contents"}}  # publishing the site pushes to the gh-pages branch
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
    assert workflows
    for path in workflows:
        flow = yaml.safe_load(path.read_text())
        top = flow.get("permissions")
        assert isinstance(top, dict), f"{path.name}: no top-level permissions (the token would get the repository default)"
        assert "write" not in top.values(), f"{path.name}: write access for every job: {top}"
        for name, job in flow["jobs"].items():
            perms = job.get("permissions", {})
            assert perms != "write-all", (path.name, name)
            writes = {k for k, v in perms.items() if v == "write"}
            assert writes <= allowed_writes.get((path.name, name), set()), (path.name, name, writes)


def test_security_policy_says_what_is_defended_and_how_to_report():
    text = (ROOT / "SECURITY.md").read_text()
    for heading in ("Threat model", "What is defended", "Reporting"):
        assert f"## {heading}" in text, heading
