"The registry read as an attacker would: no pickle on any load path, names that cannot leave the registry, and a version that is exactly what was registered."
import json
import os
import pickle
import shutil

import pytest

from fakenews.core import ModelConfig, ModelError, Paths
from fakenews.model import build_classifier, load_tokenizer
from fakenews.predict import Predictor
from fakenews.registry import load_model, promote, read_aliases, register, resolve, versions, versions_table

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


class Exploit:
    "A pickle that, when unpickled, writes a marker file: proof that loading ran code."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _plant_pickle(path, marker) -> None:
    with open(path, "wb") as f: pickle.dump(Exploit(marker), f)


@pytest.fixture
def tiny(tmp_path):
    "A scratch registry holding the tiny random model as fakenews:v1."
    paths = Paths.from_env(tmp_path / "home")
    model, tokenizer = build_classifier(ModelConfig(backbone="tiny")), load_tokenizer("tiny")
    return paths, register(model, tokenizer, {"val_loss": 0.5}, paths=paths)


def _int8_folder(version, folder, marker, forge_hashes: bool):
    "A torch-int8 version folder as the old format laid it out, its weights file a malicious pickle."
    shutil.copytree(version.path, folder)
    (folder / "model.safetensors").unlink()
    _plant_pickle(folder / "model-int8.pt", marker)
    meta = json.loads((folder / "fakenews.json").read_text()) | {"format": "torch-int8"}
    meta.pop("files", None)
    if forge_hashes:  # whoever plants the file can also write its hash: the record must not be what stops it
        from fakenews.core import file_sha256
        meta["files"] = {p.name: file_sha256(p) for p in folder.iterdir() if p.name != "fakenews.json"}
    (folder / "fakenews.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("forge_hashes", [False, True])
def test_a_planted_int8_pickle_in_a_registry_version_does_not_run(tiny, tmp_path, forge_hashes):
    paths, v1 = tiny
    marker = tmp_path / "marker"
    _int8_folder(v1, paths.registry / "fakenews" / "v2", marker, forge_hashes)
    with pytest.raises(ModelError, match="model-int8.pt is a pickle, which fakenews does not load"):
        Predictor.load("fakenews:v2", paths)
    assert not marker.exists(), "loading the version unpickled its weights file and ran the payload"


def test_a_planted_int8_pickle_in_a_model_folder_does_not_run(tiny, tmp_path):
    _, v1 = tiny
    marker = tmp_path / "marker"
    folder = _int8_folder(v1, tmp_path / "folder", marker, forge_hashes=False)
    with pytest.raises(ModelError, match="model-int8.pt is a pickle, which fakenews does not load"):
        Predictor.load(str(folder))
    assert not marker.exists()


def test_a_pickled_pytorch_model_bin_beside_or_instead_of_safetensors_is_not_loaded(tiny, tmp_path):
    paths, v1 = tiny
    marker = tmp_path / "marker"
    _plant_pickle(v1.path / "pytorch_model.bin", marker)
    with pytest.raises(ModelError, match="pytorch_model.bin"):
        Predictor.load("fakenews:v1", paths)
    (v1.path / "model.safetensors").unlink()
    with pytest.raises(ModelError):
        load_model("fakenews:v1", paths)
    assert not marker.exists()


@pytest.fixture
def outside(tmp_path):
    "A model registered in another artifact root, next to the scratch one: a registry a reference must not reach."
    other = Paths.from_env(tmp_path / "elsewhere")
    model, tokenizer = build_classifier(ModelConfig(backbone="tiny")), load_tokenizer("tiny")
    register(model, tokenizer, {}, "planted", other)
    return other


@pytest.mark.parametrize("ref", ["../../elsewhere/registry/planted:v1", "{abs}/registry/planted:v1",
                                 "../../elsewhere/registry/planted:latest"])
def test_references_cannot_leave_the_registry(tiny, outside, ref):
    paths, _ = tiny
    ref = ref.format(abs=outside.home)
    with pytest.raises((ModelError, ValueError), match="registry name"):
        resolve(ref, paths)
    with pytest.raises((ModelError, ValueError), match="registry name"):
        Predictor.load(ref, paths)


def test_names_that_build_paths_are_checked_everywhere(tiny, outside, tmp_path):
    paths, _ = tiny
    evil = "../../elsewhere/registry/planted"
    for call in (lambda: versions(evil, paths), lambda: read_aliases(evil, paths), lambda: versions_table(evil, paths),
                 lambda: promote(f"{evil}:v1", "production", paths)):
        with pytest.raises((ModelError, ValueError), match="registry name"):
            call()
    assert json.loads((outside.registry / "planted" / "aliases.json").read_text()) == {"latest": 1}  # not rewritten
    model, tokenizer = build_classifier(ModelConfig(backbone="tiny")), load_tokenizer("tiny")
    for name in ("../x", "/abs", "a/b", "a\x00b", ".hidden", ""):
        with pytest.raises(ValueError, match="registry name"):
            register(model, tokenizer, {}, name, paths)
    for alias in ("../prod", "v2", "a\x00", "prod/uction"):
        with pytest.raises(ValueError, match="alias"):
            promote("v1", alias, paths)


def test_nul_and_control_characters_in_a_reference_are_a_clear_error(tiny):
    paths, _ = tiny
    for ref in ("fakenews\x00:v1", "latest\x00", "fakenews:v1\n"):
        with pytest.raises((ModelError, ValueError), match="control character"):
            resolve(ref, paths)


def test_a_tampered_weight_file_is_refused(tiny):
    paths, v1 = tiny
    weights = v1.path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight: still a valid safetensors file, silently different weights
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="model.safetensors"):
        load_model("fakenews:v1", paths)
    with pytest.raises(ModelError, match="model.safetensors"):
        Predictor.load("fakenews:v1", paths)


def test_a_missing_or_extra_file_is_refused(tiny):
    paths, v1 = tiny
    (v1.path / "added_tokens.json").write_text("{}")
    with pytest.raises(ModelError, match="added_tokens.json"):
        Predictor.load("fakenews:v1", paths)
    (v1.path / "added_tokens.json").unlink()
    Predictor.load("fakenews:v1", paths)  # as registered: loads
    os.remove(v1.path / "tokenizer.json")
    with pytest.raises(ModelError, match="tokenizer.json"):
        Predictor.load("fakenews:v1", paths)


@pytest.mark.parametrize("ref", ["production", "fakenews:production", "fakenews:v1", "v1"])
def test_a_folder_named_like_a_registry_reference_does_not_shadow_the_registry(tiny, tmp_path, monkeypatch, ref):
    "A folder in the working directory called `production` (or `fakenews:v1`) must not be served instead of the version."
    paths, v1 = tiny
    promote("fakenews:v1", "production", paths, force=True)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(v1.path, tmp_path / ref)  # a valid model folder, planted where a reference is resolved
    assert resolve(ref, paths).path == v1.path
    assert resolve(f"./{ref}", paths).path == (tmp_path / ref).absolute()  # a folder is still a folder when written as a path
