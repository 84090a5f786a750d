"""`make load-test`: serve a registered model locally, measure single-title REST latency, then run locust against it.

    python tests/load/run.py [--model production] [--users 20] [--seconds 60] [--sequential 200] [--out DIR]

Starts `fakenews serve` on a free port of 127.0.0.1 (its prediction log in DIR/predictions.db, not the real one),
sends `--sequential` single-title requests one after another (p50/p95/p99 latency as a client sees it), runs
locust headless (`--users` users for `--seconds` seconds, stats as CSV in DIR), stops the server with Ctrl-C and
checks that every title the server scored (its /metrics) was logged. Prints a markdown summary and writes DIR/summary.json.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None: raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            if requests.get(f"{url}/ready", timeout=2).status_code == 200: return
        except requests.ConnectionError: pass
        time.sleep(0.5)
    raise SystemExit(f"the server at {url} was not ready after {timeout:.0f} s")


def sample_titles(n: int = 500) -> list[str]:
    "Headlines of the prepared test split when there is one, else the built-in titles.txt."
    try:
        from fakenews.prepare import load_splits
        return load_splits()["test"].title.sample(frac=1, random_state=0).head(n).tolist()
    except Exception:
        return [t for t in (HERE / "titles.txt").read_text().splitlines() if t.strip()]


def sequential(url: str, titles: list[str], n: int, warmup: int = 10) -> np.ndarray:
    "Latencies (ms) of `n` single-title requests sent one after another, after `warmup` unmeasured ones."
    times = []
    with requests.Session() as s:
        for i in range(warmup + n):
            start = time.perf_counter()
            r = s.post(f"{url}/predict", json={"titles": titles[i % len(titles)]}, timeout=30)
            r.raise_for_status()
            if i >= warmup: times.append((time.perf_counter() - start) * 1000)
    return np.array(times)


def scored_titles(metrics: str) -> int:
    "Titles the server says it scored (`fakenews_predictions_total`, all labels and sources)."
    from prometheus_client.parser import text_string_to_metric_families
    return int(sum(s.value for f in text_string_to_metric_families(metrics) for s in f.samples if s.name == "fakenews_predictions_total"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="registry reference (default: the server's, serving else production)")
    p.add_argument("--users", type=int, default=20); p.add_argument("--spawn-rate", type=float, default=5)
    p.add_argument("--seconds", type=int, default=60); p.add_argument("--sequential", type=int, default=200)
    p.add_argument("--out", default=None, help="output folder (default: $FAKENEWS_HOME/reports/load)")
    args = p.parse_args()
    from fakenews.core import Paths
    out = Path(args.out or Paths.from_env().reports / "load"); out.mkdir(parents=True, exist_ok=True)
    db = out / "predictions.db"
    db.unlink(missing_ok=True)
    titles = sample_titles()
    (out / "titles.txt").write_text("\n".join(titles) + "\n")
    port = free_port(); url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "fakenews"), "serve", "--port", str(port), "--set", f"serve.db_url=sqlite:///{db}"] + (["--model", args.model] if args.model else [])
    server = subprocess.Popen(cmd, stdout=open(out / "server.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_ready(url, server)
        model = requests.get(f"{url}/ready", timeout=5).json()["model"]
        lat = sequential(url, titles, args.sequential)
        locust = subprocess.run([str(BIN / "locust"), "-f", str(HERE / "locustfile.py"), "--headless", "-u", str(args.users),
                                 "-r", str(args.spawn_rate), "-t", f"{args.seconds}s", "--host", url, "--csv", str(out / "locust"),
                                 "--only-summary", "--loglevel", "WARNING"],
                                env={**os.environ, "FAKENEWS_LOAD_TITLES": str(out / "titles.txt")}, capture_output=True, text=True)
        (out / "locust.log").write_text(locust.stdout + locust.stderr)
        scored = scored_titles(requests.get(f"{url}/metrics", timeout=10).text)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)
    stats = pd.read_csv(out / "locust_stats.csv").set_index("Name")
    total = stats.loc["Aggregated"]
    from fakenews.predlog import read_predictions
    logged = len(read_predictions(f"sqlite:///{db}"))
    summary = {
        "model": model, "sequential_requests": args.sequential,
        "single_title_ms": {"p50": round(float(np.percentile(lat, 50)), 1), "p95": round(float(np.percentile(lat, 95)), 1),
                            "p99": round(float(np.percentile(lat, 99)), 1), "mean": round(float(lat.mean()), 1)},
        "locust": {"users": args.users, "seconds": args.seconds, "requests": int(total["Request Count"]),
                   "failures": int(total["Failure Count"]), "error_rate": round(float(total["Failure Count"] / max(total["Request Count"], 1)), 4),
                   "requests_per_s": round(float(total["Requests/s"]), 1), "p50_ms": float(total["50%"]), "p95_ms": float(total["95%"]),
                   "p99_ms": float(total["99%"]),
                   "by_name": {n: {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"]), "p50_ms": float(r["50%"]),
                                   "p95_ms": float(r["95%"])} for n, r in stats.drop(index="Aggregated").iterrows()}},
        "titles_scored": scored, "titles_logged": logged,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    s, lc = summary["single_title_ms"], summary["locust"]
    print(f"model {model}\n\n| measure | p50 ms | p95 ms | p99 ms | other |\n|---|---|---|---|---|\n"
          f"| {args.sequential} sequential single-title requests | {s['p50']} | {s['p95']} | {s['p99']} | mean {s['mean']} ms |\n"
          f"| locust {args.users} users, {args.seconds} s (all requests) | {lc['p50_ms']:.0f} | {lc['p95_ms']:.0f} | {lc['p99_ms']:.0f} | "
          f"{lc['requests']} requests, {lc['requests_per_s']} req/s, error rate {lc['error_rate']:.2%} |")
    for n, r in lc["by_name"].items(): print(f"| locust {n} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | | {r['requests']} requests, {r['failures']} failed |")
    print(f"\nprediction log: {logged} rows for {scored} titles scored; stats in {out}")
    if logged != scored or lc["failures"]: raise SystemExit(1)


if __name__ == "__main__":
    main()
