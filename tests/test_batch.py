"`fakenews predict` as a user runs it: formats, stdin and stdout, bad rows by line, --strict, chunks, bounded memory."
import contextlib
import csv
import io
import json
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import FAKENEWS

from fakenews.cli import main
from fakenews.core import ModelConfig, Paths
from fakenews.model import build_classifier, load_tokenizer
from fakenews.registry import promote, register

TITLES = ["Senate passes the budget", "Pope endorses a candidate", "Stocks close higher on Friday", "You won't believe this"]


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory):
    "An artifact root whose `serving` alias is the tiny random model."
    paths = Paths.from_env(tmp_path_factory.mktemp("batch") / "home")
    version = register(build_classifier(ModelConfig(backbone="tiny")), load_tokenizer("tiny"), {}, paths=paths)
    promote(version.ref, "serving", paths, force=True)
    return paths.home


def predict(home, *args, stdin=None):
    "`fakenews predict` in a process of its own (for stdin and stdout), on one model thread."
    return subprocess.run([FAKENEWS, "predict", *map(str, args), "--home", str(home), "--threads", "1"], input=stdin,
                          capture_output=True, timeout=300)


def predict_here(home, *args) -> tuple[int, str]:
    "`fakenews predict` in this process (no start-up cost): exit status and stderr."
    err = io.StringIO()
    with contextlib.redirect_stderr(err): status = main(["predict", *map(str, args), "--home", str(home), "--threads", "1"])
    return status, err.getvalue()


def test_every_format_in_and_out_keeps_rows_and_order(tiny_home, tmp_path):
    frame = pd.DataFrame({"id": range(8), "title": TITLES * 2, "label": [0, 1] * 4})
    inputs = {"csv": tmp_path / "in.csv", "tsv": tmp_path / "in.tsv", "jsonl": tmp_path / "in.jsonl", "parquet": tmp_path / "in.parquet"}
    frame.to_csv(inputs["csv"], index=False); frame.to_csv(inputs["tsv"], sep="\t", index=False)
    frame.to_json(inputs["jsonl"], orient="records", lines=True); frame.to_parquet(inputs["parquet"], index=False)
    read = {"csv": pd.read_csv, "tsv": lambda p: pd.read_csv(p, sep="\t"), "jsonl": lambda p: pd.read_json(p, lines=True), "parquet": pd.read_parquet}
    reference = None
    for src, path in inputs.items():
        for out in inputs:
            dest = tmp_path / f"{src}-to.{'jsonl' if out == 'jsonl' else out}"
            status, err = predict_here(tiny_home, path, "-o", dest, "--chunk-size", "3")
            assert status == 0, err
            got = read[out](dest)
            assert got.id.astype(int).tolist() == list(range(8)) and got.title.tolist() == frame.title.tolist()
            assert list(got.columns) == ["id", "title", "label", "prob_fake", "predicted_label", "confidence", "uncertain", "error"]
            reference = got.prob_fake.tolist() if reference is None else reference
            assert got.prob_fake.tolist() == pytest.approx(reference, abs=1e-6)  # the same scores whatever the formats
            assert "scored 8 of 8 rows" in err
    assert pq.read_table(tmp_path / "parquet-to.parquet").schema.field("id").type == "int64"  # Parquet keeps its types


def test_stdin_to_stdout(tiny_home):
    r = predict(tiny_home, "-", stdin=("title\n" + "\n".join(TITLES) + "\n").encode())
    assert r.returncode == 0, r.stderr.decode()
    rows = list(csv.DictReader(io.StringIO(r.stdout.decode())))
    assert [row["title"] for row in rows] == TITLES and all(row["label"] in ("fake", "real") for row in rows)
    assert "wrote stdout" in r.stderr.decode()  # the summary goes to stderr, never into the data
    r = predict(tiny_home, "-", "--format", "jsonl", stdin=b'{"title": "Senate passes the budget"}\n')
    assert json.loads(r.stdout.decode())["title"] == "Senate passes the budget"
    parquet = io.BytesIO(); pd.DataFrame({"title": TITLES}).to_parquet(parquet)
    r = predict(tiny_home, "-", "--format", "parquet", "-o", "-", stdin=parquet.getvalue())  # spooled: Parquet must seek
    assert r.returncode == 0 and pd.read_parquet(io.BytesIO(r.stdout)).title.tolist() == TITLES


def test_bad_rows_are_reported_by_line_and_kept_unscored(tiny_home, tmp_path):
    source = tmp_path / "bad.csv"
    source.write_bytes(b'title,id\nSenate passes the budget,1\n"   ",2\n"A title\nover two lines",3\nCaf\xe9 owner elected,4\nthree,fields,here\nok,6\n')
    status, err = predict_here(tiny_home, source, "-o", tmp_path / "out.csv", "--chunk-size", "2")
    assert status == 0, err
    assert "scored 3 of 6 rows" in err and "3 bad rows, written unscored" in err
    assert "line 3: the title is empty" in err and "line 6: the title is not UTF-8" in err and "line 7: the row has 3 fields" in err
    with open(tmp_path / "out.csv", "rb") as f: out = f.read()
    assert b"Caf\xe9 owner elected" in out  # the bad bytes are written back as they were
    rows = list(csv.reader(io.StringIO(out.decode("utf-8", "surrogateescape"))))
    assert [r[1] for r in rows[1:]] == ["1", "2", "3", "4", "fields", "6"] and rows[2][-1] == "the title is empty" and rows[2][2] == ""


def test_strict_stops_at_the_first_bad_row_and_writes_nothing(tiny_home, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"title": "Senate passes the budget"}\n{"title": 42}\n{"title": ""}\n')
    status, err = predict_here(tiny_home, source, "-o", tmp_path / "out.jsonl", "--strict")
    assert status == 2
    assert err == "fakenews: error: bad.jsonl, line 2: the title is int, not text (--strict stops at the first bad row)\n"
    assert list(tmp_path.iterdir()) == [source]  # no output, and no temporary file left behind


def test_a_large_file_streams_in_bounded_memory(tiny_home, tmp_path):
    "Peak memory grows with the chunk, not the file: 20x the rows costs (nearly) nothing more."
    def peak_mb(rows: int) -> float:
        source = tmp_path / f"{rows}.csv"
        pd.DataFrame({"id": range(rows), "title": [f"{TITLES[i % 4]}, number {i} of {rows}" for i in range(rows)]}).to_csv(source, index=False)
        code = ("import resource, sys; from fakenews.cli import main; status = main(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(status)")
        r = subprocess.run([sys.executable, "-c", code, "predict", str(source), "-o", str(tmp_path / "out.csv"),
                            "--home", str(tiny_home), "--chunk-size", "500", "--threads", "1", "-q"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert f"scored {rows:,} of {rows:,} rows" in r.stderr
        return int(r.stderr.strip().splitlines()[-1]) / 1024
    small, large = peak_mb(4_000), peak_mb(60_000)  # held whole, 60,000 rows and their scores would take ~40 MB more
    assert large - small < 20, f"peak RSS {small:.0f} MB for 4,000 rows, {large:.0f} MB for 60,000"
