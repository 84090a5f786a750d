"The container images: no Docker engine runs here, so the Dockerfiles are linted (hadolint) and their promises checked."
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HADOLINT = Path(sys.executable).with_name("hadolint")


@pytest.mark.parametrize("name", ["serve", "train"])
def test_dockerfile_lints_clean(name):
    r = subprocess.run([str(HADOLINT), str(ROOT / "docker" / f"{name}.Dockerfile")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_serve_image_is_cpu_slim_non_root_with_a_health_check():
    text = (ROOT / "docker" / "serve.Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text and "download.pytorch.org/whl/cpu" in text
    assert "\nUSER 10001" in text and "HEALTHCHECK" in text and "/health" in text
    assert 'ENTRYPOINT ["fakenews", "serve", "--host", "0.0.0.0", "--port", "7860"]' in text
    assert "ARG REGISTRY=docker/registry" in text and (ROOT / "docker" / "registry").is_dir()


def test_train_image_is_cuda_and_runs_the_training_notebook():
    text = (ROOT / "docker" / "train.Dockerfile").read_text()
    assert "FROM nvidia/cuda:" in text and "whl/cu128" in text
    assert "COPY nbs/experiments ./nbs/experiments" in text and 'ENTRYPOINT ["fakenews", "train"]' in text
    assert (ROOT / "nbs" / "experiments" / "train.ipynb").is_file()
