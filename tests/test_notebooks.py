"Every notebook's own cells, run by nbdev-test, collected as pytest cases so CI reads one summary."
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NBS = sorted(p.name for p in (Path(__file__).resolve().parent.parent / "nbs").glob("*.ipynb"))


@pytest.fixture(scope="session")
def project_home(tmp_path_factory) -> Path:
    "A project home like the one `make demo` leaves, in small: the default corpora prepared, LIAR cached, a model serving."
    from fakenews.acquire import corpus_files
    from fakenews.core import Config, ModelConfig
    from fakenews.model import build_classifier, load_tokenizer
    from fakenews.prepare import prepare_data
    from fakenews.registry import promote, register
    home = tmp_path_factory.mktemp("project") / "artifacts"
    cfg = Config(home=str(home))
    prepare_data(cfg, progress=False)  # from the mirror, once; the chapters then run without it
    corpus_files("liar", cfg.paths, os.environ["FAKENEWS_DATA_DIR"])  # the mirror conftest names
    version = register(build_classifier(ModelConfig(backbone="tiny")), load_tokenizer("tiny"),
                       {"config": {"model": {"max_length": 64}}}, paths=cfg.paths, aliases=["production"], force=True)
    promote(version.ref, "serving", cfg.paths, force=True)  # a random tiny model: past the behavioural gate
    return home


@pytest.mark.parametrize("notebook", NBS)
def test_notebook(notebook, project_home):
    "Each chapter as a reader runs it after `make demo`: from nbs/, no mirror, the project's artifacts already there."
    env = {k: v for k, v in os.environ.items() if k != "FAKENEWS_DATA_DIR"} | {"FAKENEWS_HOME": str(project_home), "MPLBACKEND": "Agg"}
    nbdev_test = Path(sys.executable).with_name("nbdev-test")
    r = subprocess.run([str(nbdev_test), f"nbs/{notebook}"], cwd=Path(__file__).resolve().parent.parent,
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]


def test_notebooks_and_package_in_sync(tmp_path):
    "nbdev-export on a copy of the notebooks reproduces the committed package, and nbdev-clean changes no notebook."
    root = Path(__file__).resolve().parent.parent
    for name in ("nbs", "fakenews"):
        shutil.copytree(root / name, tmp_path / name)
    shutil.copy(root / "pyproject.toml", tmp_path)
    bin_dir = Path(sys.executable).parent
    r = subprocess.run([str(bin_dir / "nbdev-export")], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    changed = [p.name for p in (root / "fakenews").glob("*.py") if p.read_text() != (tmp_path / "fakenews" / p.name).read_text()]
    assert not changed, f"edit the notebooks, not fakenews/*.py, then run make export: {changed}"
    for nb in NBS:
        r = subprocess.run([str(bin_dir / "nbdev-clean"), "--disp", "--fname", f"nbs/{nb}"], cwd=tmp_path,
                           capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout == (root / "nbs" / nb).read_text(), f"{nb} is not clean: run make export"


def test_readme_generated_from_index():
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "tools/readme.py", "check"], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_docs_processing(tmp_path):
    "The docs build's notebook stage (what nbdev-docs runs before Quarto) succeeds: it executes import and doc cells."
    root = Path(__file__).resolve().parent.parent
    code = "from nbdev.serve import proc_nbs; proc_nbs(force=True, n_workers=0)"
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert {p.name for p in (root / "_proc").glob("*.ipynb")} == set(NBS)
