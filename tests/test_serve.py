"Serving end to end: a real uvicorn server on 127.0.0.1 over a tiny model trained in this session."
import importlib.util
import io
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import requests
from conftest import FAKENEWS, trained_tiny_home

from fakenews.core import Config, ServeConfig
from fakenews.predict import Predictor
from fakenews.predlog import read_predictions

CHROMIUM = Path(os.environ.get("FAKENEWS_CHROMIUM", "/usr/bin/chromium"))  # Debian's package; another Chromium/Chrome by path
# threads=0: the in-process server must not change torch's thread count for the other tests of the session
LIMITS = ServeConfig(max_titles=64, max_upload_bytes=300_000, max_csv_rows=2000, threads=0)


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory, sample_corpora) -> Path:
    "An artifact root holding prepared splits and a tiny model trained in this session, aliased `production`; its own, since these tests write into it."
    return trained_tiny_home(tmp_path_factory, sample_corpora, "serve_home")


@pytest.fixture(scope="module")
def server(tiny_home):
    "(base URL, app): the app over the tiny model on a free port, its model loaded in the background."
    from fakenews.app import build_app
    from fakenews.serve import run_in_thread
    app = build_app(Config(home=str(tiny_home), serve=LIMITS))  # `serving` does not exist: falls back to `production`
    with run_in_thread(app) as url:
        deadline = time.monotonic() + 60
        while requests.get(f"{url}/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.1)
        yield url, app


def logged(app) -> pd.DataFrame:
    "The prediction log of `app`, once everything queued is stored."
    assert app.state.service.log.flush(timeout=30)
    return read_predictions(app.state.db_url)


def test_health_ready_and_docs(server):
    url, app = server
    assert requests.get(f"{url}/health", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{url}/ready", timeout=5).json() == {"status": "ready", "model": "fakenews:v1"}
    spec = requests.get(f"{url}/openapi.json", timeout=5).json()
    assert {"/predict", "/predict/csv", "/health", "/ready", "/metrics"} <= set(spec["paths"])
    assert requests.get(f"{url}/docs", timeout=5).status_code == 200
    page = requests.get(f"{url}/", timeout=10)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    tabs = [c["props"].get("label") for c in requests.get(f"{url}/config", timeout=10).json()["components"] if c.get("type") == "tabitem"]
    assert tabs[:2] == ["Headline", "Batch (CSV)"]
    if importlib.util.find_spec("fakenews.monitor_app"): assert "Monitoring" in tabs  # the monitoring chapter's hook


def test_predict_one_and_many(server):
    url, app = server
    one = requests.post(f"{url}/predict", json={"titles": "Senate passes the budget"}, timeout=30).json()
    assert one["model"] == "fakenews:v1" and len(one["predictions"]) == 1
    p = one["predictions"][0]
    assert p["label"] == ("fake" if p["prob_fake"] >= 0.5 else "real")
    assert p["uncertain"] == (0.35 < p["prob_fake"] < 0.65)
    titles = ["Pope endorses candidate", "Stocks close higher", "Aliens run the Senate"]
    many = requests.post(f"{url}/predict", json={"titles": titles}, timeout=30).json()["predictions"]
    expected = app.state.service.predictor.predict_proba(titles)
    assert [m["title"] for m in many] == titles
    assert max(abs(m["prob_fake"] - e) for m, e in zip(many, expected)) < 1e-5


def _csv(rows: int, column: str = "title") -> bytes:
    return (f"id,{column}\n" + "".join(f"{i},headline {i}\n" for i in range(rows))).encode()


BAD_REQUESTS = {
    # name: (how to send it, HTTP status, part of the message)
    "empty title": (dict(json={"titles": ""}), 422, "title 0 is empty"),
    "whitespace-only title": (dict(json={"titles": ["fine", " \t\u200b "]}), 422, "title 1 is empty"),
    "100k-character title": (dict(json={"titles": "x" * 100_000}), 413, "title 0 has 100,000 characters; at most 1,000"),
    "number instead of a title": (dict(json={"titles": 42}), 422, "titles"),
    "list with a non-text title": (dict(json={"titles": ["fine", None]}), 422, "titles"),
    "no titles field": (dict(json={"title": "Senate passes the budget"}), 422, "titles: Field required"),
    "empty list": (dict(json={"titles": []}), 422, "no titles"),
    "not JSON": (dict(data=b"Senate passes the budget", headers={"Content-Type": "application/json"}), 422, "JSON"),
    "too many titles": (dict(json={"titles": [f"headline {i}" for i in range(65)]}), 413, "65 titles in one request; at most 64"),
    "CSV without a title column": (dict(files={"file": ("x.csv", _csv(3, "headline"))}), 422, "no `title` column"),
    "non-UTF-8 CSV": (dict(files={"file": ("x.csv", "title\nCaf\xe9 au lait\n".encode("latin-1"))}), 422, "not UTF-8"),
    "CSV with an empty title": (dict(files={"file": ("x.csv", b"title\nfine\n\" \"\n")}), 422, "row 2 (after the header): title is empty"),
    "too many CSV rows": (dict(files={"file": ("x.csv", _csv(2001))}), 413, "2,001 titles in one request; at most 2,000"),
    "upload over the byte limit": (dict(files={"file": ("x.csv", b"title\n" + b"headline\n" * 35_000)}), 413, "more than 300,000 bytes"),
    "request body far over the limit": (dict(files={"file": ("x.csv", b"title\n" + b"headline\n" * 200_000)}), 413, "the request body has"),
    "filename with a path": (dict(files={"file": ("../../etc/x.csv", _csv(3))}), 422, "must be a plain name"),
    "Windows path filename": (dict(files={"file": ("..\\..\\x.csv", _csv(3))}), 422, "must be a plain name"),
    "unknown format": (dict(files={"file": ("x.csv", _csv(3))}, params={"format": "xml"}), 422, "format"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_is_refused_and_not_logged(server, name):
    url, app = server
    send, status, message = BAD_REQUESTS[name]
    route = "/predict/csv" if "files" in send else "/predict"
    before = len(logged(app))
    r = requests.post(f"{url}{route}", timeout=30, **send)
    assert r.status_code == status, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and message in detail, detail
    assert len(detail) < 400  # one readable sentence, not the input echoed back
    assert len(logged(app)) == before


def test_concurrent_requests_are_each_logged_once(server):
    url, app = server
    start_id = int(logged(app).id.max() or 0)
    errors, clients, per_client = [], 8, 200

    def client(c):
        with requests.Session() as s:
            for i in range(per_client):
                r = s.post(f"{url}/predict", json={"titles": f"client {c} request {i}: senate budget"}, timeout=60)
                if r.status_code != 200: errors.append(r.text)
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors, errors[:3]
    rows = logged(app)
    rows = rows[rows.id > start_id]
    sent = sorted(f"client {c} request {i}: senate budget" for c in range(clients) for i in range(per_client))
    assert sorted(rows.title) == sent  # every prediction once: none lost, none doubled
    assert rows.id.is_unique and (rows.source == "api").all() and (rows.model_version == "fakenews:v1").all()


def test_csv_batch_keeps_each_title_with_its_prediction(server, tiny_home):
    url, app = server
    from fakenews.prepare import load_splits
    corpus = pd.concat(load_splits(Config(home=str(tiny_home)).paths).values()).title.tolist()
    # 1,000 distinct titles of very different lengths, so the length-sorted batches reorder them inside the model
    titles = list(dict.fromkeys(corpus + [" ".join(t.split()[:3]) for t in corpus] + [f"{t} - Reuters" for t in corpus]))[:1000]
    assert len(titles) == 1000
    upload = pd.DataFrame({"row": range(1000), "title": titles, "label": [i % 2 for i in range(1000)]}).to_csv(index=False).encode()
    expected = Predictor.load("production", Config(home=str(tiny_home)).paths).predict(titles)

    r = requests.post(f"{url}/predict/csv", params={"format": "csv"}, files={"file": ("titles.csv", upload)}, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    back = pd.read_csv(io.StringIO(r.text), keep_default_na=False)
    assert back.columns.tolist() == ["title", "prob_fake", "label", "confidence", "uncertain", "row", "input_label"]
    assert back.title.tolist() == titles and back.row.tolist() == list(range(1000))
    assert (back.prob_fake - expected.prob_fake).abs().max() < 1e-5
    assert back.label.tolist() == expected.label.tolist()

    r = requests.post(f"{url}/predict/csv", files={"file": ("titles.csv", upload)}, timeout=120)
    got = r.json()["predictions"]
    assert [g["title"] for g in got] == titles
    assert max(abs(g["prob_fake"] - e) for g, e in zip(got, expected.prob_fake)) < 1e-5
    rows = logged(app)
    assert (rows[rows.source == "csv"].title.value_counts() == 2).all()


def _samples(text: str) -> dict:
    "{(name, sorted labels): value} of a Prometheus exposition."
    from prometheus_client.parser import text_string_to_metric_families
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_move_with_requests(server):
    url, app = server
    before = _samples(requests.get(f"{url}/metrics", timeout=5).text)
    ok = ("fakenews_requests_total", (("route", "/predict"), ("status", "200")))
    refused = ("fakenews_requests_total", (("route", "/predict"), ("status", "422")))
    batches = ("fakenews_batch_titles_count", ())
    answers = [requests.post(f"{url}/predict", json=body, timeout=30).json() for body in
               ({"titles": "Senate passes the budget"}, {"titles": ["Pope endorses candidate", "Aliens run the Senate"]}, {"titles": ""})]
    after = _samples(requests.get(f"{url}/metrics", timeout=5).text)
    assert after[ok] - before.get(ok, 0) == 2
    assert after[refused] - before.get(refused, 0) == 1
    assert after[batches] - before.get(batches, 0) == 2
    scored = lambda s: sum(v for (n, labels), v in s.items() if n == "fakenews_predictions_total" and ("source", "api") in labels)
    assert scored(after) - scored(before) == 3
    assert after[("fakenews_request_seconds_count", (("route", "/predict"),))] > before.get(("fakenews_request_seconds_count", (("route", "/predict"),)), 0)
    info = [labels for (n, labels) in after if n == "fakenews_model_info"]
    assert info and ("ref", "fakenews:v1") in info[0]
    assert ("fakenews_prediction_log_pending", ()) in after
    # the uncertain counter moves by the titles answered inside the uncertain band (absent until one is)
    uncertain = ("fakenews_uncertain_predictions_total", (("source", "api"),))
    flagged = sum(p["uncertain"] for a in answers for p in a.get("predictions", []))
    assert after.get(uncertain, 0) - before.get(uncertain, 0) == flagged, (flagged, after.get(uncertain))


def test_gradio_client(server):
    url, app = server
    from gradio_client import Client
    client = Client(url, verbose=False)
    label, verdict, words = client.predict("Senate passes the budget after a long night", api_name="/classify")
    assert label["label"] in ("fake", "real")
    assert re.search(r"\*\*(fake|real|uncertain)\*\*", verdict)
    assert [w["token"] for w in words if w["token"].strip()] == "Senate passes the budget after a long night".split()
    rows = logged(app)
    assert rows.title.iloc[-1] == "Senate passes the budget after a long night" and rows.source.iloc[-1] == "ui"


def test_gradio_batch_tab(server, tmp_path):
    url, app = server
    from gradio_client import Client, handle_file
    titles = [f"headline {i} {'about the senate ' * (i % 7)}".strip() for i in range(40)]
    (tmp_path / "batch.csv").write_text(pd.DataFrame({"title": titles, "n": range(40)}).to_csv(index=False))
    table, path = Client(url, verbose=False).predict(handle_file(str(tmp_path / "batch.csv")), api_name="/batch")
    shown = pd.DataFrame(table["data"], columns=table["headers"])
    saved = pd.read_csv(path)
    assert shown.title.tolist() == titles and saved.title.tolist() == titles and saved.n.tolist() == list(range(40))
    expected = app.state.service.predictor.predict_proba(titles)
    assert (saved.prob_fake - expected).abs().max() < 1e-5
    with pytest.raises(Exception, match="no `title` column"):
        (tmp_path / "bad.csv").write_text("headline\nx\n")
        Client(url, verbose=False).predict(handle_file(str(tmp_path / "bad.csv")), api_name="/batch")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install -y chromium chromium-driver")
def test_browser_types_a_headline_and_sees_a_label(server):
    url, app = server
    from playwright.sync_api import expect, sync_playwright
    headline = "Federal Reserve leaves interest rates unchanged"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/", timeout=60_000)
            page.locator("#headline textarea").fill(headline)
            page.locator("#check").click()
            expect(page.locator("#label")).to_contain_text(re.compile("fake|real"), timeout=60_000)
            expect(page.locator("#verdict")).to_contain_text(re.compile("fake|real|uncertain"), timeout=10_000)
            expect(page.locator("#why")).to_contain_text("Reserve", timeout=10_000)
            page.locator("#flag").click()
            expect(page.get_by_text(re.compile("Flagged prediction \\d+"))).to_be_visible(timeout=30_000)
        finally:
            browser.close()
    rows = logged(app)
    row = rows[rows.title == headline]
    assert len(row) == 1 and row.source.iloc[0] == "ui" and bool(row.flagged.iloc[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_cli_serve_answers_and_stores_every_prediction_on_shutdown(tiny_home, tmp_path):
    "`fakenews serve` as `make demo` runs it: a separate process, stopped with Ctrl-C, loses no prediction."
    port, db = _free_port(), tmp_path / "cli.db"
    proc = subprocess.Popen([FAKENEWS, "serve", "--home", str(tiny_home), "--port", str(port), "--set", f"serve.db_url=sqlite:///{db}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if requests.get(f"{url}/ready", timeout=2).status_code == 200: break
            except requests.ConnectionError: pass
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.2)
        titles = [f"headline {i} about the senate" for i in range(300)]
        for i in range(0, 300, 30):
            assert requests.post(f"{url}/predict", json={"titles": titles[i:i + 30]}, timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert f"at http://127.0.0.1:{port}" in out and "fakenews:v1" in out
    assert sorted(read_predictions(f"sqlite:///{db}").title) == sorted(titles)


def test_cli_serve_without_a_model_fails_in_one_line(tmp_path):
    r = subprocess.run([FAKENEWS, "serve", "--home", str(tmp_path), "--port", str(_free_port())],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("fakenews: error: nothing to serve"), r.stderr


def _post_together(url: str, service, bodies: list, busy: float) -> list:
    "POST each body to /predict from its own thread while the model thread sleeps `busy` s, so they arrive together; the responses."
    blocker = service._model_thread.submit(time.sleep, busy)
    answers = [None] * len(bodies)
    def call(i): answers[i] = requests.post(f"{url}/predict", json={"titles": bodies[i]}, timeout=60)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for t in threads: t.start()
    for t in threads: t.join()
    blocker.result()
    return answers


def _batch_counts(url) -> tuple[float, float, float]:
    "(model calls, titles scored by them, calls of a single title) so far, from /metrics."
    s = _samples(requests.get(f"{url}/metrics", timeout=5).text)
    return (s[("fakenews_batch_titles_count", ())], s[("fakenews_batch_titles_sum", ())],
            s[("fakenews_batch_titles_bucket", (("le", "1.0"),))])


def test_concurrent_callers_are_batched_and_each_gets_its_own_answer(server):
    url, app = server
    service = app.state.service
    run = f"batched {time.time_ns()}"
    bodies = [[f"{run} caller {c} title {j}" for j in range(1 + c % 3)] for c in range(16)]  # 1 to 3 titles each
    calls, titles, singles = _batch_counts(url)
    answers = _post_together(url, service, bodies, busy=1.0)  # the model is busy while the callers arrive: they queue up together
    for body, r in zip(bodies, answers):
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        assert [p["title"] for p in got] == body  # its own titles, in its order
        expected = service.predictor.predict_proba(body)
        assert max(abs(p["prob_fake"] - e) for p, e in zip(got, expected)) < 1e-5
    calls2, titles2, singles2 = _batch_counts(url)
    sent = sum(map(len, bodies))
    assert titles2 - titles == sent  # every title went through the model once
    assert calls2 - calls < len(bodies), (calls2 - calls, len(bodies))  # fewer model calls than requests
    assert (calls2 - calls) - (singles2 - singles) >= 1  # at least one call scored more than one title
    rows = logged(app)
    rows = rows[rows.title.str.startswith(run)]
    assert sorted(rows.title) == sorted(t for b in bodies for t in b)  # logged rows == titles scored, each once
    assert len(rows.id.unique()) == sent and (rows.source == "api").all()


def test_a_failing_title_fails_only_its_own_request(server):
    url, app = server
    service, predictor = app.state.service, app.state.service.predictor
    run = f"poison {time.time_ns()}"
    real = predictor.predict_proba
    def fragile(titles):  # the model fails on any batch holding the poisoned title
        if any("POISON" in t for t in titles): raise RuntimeError("the model failed")
        return real(titles)
    bodies = [f"{run} caller {c}" + (" POISON" if c == 3 else "") for c in range(8)]
    predictor.predict_proba = fragile
    try:
        answers = _post_together(url, service, bodies, busy=0.5)  # all eight in one batch
    finally:
        predictor.predict_proba = real
    assert [r.status_code for r in answers] == [500 if c == 3 else 200 for c in range(8)], [r.status_code for r in answers]
    assert all(r.json()["predictions"][0]["title"] == b for r, b in zip(answers, bodies) if r.status_code == 200)
    assert "the model failed" not in answers[3].text  # a generic answer; the reason stays in the server
    rows = logged(app)
    assert sorted(rows[rows.title.str.startswith(run)].title) == sorted(b for c, b in enumerate(bodies) if c != 3)
