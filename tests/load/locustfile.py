"""Load test of the REST API with locust: mostly one headline per request, some batches, a readiness probe.

Run by `make load-test` (tests/load/run.py starts a server and reports), or by hand against a running server:
    locust -f tests/load/locustfile.py --headless -u 20 -r 5 -t 60s --host http://127.0.0.1:7860
Headlines come from the file in $FAKENEWS_LOAD_TITLES (one per line) when set, else from titles.txt beside this file.
"""
import os
import random
from pathlib import Path

from locust import HttpUser, between, task

_path = os.environ.get("FAKENEWS_LOAD_TITLES") or Path(__file__).with_name("titles.txt")
TITLES = [t for t in Path(_path).read_text().splitlines() if t.strip()]
BATCH = 8  # titles per batch request


class Reader(HttpUser):
    "A client that checks single headlines, now and then a small batch, and probes readiness."
    wait_time = between(0.5, 1.5)

    @task(10)
    def one_title(self):
        self.client.post("/predict", json={"titles": random.choice(TITLES)}, name="/predict [1 title]")

    @task(2)
    def batch(self):
        self.client.post("/predict", json={"titles": random.sample(TITLES, min(BATCH, len(TITLES)))}, name=f"/predict [{BATCH} titles]")

    @task(1)
    def ready(self):
        self.client.get("/ready")
