"The container images, read: Dockerfiles linted (hadolint), the build script linted (shellcheck), their promises checked. Built and run: tests/test_images.py."
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HADOLINT = Path(sys.executable).with_name("hadolint")
SHELLCHECK = Path(sys.executable).with_name("shellcheck")


@pytest.mark.parametrize("name", ["serve", "train"])
def test_dockerfile_lints_clean(name):
    r = subprocess.run([str(HADOLINT), str(ROOT / "docker" / f"{name}.Dockerfile")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_build_script_lints_clean():
    r = subprocess.run([str(SHELLCHECK), str(ROOT / "docker" / "build.sh")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", ["serve", "train"])
def test_base_and_torch_index_are_build_arguments_and_pip_settings_only_build_secrets(name):
    "The same file builds from the official base elsewhere and from a local one here; nothing of the build machine stays."
    text = (ROOT / "docker" / f"{name}.Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+\n", text, re.M) and text.rstrip().count("\nFROM ${BASE_IMAGE}") >= 1
    assert re.search(r'^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/\w+$', text, re.M)
    for step in re.findall(r"^RUN .*?(?<!\\)$", text, re.M | re.S):
        if "pip install" in step:  # every pip call sees the build machine's settings, as secrets only
            assert "--mount=type=secret,id=pip.conf,target=/etc/pip.conf" in step and "--mount=type=secret,id=pip-cert" in step, step
    assert "COPY --chown" not in text and "ADD " not in text


def test_serve_image_is_cpu_slim_non_root_with_a_read_only_registry():
    text = (ROOT / "docker" / "serve.Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text and "download.pytorch.org/whl/cpu" in text
    assert "torch.version.cuda" in text  # the build fails on a CUDA torch
    assert "['optional-dependencies']['serve']" in text and "['train']" not in text
    assert "\nUSER 10001" in text and "HEALTHCHECK" in text and "/health" in text
    # The registry is copied root-owned (read-only to uid 10001); the app writes only to /data.
    assert "ARG REGISTRY=docker/registry" in text and (ROOT / "docker" / "registry").is_dir()
    assert "RUN chmod -R a+rX,go-w /registry" in text and "COPY --from=registry /registry /models/registry" in text
    assert "chown app:app /data" in text and "chown app:app /models" not in text and "\nVOLUME" not in text
    assert ('ENTRYPOINT ["fakenews", "serve", "--host", "0.0.0.0", "--port", "7860", '
            '"--set", "serve.db_url=sqlite:////data/predictions.db"]') in text


def test_train_image_is_cuda_by_default_and_runs_the_training_notebook():
    text = (ROOT / "docker" / "train.Dockerfile").read_text()
    assert "ARG BASE_IMAGE=nvidia/cuda:" in text and "whl/cu128" in text
    assert "COPY nbs/experiments ./nbs/experiments" in text and "FAKENEWS_EXPERIMENT_NOTEBOOK=/app/nbs/experiments/train.ipynb" in text
    assert 'ENTRYPOINT ["fakenews", "train"]' in text and "\nUSER 10001" in text
    assert (ROOT / "nbs" / "experiments" / "train.ipynb").is_file()
