"Monitoring end to end with the tiny model: replays into a real SQLite prediction log, reports, gauges and the CLI."
import os
import subprocess
import warnings
from pathlib import Path

import pytest
from conftest import FAKENEWS, tiny_config
from prometheus_client import CollectorRegistry

from fakenews.core import MonitorConfig
from fakenews.monitor import MonitorError, latest_report, monitor_report, replay
from fakenews.monitor_app import register_metrics
from fakenews.predict import Predictor
from fakenews.prepare import load_splits
from fakenews.report import liar_test


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    "A tiny model trained on 2 x 2,000 titles (a validation split of ~400 titles to serve as reference) and its test split."
    from fakenews.train import sample_corpora, train
    root = tmp_path_factory.mktemp("monitor")
    cfg = tiny_config(root / "home", sample_corpora(root / "corpora", n=2000))
    cfg.monitor = MonitorConfig(window=200, min_rows=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg, progress=False)
    predictor = Predictor.load("latest", cfg.paths)
    return cfg, predictor, load_splits(cfg.paths)["test"], liar_test(cfg)


def test_drift_for_liar_not_for_held_out_titles(monitored, tmp_path):
    cfg, predictor, test_split, liar = monitored
    db = f"sqlite:///{tmp_path / 'log.db'}"
    registry = CollectorRegistry()
    register_metrics(registry, cfg)
    gauge = lambda name: registry.get_sample_value(name, {"model": predictor.name})

    replay(db, predictor, test_split.title.sample(200, random_state=2))
    held_out = monitor_report(cfg, db_url=db)
    assert not held_out["drift_detected"], held_out["columns"]
    assert held_out["drift_share"] < 0.5 and held_out["window"]["rows"] == 200
    assert sorted(p.name for p in Path(held_out["folder"]).iterdir()) == ["report.html", "report.json", "summary.json"]
    assert gauge("fakenews_monitor_drift_detected") == 0.0
    assert gauge("fakenews_monitor_window_rows") == 200

    replay(db, predictor, liar.title.sample(200, random_state=2))
    drifted = monitor_report(cfg, db_url=db)  # the newest 200 rows: LIAR's statements only
    assert drifted["drift_detected"] and {"length", "words", "title"} <= set(drifted["drifted_columns"])
    assert drifted["columns"]["embedding"]["score"] > held_out["columns"]["embedding"]["score"]
    assert gauge("fakenews_monitor_drift_detected") == 1.0
    assert gauge("fakenews_monitor_drift_share") == pytest.approx(drifted["drift_share"])
    assert latest_report(cfg.paths)["folder"] == drifted["folder"]


def test_empty_or_small_window_is_a_message(monitored, tmp_path):
    cfg, predictor, test_split, _ = monitored
    db = f"sqlite:///{tmp_path / 'log.db'}"
    with pytest.raises(MonitorError, match=r"has no predictions in the window \(the newest 200 rows\); a report needs at least 50"):
        monitor_report(cfg, db_url=db)
    replay(db, predictor, test_split.title[:20])
    with pytest.raises(MonitorError, match="only 20 predictions in the window"):
        monitor_report(cfg, db_url=db)
    with pytest.raises(MonitorError, match=r"neither an ISO time .* nor a span"):
        monitor_report(cfg, db_url=db, since="last tuesday")
    replay(db, predictor, test_split.title[20:100], model_version="fakenews:v99")
    with pytest.raises(MonitorError, match=r"20 of the 100 rows in the window were served by .*fakenews:v99 x80.*--model"):
        monitor_report(cfg, db_url=db, model="latest")


def test_cli_report_and_errors(monitored, tmp_path):
    cfg, predictor, _, liar = monitored
    env = os.environ | {"FAKENEWS_HOME": cfg.home}
    cli = lambda *argv: subprocess.run([FAKENEWS, "monitor", "report", *argv], capture_output=True, text=True, timeout=300, env=env)

    empty = cli("--db-url", f"sqlite:///{tmp_path / 'empty.db'}")
    assert empty.returncode == 2 and empty.stdout == ""
    assert empty.stderr == ("fakenews: error: the prediction log has no predictions in the window (the newest 500 rows); "
                            "a report needs at least 100: wait for more traffic, widen --window/--since, or lower monitor.min_rows\n")

    db = f"sqlite:///{tmp_path / 'log.db'}"
    replay(db, predictor, liar.title.sample(150, random_state=3))
    r = cli("--db-url", db, "--window", "150", "--since", "1h", "--set", "monitor.min_rows=50", "--fail-on-drift")
    assert r.returncode == 1, r.stderr
    assert r.stdout.startswith("**Drift detected**") and "150 logged predictions" in r.stdout
    assert Path(r.stdout.rsplit("Report: ", 1)[1].strip()).is_file()
