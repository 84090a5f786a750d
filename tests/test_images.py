"""The container images, built and run: Docker where an engine answers, buildah otherwise (`docker/build.sh`).
Slow (image builds), so kept out of the default suite: `make test-images` (`pytest -m images tests/test_images.py`)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from conftest import tiny_config

from fakenews.predlog import read_predictions

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "docker" / "build.sh"
APP_UID = 10001  # the images' non-root user
pytestmark = [pytest.mark.images, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module", autouse=True)
def asked_for(request):
    "Builds take minutes: these tests run only when asked for by marker."
    if "images" not in (request.config.option.markexpr or ""):
        pytest.skip("builds and runs the container images (minutes): `make test-images` (pytest -m images)")


def docker_answers() -> bool:
    return bool(shutil.which("docker")) and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


class Engine:
    "Builds an image with docker/build.sh and runs it the way its engine does: `docker run`, or `buildah run`."
    def __init__(self):
        self.docker = docker_answers()
        self.buildah = [str(BUILD), "buildah"]  # buildah with the build script's image storage

    def build(self, name: str, tag: str = "latest", **env) -> str:
        r = subprocess.run([str(BUILD), name], capture_output=True, text=True, timeout=3600, env=os.environ | env | {"TAG": tag})
        assert r.returncode == 0, r.stderr[-5000:]
        return f"fakenews-{name}:{tag}"

    def output(self, image: str, *cmd: str, user: str | None = None) -> subprocess.CompletedProcess:
        "Run `cmd` (not the entry point) in a fresh container of `image`, as the image's user or `user`."
        as_user = ["--user", user] if user else []
        if self.docker: return subprocess.run(["docker", "run", "--rm", *as_user, "--entrypoint", cmd[0], image, *cmd[1:]], capture_output=True, text=True, timeout=300)
        ctr = self._container(image)
        try: return subprocess.run([*self.buildah, "run", "--isolation", "chroot", *as_user, ctr, "--", *cmd], capture_output=True, text=True, timeout=300)
        finally: self._remove(ctr)

    def start(self, image: str, args: list[str], mounts: list[tuple[Path, str, bool]], port: int | None = None, log=None):
        "(process, container) running the image's entry point with `args`; `mounts` are (host, target, read_only)."
        volumes = [a for host, target, ro in mounts for a in ("-v", f"{host}:{target}" + (":ro" if ro else ""))]
        if self.docker:
            name = f"fakenews-test-{uuid.uuid4().hex[:8]}"
            ports = ["-p", f"127.0.0.1:{port}:7860"] if port else []
            return subprocess.Popen(["docker", "run", "--rm", "--name", name, *ports, *volumes, image, *args], stdout=log, stderr=subprocess.STDOUT), name
        ctr = self._container(image)
        entrypoint = json.loads(subprocess.check_output([*self.buildah, "inspect", "--type", "image", image]))["OCIv1"]["config"]["Entrypoint"]
        args = [*args, "--port", str(port)] if port else args  # buildah run shares the host's network: a free port
        return subprocess.Popen([*self.buildah, "run", "--isolation", "chroot", *volumes, ctr, "--", *entrypoint, *args],
                                stdout=log, stderr=subprocess.STDOUT), ctr

    def stop(self, proc: subprocess.Popen, ctr: str, timeout: float = 120) -> int:
        "SIGTERM to the app (what `docker stop` sends), then wait for it to exit; its exit status."
        if self.docker: subprocess.run(["docker", "stop", "-t", str(int(timeout)), ctr], capture_output=True)
        else:  # `buildah run` kills its child on SIGTERM; the app runs in the host's PID namespace: signal it directly
            app = next((p for p in _descendants(proc.pid) if not _comm(p).startswith("buildah")), None)
            if app: os.kill(app, signal.SIGTERM)
        try: return proc.wait(timeout)
        finally:
            if not self.docker: self._remove(ctr)

    def _container(self, image: str) -> str:
        return subprocess.check_output([*self.buildah, "from", "--pull-never", "--quiet", image], text=True).strip()

    def _remove(self, ctr: str) -> None:
        subprocess.run([*self.buildah, "rm", ctr], capture_output=True)


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try: children = [int(c) for c in (task / "children").read_text().split()]
        except OSError: continue
        for child in children: found += [child, *_descendants(child)]
    return found


def _comm(pid: int) -> str:
    try: return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError: return ""


@pytest.fixture(scope="module")
def engine() -> Engine:
    if not docker_answers() and not shutil.which("buildah") and os.getuid() != 0:
        pytest.skip("neither a Docker engine nor buildah (and not root, so build.sh cannot install buildah)")
    return Engine()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _writable_by_app(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True); os.chown(folder, APP_UID, APP_UID)
    return folder


@pytest.fixture(scope="module")
def registry(tmp_path_factory, sample_corpora) -> Path:
    "A registry folder holding a tiny model trained here (fakenews:v1), owned by root: read-only to the app user."
    from fakenews.train import train
    home = tmp_path_factory.mktemp("image_home")
    train(tiny_config(home, sample_corpora), progress=False)
    # A registration leaves owner-only version folders (0700, from its staging mkdtemp): a folder mounted into the
    # container must be readable by uid 10001, as the README tells (the baked image fixes the modes itself).
    subprocess.run(["chmod", "-R", "a+rX", str(home / "registry")], check=True)
    return home / "registry"


def wait_ready(url: str, proc: subprocess.Popen, log: Path, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if requests.get(f"{url}/ready", timeout=2).status_code == 200: return
        except requests.ConnectionError: pass
        assert time.monotonic() < deadline, "the container did not get ready: " + log.read_text()[-3000:]
        time.sleep(0.5)


def test_serve_image_answers_rest_and_gradio_and_logs_every_prediction_at_sigterm(engine, registry, tmp_path):
    image = engine.build("serve")
    # Small: no CUDA and no training stack, as root-owned registry folder the app user cannot write.
    r = engine.output(image, "python", "-c", "import importlib.util as u, os, torch; print(torch.version.cuda, "
                      "[m for m in ('lightning', 'papermill', 'wandb', 'sklearn', 'evidently') if u.find_spec(m)], os.getuid(), "
                      "os.stat('/models/registry').st_uid, os.access('/models/registry', os.W_OK))")
    assert r.returncode == 0 and r.stdout.split() == ["None", "[]", str(APP_UID), "0", "False"], r.stdout + r.stderr
    # Platforms that pick the uid themselves (Hugging Face Spaces: 1000) can still write the log folder.
    r = engine.output(image, "python", "-c", "open('/data/probe', 'w').write('x')", user="1000:1000")
    assert r.returncode == 0, r.stderr

    before = sorted((str(p), p.stat().st_mtime_ns) for p in registry.rglob("*"))
    data = _writable_by_app(tmp_path / "data")
    port, log = _free_port(), open(tmp_path / "serve.log", "w+")
    proc, ctr = engine.start(image, ["--model", "fakenews:v1"], [(registry, "/models/registry", True), (data, "/data", False)], port, log)
    url = f"http://127.0.0.1:{port}"
    titles = [f"headline {i} about the senate" for i in range(120)]
    try:
        wait_ready(url, proc, tmp_path / "serve.log")
        assert requests.get(f"{url}/ready", timeout=5).json() == {"status": "ready", "model": "fakenews:v1"}
        for i in range(0, 120, 40):
            body = requests.post(f"{url}/predict", json={"titles": titles[i:i + 40]}, timeout=60).json()
            assert len(body["predictions"]) == 40 and {p["label"] for p in body["predictions"]} <= {"fake", "real", "uncertain"}
        from gradio_client import Client
        ui = ["Senate passes the budget after a long night", "Aliens endorse a presidential candidate"]
        for title in ui:
            label, verdict, _ = Client(url, verbose=False).predict(title, api_name="/classify")
            assert label["label"] in ("fake", "real") and verdict
    finally:
        status = engine.stop(proc, ctr)
    out = (tmp_path / "serve.log").read_text()
    rows = read_predictions(f"sqlite:///{data / 'predictions.db'}")
    assert sorted(rows.title) == sorted(titles + ui), out[-3000:]
    # uvicorn shuts down gracefully, then re-raises SIGTERM (docker reports 143, buildah 1); no traceback.
    assert status in (0, 1, 143) and "Traceback" not in out, out[-3000:]
    assert set(rows.source) == {"api", "ui"} and set(rows.model_version) == {"fakenews:v1"}
    assert (data / "predictions.db").stat().st_uid == APP_UID  # written by the app user, in the writable folder
    assert sorted((str(p), p.stat().st_mtime_ns) for p in registry.rglob("*")) == before  # the registry untouched


def test_serve_image_with_the_registry_baked_in_cannot_change_it(engine, registry, tmp_path):
    "A registry baked in with REGISTRY=... is root's: the app reads it, uid 10001 cannot write into it."
    baked = ROOT / "build" / "images-registry"  # inside the build context (build/ is git-ignored)
    shutil.rmtree(baked, ignore_errors=True); shutil.copytree(registry, baked)
    subprocess.run(["chmod", "-R", "go-rwx", str(baked)], check=True)  # owner-only on the build machine: fixed in the image
    try: image = engine.build("serve", tag="baked", REGISTRY=str(baked.relative_to(ROOT)))
    finally: shutil.rmtree(baked, ignore_errors=True)
    r = engine.output(image, "python", "-c", "import os; from pathlib import Path; v = Path('/models/registry/fakenews/v1'); "
                      "print(all(p.stat().st_uid == 0 for p in v.rglob('*')), os.access(v / 'model.safetensors', os.R_OK), "
                      "os.access(v, os.W_OK), os.access(v / 'model.safetensors', os.W_OK))")
    assert r.stdout.split() == ["True", "True", "False", "False"], r.stdout + r.stderr
    data = _writable_by_app(tmp_path / "data")
    port, log = _free_port(), open(tmp_path / "serve.log", "w+")
    proc, ctr = engine.start(image, ["--model", "fakenews:v1"], [(data, "/data", False)], port, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, tmp_path / "serve.log")
        assert requests.post(f"http://127.0.0.1:{port}/predict", json={"titles": "Senate passes the budget"}, timeout=60).status_code == 200
    finally: engine.stop(proc, ctr)
    assert "Traceback" not in (tmp_path / "serve.log").read_text(), (tmp_path / "serve.log").read_text()[-3000:]
    assert list(read_predictions(f"sqlite:///{data / 'predictions.db'}").title) == ["Senate passes the budget"]


def test_train_image_runs_a_papermill_training_run_that_registers_a_version(engine, sample_corpora, tmp_path):
    image = engine.build("train")
    corpora = tmp_path / "corpora"; corpora.mkdir()
    for f in sample_corpora: shutil.copy(f, corpora)
    artifacts = _writable_by_app(tmp_path / "artifacts")
    inside = ",".join(f"/corpora/{Path(f).name}" for f in sample_corpora)
    args = ["-q", "-p", "backbone", "tiny", "-p", "max_steps", "10", "-p", "batch_size", "16", "-p", "val_check_interval", "5",
            "-p", "run_name", "image", "-p", "corpora", inside, "--set", "train.lr=0.001"]
    log = open(tmp_path / "train.log", "w+")
    proc, ctr = engine.start(image, args, [(corpora, "/corpora", True), (artifacts, "/artifacts", False)], log=log)
    try: status = proc.wait(1800)
    finally:
        if proc.poll() is None: engine.stop(proc, ctr)
        elif not engine.docker: engine._remove(ctr)
    out = (tmp_path / "train.log").read_text()
    assert status == 0, out[-5000:]
    run = artifacts / "runs" / "image"
    assert json.loads((run / "metrics.json").read_text())["registered"] == "fakenews:v1"
    record = json.loads((run / "run.ipynb").read_text())
    assert not any(o.get("output_type") == "error" for c in record["cells"] for o in c.get("outputs", []))
    version = artifacts / "registry" / "fakenews" / "v1"
    assert (version / "fakenews.json").is_file() and version.stat().st_uid == APP_UID
    # The version the image registered loads and predicts here.
    from fakenews.predict import Predictor
    predictor = Predictor.load(str(version))
    assert len(predictor.predict(["Senate passes the budget"])) == 1
