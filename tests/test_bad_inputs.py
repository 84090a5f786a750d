"Bad input ends in one clear line and leaves nothing behind: through the API, the CLI and a full disk."
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import FAKENEWS, cache_leftovers

from fakenews.acquire import fetch_corpus
from fakenews.data import ChecksumError, DataError

BAD_CSVS = {  # file name -> (bytes, what the one-line error must say)
    "no_title.csv": (b"headline,label\nMoon made of cheese,1\n", "no_title.csv: missing column 'title' (found: headline, label)"),
    "latin1.csv": ("title,label\nok,0\nCaf\xe9 owner elected,1\n".encode("latin-1"), "latin1.csv, line 3: byte b'\\xe9' is not UTF-8"),
    "truncated.csv": (b"title,label,date\nMoon made of cheese,1,2017-01-01\nSenate pass", "truncated.csv, line 3: 1 fields where the header has 3 (the file ends mid-record"),
    "bad_label.csv": (b"title,label\nMoon made of cheese,1\nSenate passes bill,maybe\n", "bad_label.csv, line 3, column 'label': label 'maybe' is not one of"),
    "blank_title.csv": (b'title,label\nMoon made of cheese,1\n"  ",0\n', "blank_title.csv, line 3, column 'title': empty title"),
    "empty.csv": (b"", "empty.csv: the file is empty"),
}


@pytest.mark.parametrize("name", BAD_CSVS)
def test_bad_csv_is_refused_and_nothing_cached(name, tmp_path, home):
    data, message = BAD_CSVS[name]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError) as e:
        fetch_corpus(str(tmp_path / name), home, progress=False)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert cache_leftovers(home) == []


def test_wrong_checksum_from_mirror(mirror_copy, home):
    with open(mirror_copy / "liar/raw/train.tsv", "ab") as f:
        f.write(b"extra\tline\n")
    with pytest.raises(ChecksumError, match="train.tsv: sha256"):
        fetch_corpus("liar", home, str(mirror_copy), progress=False)
    assert cache_leftovers(home) == []


def test_file_missing_from_mirror(mirror_copy, home):
    (mirror_copy / "isot_titles/raw/ISOT_real.csv").unlink()
    with pytest.raises(DataError, match="ISOT_real.csv: not found at"):
        fetch_corpus("isot", home, str(mirror_copy), progress=False)
    assert cache_leftovers(home) == []


def _cli(*args, env=None):
    return subprocess.run([FAKENEWS, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize("name", ["no_title.csv", "latin1.csv", "truncated.csv"])
def test_cli_bad_csv_is_one_line(name, tmp_path, home):
    data, message = BAD_CSVS[name]
    (tmp_path / name).write_bytes(data)
    r = _cli("data", "prepare", "-q", "--corpora", str(tmp_path / name))
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if not line.startswith(tuple("0123456789"))]  # drop log lines
    assert lines == [f"fakenews: error: {lines[0].removeprefix('fakenews: error: ')}"] and message in lines[0]
    assert "Traceback" not in r.stderr
    assert cache_leftovers(home) == [] and not home.data.joinpath("train.csv").exists()


def test_cli_wrong_checksum_is_one_line(mirror_copy, home):
    with open(mirror_copy / "isot_titles/raw/ISOT_fake.csv", "ab") as f:
        f.write(b"0,An extra row,2017-01-01\n")
    r = _cli("data", "prepare", "-q", "--corpora", "isot", "--mirror", str(mirror_copy))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "fakenews: error: ISOT_fake.csv: sha256" in r.stderr
    assert cache_leftovers(home) == []


def test_cli_unknown_corpus_and_bad_override(home):
    r = _cli("data", "prepare", "--corpora", "isott")
    assert r.returncode == 2 and "unknown corpus 'isott'" in r.stderr
    r = _cli("data", "prepare", "--set", "data.fractions=0.5,0.5")
    assert r.returncode != 0 and "expected 3 values" in r.stderr and "Traceback" not in r.stderr


def _tmpfs(mount, size: str):
    "Mount a tmpfs of `size`: a real disk that fills up (needs root; the test is skipped where mounting is not allowed)."
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                                                         capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    return mount


@pytest.fixture
def tiny_disk(tmp_path):
    yield _tmpfs(tmp_path / "tiny", "256k")
    subprocess.run(["umount", str(tmp_path / "tiny")], check=False)


@pytest.fixture
def small_disk(tmp_path):
    "Room for ISOT's raw files (4,220 KiB) and its train split (2,811 KiB), not for the valid and test splits too."
    yield _tmpfs(tmp_path / "small", "7200k")
    subprocess.run(["umount", str(tmp_path / "small")], check=False)


def test_full_disk_is_a_clear_error_and_leaves_no_partial_file(tiny_disk, mirror):
    from fakenews.core import Paths
    paths = Paths.from_env(tiny_disk)
    with pytest.raises(DataError, match="ISOT_fake.csv: could not write to .*No space left on device"):
        fetch_corpus("isot", paths, str(mirror), progress=False)
    assert cache_leftovers(paths) == []


def test_full_disk_while_preparing_keeps_the_previous_data(small_disk, tmp_path, mirror):
    from fakenews.core import Config, Paths, override
    from fakenews.prepare import load_splits, prepare_data
    paths = Paths.from_env(small_disk)
    rng = np.random.default_rng(0)
    words = ["senate", "pope", "moon", "cheese", "bill", "tax", "storm", "vote", "court", "mayor", "video", "shock"]
    titles = {" ".join(rng.choice(words, 6)) + f" {i}" for i in range(200)}
    small = tmp_path / "small.csv"
    pd.DataFrame({"title": sorted(titles), "label": [i % 2 for i in range(len(titles))]}).to_csv(small, index=False)
    before = prepare_data(override(Config(), {"data.corpora": str(small)}), paths, progress=False)

    with pytest.raises(DataError, match=r"(valid|test)\.csv: could not write to .*No space left on device"):
        prepare_data(override(Config(), {"data.corpora": "isot", "data.mirror": str(mirror)}), paths, progress=False)
    assert (paths.raw / "isot" / "ISOT_fake.csv").is_file()  # the raw files and train.csv fitted, valid.csv did not
    after = load_splits(paths)  # still the first data, whole and matching its manifest
    assert sum(len(f) for f in after.values()) == len(before.frame)
    assert not [p for p in paths.data.iterdir() if p.name.startswith(".")]  # no staging left behind
