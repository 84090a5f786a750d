"The HTTP acquisition path, against a real HTTP server on 127.0.0.1 serving the mirror's files."
import dataclasses

import pytest
from conftest import cache_leftovers

from fakenews.core import file_sha256
from fakenews.acquire import download, fetch_corpus, http_session
from fakenews.data import ISOT, ChecksumError, DataError, SourceFile


def test_mirror_over_http(serve, mirror, home):
    url, handler = serve(mirror)
    frame, record = fetch_corpus("isot", home, url, progress=False)
    assert len(frame) == 44_888 and frame.label.sum() == 23_471
    assert record["source"] == "mirror"
    assert cache_leftovers(home) == ["isot", "isot/ISOT_fake.csv", "isot/ISOT_real.csv"]
    assert file_sha256(home.raw / "isot" / "ISOT_fake.csv") == ISOT.source("http").files[0].sha256
    served = handler.requests
    fetch_corpus("isot", home, url, progress=False)  # second call: from the cache
    assert handler.requests == served


def _isot_via(url: str):
    "ISOT whose pinned http source points at `url` (same files, same hashes, same reader)."
    http = ISOT.source("http")
    files = tuple(SourceFile(f.name, url + f.name, f.sha256) for f in http.files)
    return dataclasses.replace(ISOT, sources=(dataclasses.replace(http, files=files),))


def test_http_source_downloads_and_verifies(serve, mirror, home):
    url, _ = serve(mirror / "isot_titles" / "raw")
    frame, record = fetch_corpus(_isot_via(url), home, progress=False)
    assert record["source"] == "http" and len(frame) == 44_888


def test_corrupted_file_is_refused_and_nothing_cached(serve, mirror_copy, home):
    with open(mirror_copy / "isot_titles/raw/ISOT_real.csv", "r+b") as f:
        f.seek(1000)
        f.write(b"X")  # one flipped byte
    url, _ = serve(mirror_copy / "isot_titles" / "raw")
    with pytest.raises(ChecksumError, match=r"ISOT_real.csv: sha256 .* does not match the pinned"):
        fetch_corpus(_isot_via(url), home, progress=False)
    assert cache_leftovers(home) == []


def test_transient_503_is_retried(serve, mirror, tmp_path):
    url, handler = serve(mirror / "liar" / "raw", fail_first=2)
    session = http_session(retries=3, backoff=0.01)
    digest = download(url + "valid.tsv", tmp_path / "valid.tsv", progress=False, session=session)
    assert handler.requests == 3
    assert digest == file_sha256(mirror / "liar/raw/valid.tsv")


def test_body_cut_short_fails_after_retries(serve, mirror, tmp_path):
    url, handler = serve(mirror / "liar" / "raw", truncate=True)
    with pytest.raises(DataError, match="failed after 2 tries"):
        download(url + "valid.tsv", tmp_path / "valid.tsv", progress=False, attempts=2)
    assert handler.requests == 2
    assert list(tmp_path.iterdir()) == []  # no partial file


def test_missing_file_is_a_clear_error(serve, mirror, home):
    url, _ = serve(mirror)
    with pytest.raises(DataError, match=r"HTTP 404"):
        fetch_corpus("isot", home, url + "nowhere/", progress=False)
    assert cache_leftovers(home) == []
