"Training on the tiny model: learning, smoke run, kill and resume, registry, pipeline parity, papermill records, sweeps."
import json
import signal
import subprocess
import time

import lightning as L
import nbformat
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader
from conftest import FAKENEWS, tiny_config

from fakenews.core import ModelConfig, Paths
from fakenews.model import TitleClassifier, TitleDataModule, build_classifier, load_tokenizer
from fakenews.registry import load_model, read_aliases, resolve, versions
from fakenews.train import ensure_data, train

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers")


def _trainer(**kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, **kw)


@pytest.fixture
def datamodule(tmp_path, sample_corpora):
    splits, _ = ensure_data(tiny_config(tmp_path, sample_corpora))
    dm = TitleDataModule(splits, load_tokenizer("tiny"), max_length=32, batch_size=16)
    dm.setup()
    return dm


def test_tiny_model_overfits_one_batch(datamodule):
    L.seed_everything(0)
    module = TitleClassifier(build_classifier(ModelConfig(backbone="tiny")), lr=3e-3, warmup_ratio=0.0, corpora=datamodule.corpora)
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad(): before = float(module._loss(batch)[0])
    _trainer(max_steps=80).fit(module, train_dataloaders=DataLoader([batch], batch_size=None))  # the same batch every step
    module.eval()
    with torch.no_grad(): after = float(module._loss(batch)[0])
    assert before > 0.5  # untrained: near ln 2
    assert after < 0.05, f"loss on the one batch only fell from {before:.3f} to {after:.3f}"


def test_fast_dev_run(datamodule):
    module = TitleClassifier(build_classifier(ModelConfig(backbone="tiny")), corpora=datamodule.corpora)
    trainer = _trainer(fast_dev_run=2)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 2
    assert {"train/loss", "val/loss", "val/f1", "val/auroc"} <= set(trainer.callback_metrics)
    trainer.test(module, datamodule=datamodule, verbose=False)
    assert {"test/loss", "test/f1", "test/auroc"} <= set(trainer.callback_metrics)
    assert set(module.test_predictions.corpus) <= {"isot_sample", "fakenewsnet_sample"}


def _train_cmd(home, corpora, run_name, steps):
    return [FAKENEWS, "train", "--no-notebook", "-q", "--home", str(home), "-p", "backbone", "tiny",
            "-p", "max_steps", str(steps), "-p", "batch_size", "8", "-p", "run_name", run_name, "-p", "wandb", "false",
            "-p", "val_check_interval", "100", "-p", "corpora", ",".join(corpora),
            "--set", "train.checkpoint_every_n_steps=25"]


def test_killed_run_resumes_to_the_same_step_count(tmp_path, sample_corpora):
    home, steps = tmp_path / "home", 400
    run_dir = home / "runs" / "r1"
    proc = subprocess.Popen(_train_cmd(home, sample_corpora, "r1", steps), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.02)
    time.sleep(0.3)  # let the checkpoint write finish; the next one is 25 steps away
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run_dir / "metrics.json").exists()
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < killed_at < steps

    r = subprocess.run(_train_cmd(home, sample_corpora, "r1", steps), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == steps
    assert metrics["train_samples"] == (steps - killed_at) * 8  # only the missing steps were trained
    assert len(versions(paths=Paths.from_env(home))) == 1


def test_registry_round_trip_and_pipeline_parity(tmp_path, sample_corpora):
    from transformers import pipeline
    cfg = tiny_config(tmp_path / "home", sample_corpora, max_steps=30, aliases=("production",), force_aliases=True)
    result = train(cfg, progress=False)
    paths = cfg.paths
    assert resolve("production", paths).version == result.version.version == 1
    assert read_aliases(paths=paths) == {"best": 1, "latest": 1, "production": 1}
    meta = resolve("fakenews:v1", paths).meta
    assert meta["val_loss"] == pytest.approx(result.metrics["val/loss"])
    assert meta["data_fingerprint"] == json.loads((paths.data / "manifest.json").read_text())["fingerprint"]
    assert meta["config"]["train"]["max_steps"] == 30 and meta["checkpoint"].endswith("best.ckpt")

    # The registered files are the tested (best) checkpoint's weights: the Lightning module restored from that
    # checkpoint and transformers.pipeline on the registry folder give the same probabilities.
    module = TitleClassifier(build_classifier(cfg.model))
    module.load_state_dict(torch.load(result.checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    module.eval()
    titles = pd.read_csv(paths.data / "test.csv").title.head(40).tolist()
    tokenizer = load_tokenizer("tiny")
    with torch.no_grad():
        enc = tokenizer(titles, padding=True, truncation=True, max_length=64, return_tensors="pt")
        expected = module(enc["input_ids"], enc["attention_mask"]).softmax(-1)[:, 1].numpy()
    clf = pipeline("text-classification", model=str(resolve("production", paths).path), top_k=None, device="cpu")
    got = [next(s["score"] for s in scores if s["label"] == "fake") for scores in clf(titles, truncation=True, max_length=64)]
    assert max(abs(a - b) for a, b in zip(got, expected)) < 1e-5

    model, _, version = load_model("latest", paths)
    assert not model.training and version.version == 1
    r = subprocess.run([FAKENEWS, "registry", "list", "--home", str(paths.home)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "| v1 " in r.stdout and "production" in r.stdout


def test_best_alias_follows_the_best_checkpoint_validation_loss(tmp_path, sample_corpora):
    home = tmp_path / "home"
    good = train(tiny_config(home, sample_corpora, max_steps=80, lr=3e-3, val_check_interval=40, run_name="good"), progress=False)
    bad = train(tiny_config(home, sample_corpora, max_steps=20, lr=1e-7, run_name="bad"), progress=False)
    assert bad.metrics["val/loss"] > good.metrics["val/loss"]
    aliases = read_aliases(paths=Paths.from_env(home))
    assert aliases["latest"] == bad.version.version == 2
    assert aliases["best"] == good.version.version == 1


def test_papermill_run_record_uses_the_given_lr(tmp_path, sample_corpora):
    home = tmp_path / "home"
    cmd = [FAKENEWS, "train", "--home", str(home), "-p", "backbone", "tiny", "-p", "max_steps", "20",
           "-p", "lr", "0.000123", "-p", "run_name", "pm", "-p", "corpora", ",".join(sample_corpora),
           "-p", "val_check_interval", "10", "--set", "train.warmup_ratio=0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # The kernel's progress reaches the terminal, without the warnings of an unencrypted TCP kernel, of tqdm
    # missing ipywidgets in a kernel, or of a wandb setting that no longer exists.
    assert "step 20/20 (epoch" in r.stderr and " left" in r.stderr and "validation at step 10: val/acc" in r.stderr, r.stderr[-3000:]
    for warning in ("without encryption", "IProgress not found", "anonymous setting"):
        assert warning not in r.stderr, r.stderr[-3000:]
    run_dir = home / "runs" / "pm"
    record = nbformat.read(run_dir / "run.ipynb", as_version=4)
    injected = next(c for c in record.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "lr = 0.000123" in injected.source and "max_steps = 20" in injected.source
    assert not any(o.get("output_type") == "error" for c in record.cells for o in c.get("outputs", []))
    assert any("image/png" in o.get("data", {}) for c in record.cells for o in c.get("outputs", []))  # the plots ran
    assert json.loads((run_dir / "config.json").read_text())["train"]["lr"] == 0.000123
    # The optimiser really ran at that rate: with no warm-up, the learning-rate monitor logs lr * (20 - step) / 20
    # (linear decay over the 20 steps) at every logged step.
    history = pd.read_csv(run_dir / "metrics.csv")
    logged = history.dropna(subset=["lr-AdamW/pg1"])
    assert len(logged) >= 1
    for step, rate in zip(logged.step, logged["lr-AdamW/pg1"]):
        assert rate == pytest.approx(0.000123 * (20 - step) / 20, rel=1e-6)
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb")), "no offline W&B run"
    assert json.loads((run_dir / "metrics.json").read_text())["registered"] == "fakenews:v1"


def test_offline_sweep_ranks_trials_and_promotes_the_best(tmp_path, sample_corpora):
    home = tmp_path / "home"
    space = tmp_path / "space.yaml"
    space.write_text("method: grid\nmetric: {name: val/loss, goal: minimize}\n"
                     "parameters:\n  lr: {values: [1.0e-7, 3.0e-3]}\n")
    cmd = [FAKENEWS, "sweep", "-q", "--count", "0", "--space", str(space), "--name", "sw", "--home", str(home),
           "-p", "backbone", "tiny", "-p", "max_steps", "80", "-p", "wandb", "false", "-p", "val_check_interval", "40",
           "-p", "corpora", ",".join(sample_corpora)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    table = pd.read_csv(home / "runs" / "sw.csv")
    assert table.status.tolist() == ["ok", "ok"]
    assert table["val/loss"].is_monotonic_increasing
    assert table.lr.tolist() == [3e-3, 1e-7]  # the higher rate learns in 80 steps, the tiny one does not
    assert table["val/loss"][0] < 0.65 < table["val/loss"][1]
    assert resolve("candidate", Paths.from_env(home)).ref == table.version[0]
    assert (home / "runs" / "sw-t1" / "run.ipynb").is_file() and (home / "runs" / "sw-t2" / "run.ipynb").is_file()
