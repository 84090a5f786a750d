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


def test_ddp_two_cpu_processes_test_every_title_once_and_register(tmp_path, sample_corpora):
    home = tmp_path / "home"
    cmd = [FAKENEWS, "train", "--no-notebook", "-q", "--home", str(home), "-p", "backbone", "tiny", "-p", "max_steps", "4",
           "-p", "batch_size", "16", "-p", "run_name", "ddp", "-p", "wandb", "false", "-p", "val_check_interval", "2",
           "-p", "corpora", ",".join(sample_corpora),
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
    assert np.sum(metrics["confusion_matrix"]) == len(splits["test"])
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
