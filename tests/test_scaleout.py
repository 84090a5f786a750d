"""Scaling out on real components: `fakenews serve --workers 2` counting every worker's requests at /metrics,
two servers writing one PostgreSQL prediction log, a live Prometheus scraping a server with the alert rules
loaded, and the alert rules unit-tested with promtool."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from conftest import FAKENEWS, _free_port, _wait_until
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from fakenews.predlog import read_predictions

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docker" / "prometheus"
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(not PROMETHEUS, reason="Prometheus is not installed (Debian package `prometheus`; .ci/run installs it)")
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool is not installed (Debian package `prometheus`; .ci/run installs it)")


class Server:
    "`fakenews serve` in a process of its own on a free port; its output in a file, its temporary files in `tmp`."
    def __init__(self, home: Path, tmp: Path, *args: str):
        self.port, self.tmp = _free_port(), tmp
        self.url = f"http://127.0.0.1:{self.port}"
        tmp.mkdir(parents=True, exist_ok=True)
        self.out = open(tmp / "server.log", "w")
        self.proc = subprocess.Popen([FAKENEWS, "serve", "--home", str(home), "--port", str(self.port), *args],
                                     stdout=self.out, stderr=subprocess.STDOUT, env=os.environ | {"TMPDIR": str(tmp)})

    def output(self) -> str: return (self.tmp / "server.log").read_text()

    def wait_ready(self, seconds: float = 180) -> "Server":
        def ready():
            assert self.proc.poll() is None, f"the server exited:\n{self.output()[-3000:]}"
            return requests.get(f"{self.url}/ready", timeout=5).status_code == 200
        _wait_until(ready, seconds, 0.3, "the server is ready")
        return self

    def stop(self) -> str:
        "Ctrl-C, as an operator stops it: the prediction log is drained first. Its output."
        if (code := self.proc.poll()) is not None:  # it died under a test: say why in that test's report
            print(f"the server at {self.url} had exited with {code}:\n{self.output()[-3000:]}")
        else:
            self.proc.send_signal(signal.SIGINT)
            try: self.proc.wait(90)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait(30)
        self.out.close()
        return self.output()

    def metrics_folder(self) -> Path:
        "The folder where the workers share their metrics (`serve` makes it under $TMPDIR)."
        [folder] = self.tmp.glob("fakenews-metrics-*")
        return folder


def predict(url: str, titles) -> requests.Response:
    # a new connection each time, so that the kernel hands requests to whichever worker accepts first
    return requests.post(f"{url}/predict", json={"titles": titles}, headers={"Connection": "close"}, timeout=60)


def sample(exposition: str, name: str, **labels) -> float:
    "The sum of the samples called `name` whose labels include `labels`."
    return sum(s.value for f in text_string_to_metric_families(exposition) for s in f.samples
               if s.name == name and labels.items() <= s.labels.items())


def scrape(url: str) -> str:
    return requests.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=30).text


def predict_counts_by_worker(folder: Path) -> dict[int, float]:
    "pid -> /predict requests answered, from each worker's own counter file."
    counts = {}
    for f in folder.glob("counter_*.db"):
        [metric] = [m for m in MultiProcessCollector.merge([str(f)]) if m.name == "fakenews_requests"] or [None]
        counts[int(f.stem.split("_")[-1])] = sum(s.value for s in metric.samples if s.labels.get("route") == "/predict") if metric else 0.0
    return counts


@pytest.fixture(scope="module")
def workers(tiny_home, tmp_path_factory):
    "A server with two worker processes over the tiny model, its log in SQLite."
    tmp = tmp_path_factory.mktemp("workers")
    server = Server(tiny_home, tmp / "server", "--workers", "2", "--set", f"serve.db_url=sqlite:///{tmp / 'log.db'}")
    try: yield server.wait_ready()
    finally: server.stop()


def test_workers_metrics_count_every_request(workers):
    "Whichever worker answers a scrape, /metrics counts the requests of both."
    folder, sent = workers.metrics_folder(), 0
    deadline = time.monotonic() + 180  # a worker accepts once its model has loaded: on a busy machine, seconds apart
    with ThreadPoolExecutor(4) as pool:
        while sent < 40 or sum(n > 0 for n in predict_counts_by_worker(folder).values()) < 2:
            assert time.monotonic() < deadline, f"one worker answered every request: {predict_counts_by_worker(folder)}"
            if sent >= 40: time.sleep(0.5)  # waiting for the second worker: no need to flood the first
            answers = list(pool.map(lambda i: predict(workers.url, f"headline {i}"), range(sent, sent + 8)))
            assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers]
            sent += 8
    by_worker = predict_counts_by_worker(folder)
    assert len(by_worker) == 2 and sum(by_worker.values()) == sent, by_worker
    for _ in range(6):  # several scrapes, on new connections: both workers answer some
        text = scrape(workers.url)
        assert sample(text, "fakenews_requests_total", route="/predict", status="200") == sent
        assert sample(text, "fakenews_predictions_total", source="api") == sent
        assert sample(text, "fakenews_prediction_log_pending") == 0
        assert 'fakenews_model_info{' in text and 'version="1"' in text


def test_a_killed_worker_keeps_its_counts_and_drops_its_live_gauges(workers):
    "uvicorn restarts a killed worker; its requests still count, its `livesum` gauge (rows pending) goes."
    folder = workers.metrics_folder()
    before = sample(scrape(workers.url), "fakenews_requests_total", route="/predict", status="200")
    victim = max(predict_counts_by_worker(folder).items(), key=lambda kv: kv[1])[0]
    assert (folder / f"gauge_livesum_{victim}.db").exists()
    os.kill(victim, signal.SIGKILL)
    _wait_until(lambda: not (scrape(workers.url), (folder / f"gauge_livesum_{victim}.db").exists())[1], 60, 0.3,
                "the killed worker's live gauges are dropped")
    assert sample(scrape(workers.url), "fakenews_requests_total", route="/predict", status="200") == before
    workers.wait_ready()
    _wait_until(lambda: len(list(folder.glob("gauge_livesum_*.db"))) == 2, 120, 0.5, "uvicorn started a new worker")
    assert all(predict(workers.url, "Senate passes the budget").status_code == 200 for _ in range(4))
    assert sample(scrape(workers.url), "fakenews_requests_total", route="/predict", status="200") == before + 4


def new_database(postgres_url: str) -> str:
    "The URL of a new, empty database on the session's PostgreSQL server."
    import sqlalchemy as sa
    name = f"scaleout_{os.getpid()}_{time.monotonic_ns()}"
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn: conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"

@pytest.fixture
def fresh_database(postgres_url): return new_database(postgres_url)


def test_two_servers_share_one_postgres_log(tiny_home, fresh_database, tmp_path):
    "Two servers (one with two workers) scored by concurrent clients: every title stored once, then a drift report on that log."
    home = tmp_path / "home"  # a copy: the report written below must not reach the other tests' servers
    for sub in ("data", "registry"): shutil.copytree(tiny_home / sub, home / sub, symlinks=True)
    servers = [Server(home, tmp_path / "a", "--workers", "2", "--set", f"serve.db_url={fresh_database}"),
               Server(home, tmp_path / "b", "--set", f"serve.db_url={fresh_database}")]
    titles = [f"Senate votes on budget bill number {i}" for i in range(400)]
    chunks = [titles[i:i + 10] for i in range(0, len(titles), 10)]
    try:
        for s in servers: s.wait_ready()
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda ic: predict(servers[ic[0] % 2].url, ic[1]), enumerate(chunks)))
        assert [r.status_code for r in answers] == [200] * len(chunks)
        assert [p["title"] for r in answers for p in r.json()["predictions"]] == titles
    finally:
        outputs = [s.stop() for s in servers]  # drains each log
    rows = read_predictions(fresh_database)
    assert len(rows) == len(titles), (len(rows), outputs)
    assert rows.id.is_unique and sorted(rows.title) == sorted(titles)
    assert set(rows.model_version) == {"fakenews:v1"} and set(rows.source) == {"api"}
    r = subprocess.run([FAKENEWS, "monitor", "report", "--home", str(home), "--db-url", fresh_database],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"fakenews:v1, {len(titles)} logged predictions" in r.stdout, r.stdout
    assert len(list((home / "reports" / "monitoring").glob("*/summary.json"))) == 1


OPEN_LOG_AT = """
import sys, time
from fakenews.predlog import make_engine
url, start = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # imports done: every process opens the log at the same instant
make_engine(url).dispose()
"""

@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_starting_together_open_one_new_log(backend, tmp_path, request):
    "Workers and replicas start together on a log that does not exist yet: each creates the table or finds it, none fails."
    for trial in range(4):
        url = f"sqlite:///{tmp_path / f'log{trial}.db'}" if backend == "sqlite" else new_database(request.getfixturevalue("postgres_url"))
        start = time.time() + 8  # after the slowest import
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_LOG_AT, url, str(start)], stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, "\n".join(e[-1500:] for e in errors if e)
        assert read_predictions(url).empty


@pytest.fixture
def prometheus(tmp_path, workers):
    "A real Prometheus on a free loopback port, scraping the `workers` server every second, with docker/prometheus/alerts.yml."
    port = _free_port()
    (tmp_path / "alerts.yml").write_text((RULES / "alerts.yml").read_text())
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": ["alerts.yml"],
              "scrape_configs": [{"job_name": "fakenews", "static_configs": [{"targets": [workers.url.removeprefix("http://")]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: proc.poll() is None and requests.get(f"{url}/-/ready", timeout=5).status_code == 200, 60, 0.3,
                    "Prometheus is ready")
        yield url
    finally:
        proc.terminate(); proc.wait(30); log.close()


def query(url: str, promql: str) -> list:
    r = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert r["status"] == "success", r
    return r["data"]["result"]


@needs_prometheus
def test_prometheus_scrapes_the_workers_and_evaluates_the_rules(workers, prometheus):
    before = sample(scrape(workers.url), "fakenews_requests_total", route="/predict", status="200")
    with ThreadPoolExecutor(4) as pool:
        assert all(r.status_code == 200 for r in pool.map(lambda i: predict(workers.url, f"title {i}"), range(20)))
    total = 'sum(fakenews_requests_total{job="fakenews", route="/predict", status="200"})'
    _wait_until(lambda: (res := query(prometheus, total)) and float(res[0]["value"][1]) == before + 20, 60, 0.5,
                f"Prometheus counts {before + 20:g} /predict requests")
    assert [float(x["value"][1]) for x in query(prometheus, 'up{job="fakenews"}')] == [1.0]
    expected = [r["alert"] for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    def evaluated():
        rules = [r for g in requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"] for r in g["rules"]]
        return [r["name"] for r in rules] == expected and all(r["health"] == "ok" for r in rules) and rules
    rules = _wait_until(evaluated, 30, 0.5, "every rule is loaded and evaluated without error")
    from_reports = ("FakenewsDriftDetected", "FakenewsMonitoringStale")  # those follow the monitoring reports, not the server
    assert [r["name"] for r in rules if r["state"] != "inactive" and r["name"] not in from_reports] == []  # healthy: nothing pending or firing


def test_alert_rules_name_metrics_the_app_exposes(workers):
    "A typo in a rule's metric name would make it silently never fire: every name must be in the app's exposition."
    exposed = {f.name for f in text_string_to_metric_families(scrape(workers.url))} | {"up"}
    used = set()
    for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]:
        for r in g["rules"]: used |= set(re.findall(r"\b(fakenews_[a-z_]+|up)\b(?=\s*[{)\s])", r["expr"]))
    family = lambda n: re.sub(r"_(total|bucket|count|sum|created)$", "", n)
    assert used and {family(n) for n in used} <= exposed, {family(n) for n in used} - exposed


@needs_promtool
def test_promtool_checks_and_unit_tests_the_rules(tmp_path):
    for cmd in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"], ["test", "rules", "alerts_test.yml"]):
        r = subprocess.run([PROMTOOL, *cmd], cwd=RULES, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    # the unit tests can fail: a looser error-ratio threshold must break them
    shutil.copy(RULES / "alerts_test.yml", tmp_path)
    rules = (RULES / "alerts.yml").read_text()
    assert rules.count("> 0.05") == 1
    (tmp_path / "alerts.yml").write_text(rules.replace("> 0.05", "> 0.5"))
    r = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "FakenewsHighErrorRatio" in r.stdout + r.stderr, r.stdout


# docker/compose.yaml: no Docker engine here, so the file is validated and cross-checked, not run ------------------

COMPOSE = ROOT / "docker" / "compose.yaml"


def compose() -> dict: return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_follows_the_compose_specification():
    "Against the Compose specification's JSON schema, vendored from the docker-compose 1.29.2 wheel (PyPI)."
    import json
    import jsonschema
    schema = json.loads((ROOT / "docker" / "compose-spec.schema.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    assert [e.message for e in validator.iter_errors(compose())] == []
    broken = compose()
    broken["services"]["app"]["replicas"] = 2  # belongs under deploy: the schema must catch it
    assert any("replicas" in e.message for e in validator.iter_errors(broken))


def test_compose_services_fit_together(tmp_path):
    services = compose()["services"]
    app, pg, prom = services["app"], services["postgres"], services["prometheus"]
    dockerfile = (ROOT / "docker" / "serve.Dockerfile").read_text()
    assert app["image"] == "fakenews-serve:latest" and "EXPOSE 7860" in dockerfile
    assert app["deploy"]["replicas"] >= 2 and app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert all(p.endswith(":7860") for p in app["ports"])
    # the replicas' log is the postgres service's database, as its user; the password reaches libpq from the environment
    [url] = [a.split("=", 1)[1] for a in app["command"] if a.startswith("serve.db_url=")]
    env = pg["environment"]
    assert url == f"postgresql+psycopg://{env['POSTGRES_USER']}@postgres:5432/{env['POSTGRES_DB']}"
    assert app["environment"]["PGPASSWORD"] == env["POSTGRES_PASSWORD"] == services["monitor"]["environment"]["PGPASSWORD"]
    assert services["monitor"]["entrypoint"][-1] == url
    # the command is one `fakenews serve` accepts: it gets as far as looking for a model
    r = subprocess.run([FAKENEWS, "serve", *app["command"], "--home", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "nothing to serve" in r.stderr, r.stderr
    # Prometheus reads the config and rules of docker/prometheus, scraping the app service on its port
    [mount] = [v for v in prom["volumes"] if v.startswith("./prometheus:")]
    assert mount.split(":")[1] == "/etc/prometheus" and "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    config = yaml.safe_load((RULES / "prometheus.yml").read_text())
    assert all((RULES / f).is_file() for f in config["rule_files"])
    [sd] = config["scrape_configs"][0]["dns_sd_configs"]
    assert sd["names"] == ["app"] and sd["port"] == 7860
    if PROMTOOL:  # the image runs the version whose promtool tested the rules here
        local = re.search(r"version (\d+\.\d+\.\d+)", subprocess.run([PROMTOOL, "--version"], capture_output=True, text=True).stdout)[1]
        assert prom["image"] == f"prom/prometheus:v{local}", (prom["image"], local)
