"`fakenews bench serve` on a tiny random model: real servers on loopback, driven by Debian's wrk."
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKENEWS

from fakenews.core import ModelConfig, Paths
from fakenews.model import build_classifier, load_tokenizer
from fakenews.registry import register

pytestmark = pytest.mark.skipif(not shutil.which("wrk"), reason="no wrk: apt-get install -y wrk")
HEADLINES = [f"headline {i}: the senate {'passes' if i % 2 else 'rejects'} the budget" for i in range(500)]


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory) -> Paths:
    paths = Paths.from_env(tmp_path_factory.mktemp("bench_serve_home"))
    register(build_classifier(ModelConfig(backbone="tiny")), load_tokenizer("tiny"), {}, paths=paths)
    return paths


def test_bench_serve_measures_every_server_and_checks_the_log(tiny_paths):
    from fakenews.bench_serve import bench_serve
    table = bench_serve("fakenews:v1", connections=(1, 16), seconds=1, paths=tiny_paths, titles=HEADLINES)
    assert table.server.tolist() == ["fakenews"] * 2 + ["pipeline"] * 2 + ["constant"] * 2
    assert (table.requests > 0).all() and table.errors.sum() == 0
    assert ((table["p50 ms"] <= table["p95 ms"]) & (table["p95 ms"] <= table["p99 ms"])).all()
    assert (table["wrk CPU s"] > 0).all() and table.load.notna().all()
    ours = table[table.server == "fakenews"]
    assert ours["titles/call"].min() >= 1
    assert table.attrs["scored"] == table.attrs["logged"] > ours.requests.sum() * 0.99  # one logged row per title scored
    assert table[table.server == "pipeline"]["x pipeline"].round(6).eq(1).all()


def test_bench_serve_counts_errors(tiny_paths):
    "Titles the server refuses (too long) come back as non-2xx errors, and nothing is logged for them."
    from fakenews.bench_serve import bench_serve
    table = bench_serve("fakenews:v1", connections=(2,), seconds=1, paths=tiny_paths, anchors=(), titles=["x" * 2000], warmup=1)
    assert table.errors.iloc[0] == table["non-2xx"].iloc[0] == table.requests.iloc[0] > 0
    assert table.attrs["scored"] == table.attrs["logged"] == 0


@pytest.mark.skipif(not (shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists()), reason="py-spy is in the dev extra")
def test_profile_server_samples_the_live_server(tiny_paths, tmp_path):
    from fakenews.bench_serve import profile_server, save_profile
    try: by_part, frames = profile_server("fakenews:v1", connections=8, seconds=2, paths=tiny_paths, titles=HEADLINES)
    except RuntimeError as e:
        if "ptrace" in str(e).lower() or "permission" in str(e).lower(): pytest.skip(f"py-spy may not attach here: {e}")
        raise
    assert round(by_part["% of CPU samples"].sum()) == 100 and by_part.attrs["samples"] > 0
    assert frames["self %"].between(0, 100).all() and (frames["total %"] >= frames["self %"] - 1e-9).all()
    assert [p.name for p in save_profile((by_part, frames), tmp_path, "tiny")] == ["tiny-parts.csv", "tiny-frames.csv", "tiny.json"]


def test_cli_bench_serve(tiny_paths, tmp_path):
    (tmp_path / "titles.csv").write_text("title\n" + "\n".join(HEADLINES) + "\n")
    r = subprocess.run([FAKENEWS, "bench", "serve", "--model", "fakenews:v1", "--home", str(tiny_paths.home), "--connections", "4",
                        "--seconds", "1", "--no-anchors", "--batch-wait-ms", "1", "--titles", str(tmp_path / "titles.csv")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "'batch_wait_ms': 1.0" in r.stdout and "rows logged" in r.stdout and ": equal" in r.stdout, r.stdout
