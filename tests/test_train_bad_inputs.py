"Training and registry inputs that must fail with one clear line (exit status 2) and leave nothing behind."
import shutil
import subprocess

import pytest
from conftest import FAKENEWS
from test_bad_inputs import _tmpfs

from fakenews.core import ModelConfig, ModelError, Paths
from fakenews.model import build_classifier, load_tokenizer
from fakenews.registry import register, versions


def _run(*args):
    return subprocess.run([FAKENEWS, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["-p", "learning_rate", "1"], "unknown parameter(s) learning_rate"),
    (["-p", "lr", "fast"], "lr"),
    (["-p", "max_steps", "0"], "train.max_steps must be -1 or positive"),
    (["-p", "backbone", "./no/such/model"], "not a saved Hugging Face model"),
    (["--set", "train.nope=1"], "unknown config key 'train.nope'"),
    (["--alias", "v2"], "alias 'v2'"),
])
def test_bad_training_arguments(args, message, home):
    r = _run("train", "--no-notebook", "-q", *args)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("fakenews: error:") and message in lines[-1], r.stderr[-2000:]
    assert not any("Traceback" in line for line in lines)


@pytest.mark.parametrize("args, message", [
    (["promote", "v1", "production"], "no model named 'fakenews'"),
    (["show", "fakenews:nope"], "no model named 'fakenews'"),
])
def test_registry_errors(args, message, home):
    r = _run("registry", *args, "--home", str(home.home))
    assert r.returncode == 2 and message in r.stderr


def test_missing_experiment_notebook(home, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKENEWS_EXPERIMENT_NOTEBOOK", str(tmp_path / "gone.ipynb"))
    r = _run("train", "-q", "-p", "backbone", "tiny")
    assert r.returncode == 2 and "no experiment notebook" in r.stderr and "--no-notebook" in r.stderr


@pytest.fixture
def small_registry_disk(tmp_path):
    yield _tmpfs(tmp_path / "disk", "2m")  # the tiny model's weights alone are ~4 MB
    subprocess.run(["umount", str(tmp_path / "disk")], check=False)


def test_full_disk_while_registering_leaves_no_version(small_registry_disk):
    paths = Paths.from_env(small_registry_disk)
    model, tokenizer = build_classifier(ModelConfig(backbone="tiny")), load_tokenizer("tiny")
    with pytest.raises(ModelError, match="could not write fakenews to the registry"):
        register(model, tokenizer, {"val_loss": 1.0}, paths=paths)
    assert versions(paths=paths) == []
    assert [p.name for p in (paths.registry / "fakenews").iterdir() if p.name != ".lock"] == []  # no staging left
    shutil.rmtree(paths.registry, ignore_errors=True)
