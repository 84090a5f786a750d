# CPU serving image: the REST API, the web app and /metrics on port 7860, as a non-root user.
#
# Model mounted at run time (the image carries no model):
#   docker build -f docker/serve.Dockerfile -t fakenews-serve .
#   docker run -p 7860:7860 -v "$PWD/artifacts/registry:/models/registry:ro" fakenews-serve
# Model baked in (the whole registry folder, aliases included):
#   docker build -f docker/serve.Dockerfile --build-arg REGISTRY=artifacts/registry -t fakenews-serve:baked .
# Another model or setting: append CLI options, e.g. `... fakenews-serve --model fakenews:v3 --set serve.max_titles=64`.
# The prediction log goes to /models/predictions.db (a volume); for several replicas pass
# `--set serve.db_url=postgresql+psycopg://...` and install psycopg.
FROM python:3.11-slim-bookworm

ARG REGISTRY=docker/registry
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_OFFLINE=1 \
    FAKENEWS_HOME=/models

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app
WORKDIR /app

# The CPU build of torch first, from PyTorch's CPU index, so that the serve extra never pulls a CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY fakenews ./fakenews
# Every dependency of the serve extra is pinned in pyproject.toml; "." is this project.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[serve]"

COPY --chown=app:app ${REGISTRY} /models/registry
RUN chown app:app /models
VOLUME ["/models"]

USER 10001:10001
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/health', timeout=4)"]
ENTRYPOINT ["fakenews", "serve", "--host", "0.0.0.0", "--port", "7860"]
CMD []
