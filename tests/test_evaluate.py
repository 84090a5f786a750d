"Evaluation: metric code on hand-computed cases, calibration, the CSV plug-in path, the report and model card end to end."
import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import FAKENEWS, tiny_config

from fakenews.evaluate import calibration_error, fit_temperature, scores, score_table
from fakenews.predict import CALIBRATION_FILE, Predictor, softmax
from fakenews.registry import resolve
from fakenews.train import train


def test_scores_by_hand():
    "An imbalanced case and a one-class one (the balanced case [1, 0, 1, 0] is 04_evaluate's own test)."
    # 3 real, 1 fake; everything called real: accuracy 3/4, F1 real 6/7, F1 fake 0, balanced accuracy 1/2
    s = scores([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4])
    assert s["accuracy"] == 0.75 and s["macro_f1"] == pytest.approx(3 / 7) and s["balanced_accuracy"] == 0.5
    assert s["auroc"] == 1.0  # the one fake title still has the highest P(fake)
    assert np.isnan(scores([1, 1], [0.9, 0.8])["auroc"])  # undefined with one class


def test_temperature_scaling_reduces_ece_on_a_miscalibrated_model():
    rng = np.random.default_rng(1)
    true_p = rng.uniform(0.05, 0.95, 8000)
    y = (rng.uniform(size=true_p.size) < true_p).astype(int)
    logits = np.stack([np.zeros_like(true_p), 4 * np.log(true_p / (1 - true_p))], 1)  # four times over-confident
    t = fit_temperature(logits[:4000], y[:4000])
    raw, scaled = (calibration_error(y[4000:], softmax(logits[4000:] / temp)[:, 1]) for temp in (1.0, t))
    assert t == pytest.approx(4.0, rel=0.1)
    assert scaled < raw / 4 and scaled < 0.03
    # an under-confident model gets T < 1
    assert fit_temperature(logits[:4000] / 16, y[:4000]) < 1


def test_score_table_groups():
    pred = pd.DataFrame({"title": list("abcd"), "label": [1, 0, 1, 0], "corpus": ["x", "x", "y", "y"],
                         "p_sys": [0.9, 0.1, 0.2, 0.3]})
    t = score_table(pred).set_index("group")
    assert t.loc["all", "n"] == 4 and t.loc["x", "accuracy"] == 1.0 and t.loc["y", "accuracy"] == 0.5


@pytest.mark.parametrize("content, message", [
    (b"headline,label\nSomething,1\n", "missing column 'title'"),
    (b"title,label\n\xff\xfe broken,1\n", "UTF-8"),
    (b"title,label\nSomething,maybe\n", "maybe"),
])
def test_evaluate_bad_csv_is_one_line(content, message, tmp_path, home):
    bad = tmp_path / "outside.csv"; bad.write_bytes(content)
    r = subprocess.run([FAKENEWS, "evaluate", "--data", str(bad)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("fakenews: error: outside.csv") and message in r.stderr
    assert not home.reports.exists()  # nothing written


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_corpora):
    cfg = tiny_config(tmp_path_factory.mktemp("eval") / "home", sample_corpora, max_steps=80, lr=3e-3, val_check_interval=40)
    train(cfg, progress=False)
    return cfg


def _folder_hashes(folder) -> dict:
    from fakenews.core import file_sha256
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_evaluate_changes_nothing_in_the_version(trained):
    "A version serves the same bytes before and after `fakenews evaluate`: calibration belongs to registration."
    version = resolve("latest", trained.paths)
    titles = pd.read_csv(trained.paths.data / "test.csv").title.tolist()
    before, files = Predictor.load("latest", trained.paths).predict_proba(titles).tobytes(), _folder_hashes(version.path)
    r = subprocess.run([FAKENEWS, "evaluate", "--model", "latest", "--home", str(trained.paths.home)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _folder_hashes(version.path) == files
    assert Predictor.load("latest", trained.paths).predict_proba(titles).tobytes() == before


def test_evaluate_writes_report_and_card_under_reports(trained, tmp_path):
    own = tmp_path / "mine.csv"
    pd.DataFrame({"title": ["Senate passes budget bill", "Aliens endorse candidate"], "label": ["real", "fake"]}).to_csv(own, index=False)
    r = subprocess.run([FAKENEWS, "evaluate", "--model", "latest", "--home", str(trained.paths.home), "--data", str(own)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| test: isot_sample" in r.stdout and "TF-IDF + LR (cased)" in r.stdout and "| mine " in r.stdout
    folder = max((trained.paths.reports / "evaluation").iterdir())
    report = json.loads((folder / "report.json").read_text())
    assert {"test", "liar", "mine"} == set(report["scores"])
    systems = {row["system"] for row in report["scores"]["test"]}
    assert systems == {"model", "model_casing", "majority", "tfidf_lr_cased", "tfidf_lr_lower"}
    from fakenews.behavioural import load_suite
    assert [b["type"] for b in report["behavioural"]].count("inv") == len(load_suite()["inv"])
    card = (folder / "model_card.md").read_text()
    assert card.startswith("---\n") and "model-index:" in card and "## Limitations" in card and "TF-IDF + LR (cased)" in card
    version = resolve("latest", trained.paths)
    assert not (version.path / "README.md").exists()
    # the temperature the report uses is the one fitted on the validation split when the version was registered
    calibration = json.loads((version.path / CALIBRATION_FILE).read_text())
    assert calibration["fitted_on"] == "valid" and calibration["ece_valid"] <= calibration["ece_valid_raw"] + 1e-9
    assert report["calibration"]["temperature"] == pytest.approx(calibration["temperature"])
    assert Predictor.load("latest", trained.paths).temperature == pytest.approx(calibration["temperature"])

    r = subprocess.run([FAKENEWS, "evaluate", "--behavioural", "--model", "latest", "--home", str(trained.paths.home)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "swap person names" in r.stdout


def test_predictor_is_batch_and_order_invariant(trained):
    predictor = Predictor.load("latest", trained.paths)
    titles = pd.read_csv(trained.paths.data / "test.csv").title.tolist()[:50]
    p = predictor.predict_proba(titles)
    predictor.batch_size = 7
    assert np.allclose(predictor.predict_proba(titles[::-1])[::-1], p, atol=1e-5)
    assert np.allclose(predictor.predict_proba(["  " + titles[0] + "\u200b "]), p[:1], atol=1e-6)  # cleaned like training data
    with pytest.raises(ValueError, match="title 1 is empty"): predictor.predict_proba(["fine", "\u200b"])
