"""The Space bundle run as Hugging Face runs it: a fresh venv from its requirements.txt alone, `python app.py` in its folder.
Minutes (the installs), so kept out of the default suite: `make test-space` (`pytest -m space tests/test_space.py`)."""
import logging
import os
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import requests

pytestmark = [pytest.mark.space, pytest.mark.timeout(2400),
              pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")]

TITLES = ["Senate passes the budget after a long night", "SHOCKING: you won\u2019t believe what they found \u2014 Daily Buzz"]


@pytest.fixture(scope="module", autouse=True)
def _only_when_asked(request):
    if "space" not in (request.config.option.markexpr or ""):
        pytest.skip("installs a fresh venv from the Space bundle's requirements (minutes): `make test-space` (pytest -m space)")


@pytest.fixture(scope="module")
def onnx_home(tmp_path_factory):
    "A registry holding a tiny random model and its int8 ONNX variant, the variant under the `serving` alias."
    from fakenews.compress import export_onnx, quantize_onnx
    from fakenews.core import ModelConfig, Paths
    from fakenews.model import build_classifier, load_tokenizer
    from fakenews.core import quiet_libraries
    from fakenews.registry import register
    paths = Paths.from_env(tmp_path_factory.mktemp("space") / "home")
    model, tokenizer = build_classifier(ModelConfig(backbone="tiny")).eval(), load_tokenizer("tiny")
    tmp = tmp_path_factory.mktemp("onnx")
    with quiet_libraries(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        teacher = register(model, tokenizer, {}, paths=paths)
        exported = quantize_onnx(export_onnx(model, tokenizer, tmp / "model.onnx"), tmp / "int8.onnx")
        register(exported, tokenizer, {"format": "onnx", "variant": {"method": "onnx-int8", "source": teacher.ref}},
                 paths=paths, aliases=("serving",), force=True)
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spaces_env(**extra) -> dict:
    "This machine's environment (pip's index settings included) without what points at the checkout or its artifacts."
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "FAKENEWS_HOME", "FAKENEWS_MODEL", "HF_HUB_OFFLINE", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in drop} | extra


def test_bundle_serves_from_a_fresh_venv_of_its_requirements(onnx_home, tmp_path):
    from gradio_client import Client
    from fakenews.predict import Predictor
    from fakenews.predlog import read_predictions
    from fakenews.space import build_space, push_plan
    bundle = tmp_path / "space"
    manifest = build_space(bundle, "serving", onnx_home)
    venv, timings = tmp_path / "venv", {}
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    # pip as the project's own `make install` runs it (the machine's pip configuration: index, find-links, constraints);
    # no retries, so an index this machine cannot reach (PyTorch's, when torch is needed) costs seconds, not minutes
    r = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", "requirements.txt"],
                       cwd=bundle, env=_spaces_env(PIP_RETRIES="0"), capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    timings["venv + pip install s"] = round(time.monotonic() - start, 1)
    timings["venv MB"] = round(sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6)
    # fakenews is not installed in that venv: the Space imports the copy beside app.py
    outside = subprocess.run([python, "-c", "import fakenews"], cwd=tmp_path, env=_spaces_env(), capture_output=True, text=True)
    assert outside.returncode != 0 and "No module named 'fakenews'" in outside.stderr
    torch_installed = subprocess.run([python, "-c", "import torch"], env=_spaces_env(), capture_output=True).returncode == 0
    assert torch_installed == manifest["torch"]

    port = _free_port()  # Spaces set GRADIO_SERVER_NAME=0.0.0.0; the test listens on loopback only
    env = _spaces_env(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    url, log = f"http://127.0.0.1:{port}", open(tmp_path / "app.log", "w")
    start = time.monotonic()
    app = subprocess.Popen([python, "app.py"], cwd=bundle, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            assert app.poll() is None, f"app.py exited with {app.returncode}: " + (tmp_path / "app.log").read_text()[-3000:]
            assert time.monotonic() - start < 300, "not ready after 300 s: " + (tmp_path / "app.log").read_text()[-3000:]
            try:
                ready = requests.get(f"{url}/ready", timeout=5)
                if ready.status_code == 200: break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        timings["app.py to /ready s"] = round(time.monotonic() - start, 1)
        model_dir = bundle / manifest["model"]["path"]
        assert ready.json()["model"] == str(model_dir)  # the bundled copy answers, named after its version

        r = requests.post(f"{url}/predict", json={"titles": TITLES}, timeout=30)
        assert r.status_code == 200, r.text
        served = np.array([p["prob_fake"] for p in r.json()["predictions"]])
        expected = Predictor.load(str(onnx_home.registry / "fakenews" / "v2"), onnx_home).predict_proba(TITLES)
        np.testing.assert_allclose(served, expected, atol=1e-5)  # the registered variant's probabilities, via the Space

        label, verdict, words = Client(url, verbose=False).predict(TITLES[0], api_name="/classify")
        assert {c["label"] for c in label["confidences"]} == {"fake", "real"}
        # alone, as the app scores it: dynamic int8 scales its activations per batch, so batch-mates move the last digits
        alone = Predictor.load(str(onnx_home.registry / "fakenews" / "v2"), onnx_home).predict_proba(TITLES[:1])[0]
        assert abs(next(c["confidence"] for c in label["confidences"] if c["label"] == "fake") - alone) < 1e-5
        assert "confident" in verdict or "uncertain" in verdict
        assert [w["token"] for w in words if w["token"].strip()][:2] == ["Senate", "passes"]  # the explanation, word by word
    finally:
        app.terminate()
        app.wait(timeout=60)
        log.close()
    print(f"\nSpace bundle {manifest['bytes'] / 1e6:.1f} MB, torch {manifest['torch']}: {timings}")

    logged = read_predictions(f"sqlite:///{bundle / 'artifacts' / 'predictions.db'}")
    assert sorted(logged.source) == ["api", "api", "ui"]
    plan = push_plan(bundle)  # what running it wrote never goes to the Hub
    assert "artifacts/predictions.db" in plan["left_out"] and not any(f.startswith("artifacts/") for f in plan["files"])
