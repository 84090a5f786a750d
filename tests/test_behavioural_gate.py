"The behavioural gate: a version that fails its suite cannot become production or serving without --force, which is logged."
import json
import subprocess

import pytest
from conftest import FAKENEWS

from fakenews.core import Paths
from fakenews.registry import GateError, promote, promotions, read_aliases, resolve

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers")

# A suite the tiny random model passes: whitespace is removed by clean_title before the model sees it.
EASY = "inv:\n  - {name: trailing spaces, perturbation: append, args: {text: '   '}, threshold: 1.0}\n"


def _train(home, corpora, *extra):
    cmd = [FAKENEWS, "train", "--no-notebook", "-q", "--home", str(home), "-p", "backbone", "tiny", "-p", "max_steps", "5",
           "-p", "batch_size", "8", "-p", "wandb", "false", "-p", "val_check_interval", "100",
           "-p", "corpora", ",".join(corpora), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_gate_refuses_a_failing_model_then_force_is_logged(tmp_path, sample_corpora):
    home = tmp_path / "home"
    paths = Paths.from_env(home)
    r = _train(home, sample_corpora, "-p", "run_name", "fail", "--alias", "production", "--alias", "candidate")
    # The random tiny model fails the packaged suite: the version is registered, the gated alias is refused.
    assert r.returncode == 2, r.stderr[-3000:]
    assert "fakenews:v1 cannot become 'production': it fails the behavioural gate" in r.stderr
    assert "(inv): pass rate" in r.stderr or "(mft): pass rate" in r.stderr  # the failures are listed
    meta = resolve("v1", paths).meta
    assert meta["behavioural"]["passed"] is False and meta["behavioural"]["failures"]
    assert {r["test"] for r in meta["behavioural"]["results"]} >= {"quotes: curly to straight", "held-out attribution: , Al Jazeera has learned"}
    aliases = read_aliases(paths=paths)
    assert "production" not in aliases and aliases["candidate"] == 1  # ungated aliases are given as before

    for args in (["registry", "promote", "v1", "production"], ["registry", "promote", "v1", "serving"]):
        r = subprocess.run([FAKENEWS, *args, "--home", str(home)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "fails the behavioural gate" in r.stderr, r.stderr
    assert "production" not in read_aliases(paths=paths) and promotions(paths=paths) == []

    r = subprocess.run([FAKENEWS, "registry", "promote", "v1", "production", "--force", "--home", str(home)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert read_aliases(paths=paths)["production"] == 1
    (logged,) = promotions(paths=paths)
    assert logged["alias"] == "production" and logged["version"] == 1 and logged["forced"] is True
    assert logged["failures"] == meta["behavioural"]["failures"]
    assert json.loads((home / "registry" / "fakenews" / "promotions.jsonl").read_text().splitlines()[0]) == logged

    r = subprocess.run([FAKENEWS, "registry", "show", "v1", "--home", str(home)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["promotions"] == [logged]  # stdout is one JSON document; the summary goes to stderr
    assert "Behavioural suite**: FAILED" in r.stderr and "FORCED:" in r.stderr and "'production'" in r.stderr


def test_gate_accepts_a_model_that_passes_its_suite(tmp_path, sample_corpora):
    home = tmp_path / "home"
    paths = Paths.from_env(home)
    suite = tmp_path / "easy.yaml"
    suite.write_text(EASY)
    r = _train(home, sample_corpora, "-p", "run_name", "pass", "--alias", "production",
               "--set", f"train.behavioural_suite={suite}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fakenews:production -> v1" in r.stdout
    meta = resolve("production", paths).meta
    assert meta["behavioural"]["passed"] is True and meta["behavioural"]["suite"] == str(suite)
    (logged,) = promotions(paths=paths)
    assert logged["forced"] is False and logged["failures"] == []
    promote("v1", "serving", paths)  # the Python API applies the same gate: passing, so no force needed


def test_train_with_force_gives_the_alias_and_logs_it(tmp_path, sample_corpora):
    home = tmp_path / "home"
    paths = Paths.from_env(home)
    r = _train(home, sample_corpora, "-p", "run_name", "forced", "--alias", "production", "--force")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "forced past the behavioural gate" in r.stdout
    assert read_aliases(paths=paths)["production"] == 1
    assert promotions(paths=paths)[0]["forced"] is True
    with pytest.raises(GateError, match="cannot become 'serving'"):
        promote("v1", "serving", paths)  # force is per promotion
