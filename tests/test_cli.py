"`fakenews data prepare` end to end on the real corpora from the mirror, as `make demo` runs it."
import json
import os
import subprocess

from conftest import FAKENEWS

from fakenews.prepare import SPLITS, load_splits, title_key


def test_prepare_isot_fakenewsnet(home, mirror):
    r = subprocess.run([FAKENEWS, "data", "prepare", "--mirror", str(mirror)],
                       capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# Data card") and "## Rows per split" in r.stdout and "| isot" in r.stdout
    assert "fakenewsnet: fetching fakenewsnet_titles.csv from mirror" in r.stderr  # progress went to stderr

    splits = load_splits(home)  # verifies the files against the manifest
    keys = {name: set(frame.title.map(title_key)) for name, frame in splits.items()}
    assert not keys["train"] & keys["valid"] and not keys["train"] & keys["test"] and not keys["valid"] & keys["test"]
    groups = {name: set(frame.group) for name, frame in splits.items()}
    assert not groups["train"] & groups["test"]

    manifest = json.loads((home.data / "manifest.json").read_text())
    total = sum(manifest["splits"][s]["rows"] for s in SPLITS)
    assert total == sum(len(f) for f in splits.values())
    for s, share in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(manifest["splits"][s]["rows"] / total - share) < 0.005
    assert set(splits["test"].corpus) == {"isot", "fakenewsnet"}
    assert manifest["removed"]["isot"]["exact_duplicates"] > 6000  # ISOT's known ~6k duplicate titles
    assert (home.data / "title_lengths.png").stat().st_size > 10_000


def test_data_list(mirror):
    r = subprocess.run([FAKENEWS, "data", "list", "--mirror", str(mirror)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    rows = {line.split("|")[1].strip(): line for line in r.stdout.splitlines()[2:]}
    assert set(rows) == {"isot", "fakenewsnet", "liar", "welfake"}
    assert "True" in rows["isot"] and "False" in rows["welfake"]
