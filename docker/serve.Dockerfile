# syntax=docker/dockerfile:1
# CPU serving image: the REST API, the web app and /metrics on port 7860, as a non-root user (uid 10001).
# `make images` (docker/build.sh) builds it with Docker or, without a Docker engine, with buildah. By hand:
#   docker build -f docker/serve.Dockerfile -t fakenews-serve .
# The model is read from /models/registry, root-owned and read-only to the app; everything the app writes (the
# prediction log /data/predictions.db, caches, temporary files) goes to the /data volume:
#   docker run -p 7860:7860 -v "$PWD/artifacts/registry:/models/registry:ro" -v fakenews-data:/data fakenews-serve
# Model baked in (the whole registry folder, aliases included):
#   docker build -f docker/serve.Dockerfile --build-arg REGISTRY=artifacts/registry -t fakenews-serve:baked .
# Another model or setting: append CLI options, e.g. `... fakenews-serve --model fakenews:v3 --set serve.max_titles=64`;
# for several replicas sharing one log, `--set serve.db_url=postgresql+psycopg://...`.
# BASE_IMAGE: any Debian-like image with Python 3.11 and its venv module (the build script passes a local
# debootstrap-made Debian bookworm where the official image cannot be pulled).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# The registry to bake in (the placeholder docker/registry by default), readable by all and writable by none but
# root whatever its modes on the build machine (a registration leaves owner-only folders).
FROM ${BASE_IMAGE} AS registry
ARG REGISTRY=docker/registry
COPY ${REGISTRY} /registry
RUN chmod -R a+rX,go-w /registry

FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_OFFLINE=1 \
    FAKENEWS_HOME=/models \
    GRADIO_TEMP_DIR=/data/tmp/gradio \
    XDG_CACHE_HOME=/data/cache \
    HF_HOME=/data/cache/huggingface \
    MPLCONFIGDIR=/data/cache/matplotlib

# /models (and the registry in it) stays root's. /data belongs to the app user and, like /tmp, takes files from
# whatever uid a platform runs the image as (Hugging Face Spaces use 1000, OpenShift an arbitrary one).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && python3 -m venv /opt/venv \
    && mkdir -p /models/registry /data \
    && chown app:app /data && chmod 1777 /data

# pip settings of the build machine (a CA bundle, local wheel folders) arrive as build secrets, only while pip runs.
# The CPU build of torch first, from PyTorch's CPU index (TORCH_INDEX_URL), so that nothing pulls a CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert,target=/run/secrets/pip-cert \
    pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
    && python -c "import sys, torch; sys.exit(f'torch {torch.__version__} is a CUDA build: the serving image is CPU only' if torch.version.cuda else 0)"

# The pinned dependencies of the package and its serve extra (read from pyproject.toml), then the package itself:
# a code change rebuilds only the last layer.
COPY pyproject.toml README.md /tmp/src/
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert,target=/run/secrets/pip-cert \
    python -c "import tomllib; p = tomllib.load(open('/tmp/src/pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *p['optional-dependencies']['serve'], sep='\n')" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY fakenews /tmp/src/fakenews
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert,target=/run/secrets/pip-cert \
    pip install --no-cache-dir --no-deps /tmp/src \
    && pip check \
    && rm -rf /tmp/src

COPY --from=registry /registry /models/registry
# No VOLUME: mount /data (and the registry) explicitly. An anonymous volume keeps the log nowhere anyone looks, and
# buildah 1.28 lets an image volume shadow a lone `-v HOST:/data`.

USER 10001:10001
WORKDIR /data
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/health', timeout=4)"]
# SIGTERM (docker stop) drains the prediction log before the process exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["fakenews", "serve", "--host", "0.0.0.0", "--port", "7860", "--set", "serve.db_url=sqlite:////data/predictions.db"]
CMD []
