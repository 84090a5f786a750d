"""Lightning DDP on two CPU processes (gloo): `fakenews train` with strategy ddp, devices 2, on the tiny model, a few
steps. Lightning re-runs the command line for the second rank, so the run goes through the CLI in a subprocess."""
import json
import os
import subprocess

import numpy as np
import pandas as pd
from conftest import FAKENEWS

from fakenews.core import Paths
from fakenews.predict import Predictor
from fakenews.prepare import load_splits


def odd_corpora(folder, sample_corpora) -> list[str]:
    "The sample corpora, 10 titles fewer in one label of the first: 79 validation and 79 test titles, odd for two ranks."
    first = pd.read_csv(sample_corpora[0])
    first = first.drop(first[first.label == first.label.iloc[0]].index[:10])
    first.to_csv(folder / "first.csv", index=False)
    return [str(folder / "first.csv"), *sample_corpora[1:]]


def macro_f1(matrix) -> float:
    m = np.asarray(matrix)
    return float(np.mean([2 * m[c, c] / d if (d := m[c].sum() + m[:, c].sum()) else 0.0 for c in range(len(m))]))


def test_ddp_two_cpu_processes_test_every_title_once_and_register(tmp_path, sample_corpora):
    home, corpora = tmp_path / "home", odd_corpora(tmp_path, sample_corpora)
    cmd = [FAKENEWS, "train", "--no-notebook", "-q", "--home", str(home), "-p", "backbone", "tiny", "-p", "max_steps", "4",
           "-p", "batch_size", "16", "-p", "run_name", "ddp", "-p", "wandb", "false", "-p", "val_check_interval", "2",
           "-p", "corpora", ",".join(corpora),
           "--set", "train.strategy=ddp", "--set", "train.devices=2", "--set", "train.accelerator=cpu", "--set", "train.threads=1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=os.environ | {"WANDB_MODE": "offline"})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    assert "fakenews: error" not in out, out[-5000:]  # no rank fails, the second one included
    assert out.count("registered: fakenews:v1") >= 1, out[-3000:]
    paths, run = Paths.from_env(home), home / "runs" / "ddp"
    splits, metrics = load_splits(paths), json.loads((run / "metrics.json").read_text())
    assert metrics["registered"] == "fakenews:v1" and metrics["steps"] == 4

    # the test split: every title scored exactly once over the two ranks (DistributedSampler pads with repeats)
    assert len(splits["test"]) % 2 == 1 and len(splits["valid"]) % 2 == 1  # so that the ranks' shares differ
    matrix = np.asarray(metrics["confusion_matrix"])
    assert matrix.sum() == len(splits["test"])
    assert abs(metrics["test/acc"] - np.trace(matrix) / matrix.sum()) < 1e-6, (metrics["test/acc"], matrix)
    assert abs(metrics["test/f1"] - macro_f1(matrix)) < 1e-6, (metrics["test/f1"], matrix)
    corpora = {k.split("/")[1] for k in metrics if k.startswith("test/") and k.count("/") == 2}
    assert corpora == set(splits["test"].corpus), corpora

    # the registered model loads and scores; the validation titles it gets wrong are all in the run's list, once
    predictor = Predictor.load("fakenews:v1", paths)
    predictor.temperature = 1.0  # the list is made from the uncalibrated probabilities
    valid = splits["valid"]
    prob = predictor.predict_proba(valid.title.tolist())
    assert np.abs(prob - 0.5).min() > 1e-4, "a probability at 0.5: the labels below could disagree by rounding"
    expected = valid[(prob >= 0.5).astype(int) != valid.label.to_numpy()]
    wrong = pd.read_csv(run / "misclassified_valid.csv", keep_default_na=False)
    assert sorted(wrong.title) == sorted(expected.title), (len(wrong), len(expected))
