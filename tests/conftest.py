import os
import sys
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fakenews.core import Paths

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    # Tests read the corpora from a local mirror, never the network: FAKENEWS_DATA_DIR, else ../shared/data.
    if not os.environ.get("FAKENEWS_DATA_DIR") and (ROOT.parent / "shared" / "data").is_dir():
        os.environ["FAKENEWS_DATA_DIR"] = str(ROOT.parent / "shared" / "data")
    # Models come from the packaged MiniLM or tiny random configs, never the Hugging Face hub; W&B stays offline.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    if not os.environ.get("FAKENEWS_DATA_DIR") or not Path(os.environ["FAKENEWS_DATA_DIR"]).is_dir():
        pytest.exit("set FAKENEWS_DATA_DIR to a mirror folder of the corpora (laid out like shared/data)", returncode=4)


@pytest.fixture
def mirror() -> Path:
    return Path(os.environ["FAKENEWS_DATA_DIR"])


@pytest.fixture
def home(tmp_path, monkeypatch) -> Paths:
    "A fresh artifact root, also exported as FAKENEWS_HOME for subprocesses."
    monkeypatch.setenv("FAKENEWS_HOME", str(tmp_path / "home"))
    return Paths.from_env()


def cache_leftovers(paths: Paths) -> list[str]:
    "Every file or folder under the raw cache: what a failed fetch must not leave."
    return sorted(str(p.relative_to(paths.raw)) for p in paths.raw.rglob("*")) if paths.raw.exists() else []


class Handler(SimpleHTTPRequestHandler):
    "Serves a folder; `fail_first` answers that many GETs with 503, `truncate` cuts bodies short."
    fail_first = 0
    truncate = False
    requests = 0

    def do_GET(self):
        type(self).requests += 1
        if type(self).requests <= type(self).fail_first:
            self.send_error(503, "try again")
            return
        if type(self).truncate:
            path = Path(self.translate_path(self.path))
            if path.is_file():
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True
                return
        super().do_GET()

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def serve():
    "serve(folder, **handler_attrs) -> (base URL on 127.0.0.1, handler class) for the test's duration."
    servers = []

    def start(folder: Path, **attrs):
        handler = type("TestHandler", (Handler,), {"requests": 0, **attrs})
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/", handler

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture
def mirror_copy(tmp_path, mirror) -> Path:
    "A writable copy of the mirror's ISOT and LIAR raw files, to corrupt."
    dest = tmp_path / "mirror"
    for sub in ("isot_titles/raw", "liar/raw"):
        shutil.copytree(mirror / sub, dest / sub)
    return dest


# The installed `fakenews` console script of this environment.
FAKENEWS = str(Path(sys.executable).with_name("fakenews"))


@pytest.fixture(scope="session")
def sample_corpora(tmp_path_factory) -> tuple[str, str]:
    "Two small labelled CSVs (400 ISOT and 400 FakeNewsNet titles, balanced) cut from the mirror, for quick training."
    from fakenews.train import sample_corpora
    return sample_corpora(tmp_path_factory.mktemp("corpora"))


def tiny_config(home, corpora, **train):
    "A `Config` that trains the tiny model on `corpora` in `home` in a few seconds."
    from fakenews.core import Config, DataConfig, ModelConfig, TrainConfig
    settings = dict(max_steps=20, batch_size=16, lr=1e-3, val_check_interval=10, wandb=False, run_name="tiny",
                    augment_attribution=0.0, loss_weights="none") | train  # plain steps: the tests' calibration checks hold
    return Config(data=DataConfig(corpora=tuple(corpora)), model=ModelConfig(backbone="tiny"),
                  train=TrainConfig(**settings), home=str(home))


def postgres_bin() -> Path | None:
    "The folder of Debian's PostgreSQL server binaries (initdb, pg_ctl), or None when the package is not installed."
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    "A SQLAlchemy URL of a fresh PostgreSQL server on a loopback port, stopped after the session."
    import getpass
    import socket
    import subprocess
    import tempfile
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package `postgresql`; .ci/run installs it)")
    # The server refuses to run as root: run it as the `postgres` user the Debian package creates.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="fakenews-pg-"))
    if as_user: shutil.chown(data, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    user = "postgres" if as_user else getpass.getuser()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)
    run(str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", user, "-A", "trust", "-E", "UTF8", "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "server.log"), "-w", "-t", "60", "start",
        "-o", f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c max_connections=200")
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "fakenews")
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/fakenews"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)


def fill_hub_cache(folder, repo_id: str, cache, revision: str = "main") -> str:
    """Lay `folder` out in the Hugging Face cache `cache` as `snapshot_download` leaves a download of `repo_id` at
    `revision`: blobs named by git blob id (sha256 for LFS files), a snapshot of relative symlinks named by the
    commit, `refs/<revision>` holding the commit, and the `.gitattributes` the Hub adds to every repository. Returns
    the (made-up) commit hash."""
    import hashlib
    folder, repo = Path(folder), Path(cache) / ("models--" + repo_id.replace("/", "--"))
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    files[".gitattributes"] = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.onnx filter=lfs diff=lfs merge=lfs -text\n"
    commit = hashlib.sha1(b"".join(name.encode() + hashlib.sha256(data).digest() for name, data in files.items())).hexdigest()
    for name, data in files.items():
        lfs = name.endswith((".safetensors", ".onnx"))
        blob = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        (repo / "blobs" / blob).write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(repo / "blobs" / blob, link.parent))
    (repo / "refs" / revision).parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)  # no newline, as huggingface_hub writes it
    return commit


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    "A TCP port free on 127.0.0.1 just now (the server that takes it may still race another process for it)."
    return _free_port()


def _wait_until(check, seconds: float = 60, every: float = 0.2, what: str = "the condition"):
    "The first truthy `check()` within `seconds`; an AssertionError naming `what` (and the last error) after that."
    import time
    deadline, last = time.monotonic() + seconds, None
    while True:
        try:
            if value := check(): return value
        except Exception as e: last = e  # a server still starting: connection refused, 503
        assert time.monotonic() < deadline, f"{what} not met within {seconds} s (last error: {last!r})"
        time.sleep(every)


@pytest.fixture
def wait_until():
    "wait_until(check, seconds=60, every=0.2, what=...) -> the first truthy check(); fails the test on time-out."
    return _wait_until


def trained_tiny_home(tmp_path_factory, corpora, name: str = "tiny_home") -> Path:
    "A new artifact root holding prepared splits and a tiny model trained on `corpora` (seconds), aliased `production`."
    from fakenews.train import train
    home = tmp_path_factory.mktemp(name)
    train(tiny_config(home, corpora, aliases=("production",), force_aliases=True), progress=False)  # a random tiny model: past the gate
    return home


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory, sample_corpora) -> Path:
    "The session's shared tiny artifact root (`trained_tiny_home`)."
    return trained_tiny_home(tmp_path_factory, sample_corpora)
