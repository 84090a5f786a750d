"The model on the Hub, offline: a push laid out in a folder as the Hub would get it, and loads from a pre-filled Hugging Face cache."
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
from conftest import FAKENEWS, fill_hub_cache, tiny_config

from fakenews.core import ModelError
from fakenews.predict import Predictor

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
REPO = "fakenews-dev/tiny-headlines"
TITLES = ["Senate passes the budget after a long night", "SHOCKING: you won't believe what this senator did",
          "Pope endorses candidate", "Stocks close higher on Friday"]


@pytest.fixture(scope="module")
def family(tmp_path_factory, sample_corpora):
    "A tiny teacher, its three variants, its evaluation, and the folder `registry push --to-folder` writes for it."
    from fakenews.compress import make_variants
    from fakenews.report import evaluate_model
    from fakenews.train import train
    cfg = tiny_config(tmp_path_factory.mktemp("hub") / "home", sample_corpora, max_steps=80, lr=3e-3, val_check_interval=40)
    teacher = train(cfg, progress=False).version
    variants = {v.meta["variant"]["method"]: v for v in make_variants(teacher.ref, paths=cfg.paths)}
    evaluate_model(teacher.ref, cfg, behavioural=False)
    pushed = tmp_path_factory.mktemp("pushed") / "repo"
    r = subprocess.run([FAKENEWS, "registry", "push", teacher.ref, "--repo", REPO, "--to-folder", str(pushed),
                        "--home", str(cfg.paths.home)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"what {REPO} would hold" in r.stdout
    return cfg, teacher, variants, pushed


def test_the_pushed_folder_is_the_hub_layout(family):
    from huggingface_hub import ModelCard
    cfg, teacher, variants, pushed = family
    files = {p.relative_to(pushed).as_posix() for p in pushed.rglob("*") if p.is_file()}
    assert files == {"README.md", "fakenews.json", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "calibration.json", "onnx/model.onnx", "onnx/model_quantized.onnx"}
    meta = json.loads((pushed / "fakenews.json").read_text())
    assert set(meta["files"]) == files - {"README.md", "fakenews.json"}
    assert meta["source"] == teacher.ref and meta["format"] == "transformers"
    # what was registered is what is published, byte for byte
    for name in ("model.safetensors", "calibration.json", "tokenizer.json"):
        assert (pushed / name).read_bytes() == (teacher.path / name).read_bytes()
    assert (pushed / "onnx/model_quantized.onnx").read_bytes() == (variants["onnx-int8"].path / "model.onnx").read_bytes()
    assert set(meta["variants"]) == {"onnx", "onnx-int8"}  # torch-int8 stays home: ONNX is the portable format
    int8 = meta["variants"]["onnx-int8"]
    assert int8["registered_as"] == variants["onnx-int8"].ref and int8["model_file"] == "onnx/model_quantized.onnx"
    assert int8["calibration"] == json.loads((variants["onnx-int8"].path / "calibration.json").read_text())
    assert "test/agreement" in int8["metrics"]
    # no path of the training machine leaves it
    for name in ("fakenews.json", "README.md"):
        text = (pushed / name).read_text()
        assert str(cfg.paths.home) not in text and "/tmp/" not in text, name
    card = ModelCard((pushed / "README.md").read_text())
    assert (card.data.license, card.data.library_name, card.data.pipeline_tag) == ("apache-2.0", "transformers", "text-classification")
    assert card.data.datasets == ["isot_sample", "fakenewsnet_sample"]
    results = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert {("isot_sample+fakenewsnet_sample", "f1"), ("isot_sample", "f1"), ("fakenewsnet_sample", "f1"), ("liar", "f1")} <= set(results)
    report = json.loads(next((cfg.paths.reports / "evaluation").glob("*/report.json")).read_text())
    model_all = next(r for r in report["scores"]["test"] if r["system"] == "model" and r["group"] == "all")
    assert results[("isot_sample+fakenewsnet_sample", "f1")] == round(model_all["macro_f1"], 4)
    assert f'Predictor.load("hf:{REPO}")' in card.text and "## ONNX variants" in card.text


def test_pipeline_loads_the_pushed_teacher(family):
    from transformers import pipeline
    _, teacher, _, pushed = family
    classify = pipeline("text-classification", model=str(pushed), top_k=None, device="cpu")
    got = [next(s["score"] for s in scores if s["label"] == "fake") for scores in classify(TITLES)]
    expected = Predictor.load(str(teacher.path), calibrated=False).predict_proba(TITLES)
    assert np.allclose(got, expected, atol=1e-5)


def test_dry_run_lists_and_a_real_push_offline_is_one_clear_line(family, tmp_path):
    cfg, teacher, _, pushed = family
    home = str(cfg.paths.home)
    r = subprocess.run([FAKENEWS, "registry", "push", teacher.ref, "--repo", REPO, "--dry-run", "--home", home],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| onnx/model_quantized.onnx" in r.stdout and "nothing uploaded" in r.stdout
    for args, message in ((["--to-folder", str(pushed)], "is not empty"),  # never writes into a folder that has files
                          ([], "offline mode is enabled"),  # HF_HUB_OFFLINE=1: the upload is refused before any request
                          (["--revision", "../main"], "revision '../main'"),
                          (["--dry-run"], None)):
        ref = teacher.ref if args != ["--dry-run"] else next(v.ref for v in family[2].values())
        r = subprocess.run([FAKENEWS, "registry", "push", ref, "--repo", REPO, *args, "--home", home],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("fakenews: error:"), (args, r.stderr)
        assert (message or "push its source") in r.stderr, r.stderr


@pytest.fixture(scope="module")
def hub_cache(family, tmp_path_factory):
    "A Hugging Face cache that holds the pushed repository, as one `snapshot_download` would have left it."
    cache = tmp_path_factory.mktemp("hf-cache")
    return cache, fill_hub_cache(family[3], REPO, cache)


def _offline(cache) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}


def test_predictor_loads_hf_references_offline_from_the_cache(family, hub_cache):
    cfg, teacher, variants, _ = family
    cache, commit = hub_cache
    code = ("import json, sys; from fakenews.predict import Predictor; p = Predictor.load(sys.argv[1]); "
            "print(json.dumps({'name': p.name, 'temperature': p.temperature, 'prob': p.predict_proba(sys.argv[2:]).tolist()}))")
    expected = {ref: Predictor.load(v.ref, cfg.paths) for ref, v in
                ((f"hf:{REPO}", teacher), (f"hf:{REPO}@{commit}", teacher), (f"hf:{REPO}@main:onnx", variants["onnx"]),
                 (f"hf:{REPO}:onnx-int8", variants["onnx-int8"]))}
    for ref, local in expected.items():
        r = subprocess.run([sys.executable, "-c", code, ref, *TITLES], capture_output=True, text=True, timeout=300, env=_offline(cache))
        assert r.returncode == 0, r.stderr[-3000:]
        got = json.loads(r.stdout.strip().splitlines()[-1])
        assert got["name"].startswith(f"hf:{REPO}@{commit}")  # the commit, wherever the reference pointed
        assert got["temperature"] == local.temperature  # each variant with its own registered calibration
        assert got["prob"] == local.predict_proba(TITLES).tolist(), ref  # the very probabilities the registry serves
    r = subprocess.run([FAKENEWS, "registry", "show", f"hf:{REPO}:onnx-int8"], capture_output=True, text=True, timeout=300,
                       env=_offline(cache))
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["ref"] == f"hf:{REPO}@{commit}:onnx-int8" and shown["format"] == "onnx"


def test_a_changed_or_planted_file_in_the_cache_is_refused(family, hub_cache, tmp_path, monkeypatch):
    cache, commit = hub_cache
    own = tmp_path / "cache"
    shutil.copytree(cache, own, symlinks=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(own))  # read at each load: no need to reimport huggingface_hub
    snapshot = own / ("models--" + REPO.replace("/", "--")) / "snapshots" / commit
    Predictor.load(f"hf:{REPO}")  # .gitattributes, added by the Hub, is not a problem
    (snapshot / "pytorch_model.bin").write_bytes(b"a pickle, say")
    with pytest.raises(ModelError, match="'pytorch_model.bin' was not written at registration"):
        Predictor.load(f"hf:{REPO}")
    (snapshot / "pytorch_model.bin").unlink()
    blob = (snapshot / "onnx" / "model.onnx").resolve()
    blob.write_bytes(blob.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="'onnx/model.onnx' differs from its registered sha256"):
        Predictor.load(f"hf:{REPO}:onnx")
    for ref in (f"hf:{REPO}", f"hf:{REPO}:onnx-int8"):  # the record covers the whole repository: one changed file refuses it all
        with pytest.raises(ModelError, match="differs"):
            Predictor.load(ref)


@pytest.mark.parametrize("ref, message", [
    (f"hf:{REPO}@../../../../etc", "revision"), (f"hf:{REPO}@main/../../x", "revision"),
    ("hf:../../etc/passwd", "Hub repository"), ("hf:owner/name/extra", "Hub repository"),
    (f"hf:{REPO}:torch-int8", "unknown variant"), (f"hf:{REPO}\x00", "control character"),
])
def test_hub_references_are_checked_before_any_path_is_built(ref, message, hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache[0]))
    with pytest.raises(ValueError, match=message):
        Predictor.load(ref)


def test_a_model_missing_from_the_cache_is_one_clear_line(tmp_path):
    r = subprocess.run([FAKENEWS, "registry", "show", "hf:nobody/nothing"], capture_output=True, text=True, timeout=300,
                       env=_offline(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("fakenews: error: cannot fetch nobody/nothing from the Hugging Face Hub or its local cache")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_fakenews_serve_serves_an_hf_reference(family, hub_cache, tmp_path):
    "`fakenews serve --model hf:OWNER/NAME:onnx-int8` as a Space would start it: offline, from the cache, no registry."
    cfg, _, variants, _ = family
    cache, commit = hub_cache
    port = _free_port()
    proc = subprocess.Popen([FAKENEWS, "serve", "--model", f"hf:{REPO}:onnx-int8", "--home", str(tmp_path / "empty"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_offline(cache))
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                ready = requests.get(f"{url}/ready", timeout=2)
                if ready.status_code == 200: break
            except requests.ConnectionError: pass
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.2)
        assert ready.json()["model"] == f"hf:{REPO}@{commit}:onnx-int8"
        answer = requests.post(f"{url}/predict", json={"titles": TITLES}, timeout=30)
        assert answer.status_code == 200, answer.text
        got = [p["prob_fake"] for p in answer.json()["predictions"]]
        assert np.allclose(got, Predictor.load(variants["onnx-int8"].ref, cfg.paths).predict_proba(TITLES), atol=1e-6)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
