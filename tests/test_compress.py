"Compression: every variant agrees with its source, ONNX loads and predicts on any shape, distillation registers a student, bad input is a clear error."
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import FAKENEWS, tiny_config
from test_bad_inputs import _tmpfs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def family(tmp_path_factory, sample_corpora):
    "A tiny teacher trained well enough to separate the classes, a distilled student, and every variant of both."
    from fakenews.compress import compress
    home = tmp_path_factory.mktemp("compress") / "home"
    cfg = tiny_config(home, sample_corpora, max_steps=300, lr=3e-3, val_check_interval=100, run_name="teacher")
    from fakenews.train import train
    teacher = train(cfg, progress=False).version
    from fakenews.core import override
    made = compress(teacher.ref, cfg=override(cfg, {"train.run_name": "student", "train.max_steps": 100}), progress=False)
    return cfg, made


@pytest.fixture(scope="module")
def titles(family):
    "A fixed title set: every split of the sample corpora (a few hundred titles, so 99% allows a flip or two near 0.5)."
    from fakenews.prepare import load_splits
    splits = load_splits(family[0].paths)
    titles = pd.concat([splits["test"], splits["valid"], splits["train"]]).title.tolist()
    assert len(titles) >= 200, len(titles)
    return titles


def test_compress_makes_a_student_and_every_variant_of_both(family):
    cfg, made = family
    teacher, student, *variants = made
    assert student.meta["config"]["distill"]["teacher"] == teacher.ref
    assert student.meta["config"]["model"]["layers"] == [0]  # every other layer of the 2-layer tiny teacher
    assert [(v.meta["variant"]["source"], v.meta["variant"]["method"]) for v in variants] == [
        (s.ref, m) for s in (teacher, student) for m in ("torch-int8", "onnx", "onnx-int8")]
    for v in variants:
        assert {"test/f1", "test/agreement"} <= set(v.meta["metrics"])
        assert v.meta["data_fingerprint"] == teacher.meta["data_fingerprint"]


def test_every_variant_agrees_with_its_source_on_argmax(family, titles):
    from fakenews.predict import Predictor
    cfg, made = family
    sources = {v.ref: Predictor.load(v.ref, cfg.paths) for v in made[:2]}
    reference = {ref: p.logits(titles).argmax(1) for ref, p in sources.items()}
    assert len(set(reference[made[0].ref])) == 2  # the teacher predicts both classes, so agreement means something
    for v in made[2:]:
        decisions = Predictor.load(v.ref, cfg.paths).logits(titles).argmax(1)
        agreement = (decisions == reference[v.meta["variant"]["source"]]).mean()
        assert agreement >= 0.99, (v.ref, v.meta["variant"], agreement)


def test_onnx_variant_loads_and_matches_its_source_on_any_batch_shape(family, titles):
    from fakenews.predict import OnnxModel, Predictor
    cfg, made = family
    onnx = next(v for v in made if v.meta.get("variant", {}).get("method") == "onnx")
    served, source = Predictor.load(onnx.ref, cfg.paths), Predictor.load(onnx.meta["variant"]["source"], cfg.paths)
    assert isinstance(served.model, OnnxModel)
    for batch_size in (1, 3, 17, 64):  # other batch sizes and padded lengths than the export's example
        served.batch_size = source.batch_size = batch_size
        np.testing.assert_allclose(served.logits(titles), source.logits(titles), atol=1e-4)
    np.testing.assert_allclose(served.embed(titles[:10]), source.embed(titles[:10]), atol=1e-4)
    frame = served.predict(["Senate passes the budget", "SHOCKING: aliens endorse candidate"])
    assert frame.label.isin(["real", "fake"]).all() and frame.prob_fake.between(0, 1).all()
    with pytest.raises(ValueError, match="title 1 is empty"):
        served.predict(["fine", "   "])


def test_every_variant_is_registered_with_its_own_calibration(family):
    "Each variant fits its temperature on the validation split at registration: its NLL there is no worse than at T=1."
    import json
    import torch
    from fakenews.predict import Predictor
    from fakenews.prepare import load_splits
    cfg, made = family
    valid = load_splits(cfg.paths)["valid"]
    labels = torch.tensor(valid.label.to_numpy())
    for v in made[2:]:
        assert "calibration.json" in v.meta["files"]
        calibration = json.loads((v.path / "calibration.json").read_text())
        assert calibration["fitted_on"] == "valid" and calibration["n"] == len(valid)
        served = Predictor.load(v.ref, cfg.paths)
        assert served.temperature == calibration["temperature"] > 0
        # the fit minimises NLL, not ECE (which may rise by a hair); and the variant's own fit, not its source's copied
        logits = torch.tensor(served.logits(valid.title.tolist()), dtype=torch.float64)
        nll = lambda t, logits=logits: torch.nn.functional.cross_entropy(logits / t, labels).item()
        assert nll(served.temperature) <= nll(1.0) + 1e-5, (v.ref, served.temperature)
        source = Predictor.load(v.meta["variant"]["source"], cfg.paths).temperature
        assert nll(served.temperature) <= nll(source) + 1e-5, (v.ref, served.temperature, source)


def test_torch_int8_variant_is_plain_tensors_in_safetensors(family, titles):
    "No pickle: the int8 weights, scales and zero points are safetensors tensors, and they rebuild the very model quantised."
    from safetensors import safe_open
    from fakenews.compress import Int8Model
    from fakenews.predict import Predictor
    from fakenews.registry import load_model
    cfg, made = family
    for int8 in (v for v in made if v.meta.get("variant", {}).get("method") == "torch-int8"):
        assert sorted(p.name for p in int8.path.iterdir()) == ["calibration.json", "config.json", "fakenews.json",
                                                               "model-int8.safetensors", "tokenizer.json", "tokenizer_config.json"]
        with safe_open(int8.path / "model-int8.safetensors", "pt") as f:
            assert {"classifier.weight_int8", "classifier.weight_scales", "classifier.weight_zero_points"} <= set(f.keys())
            assert str(f.get_tensor("classifier.weight_int8").dtype) == "torch.int8"
        model, tokenizer, _ = load_model(int8.meta["variant"]["source"], cfg.paths)
        fresh = Predictor(Int8Model(model).runnable(), tokenizer).logits(titles)
        assert np.array_equal(Predictor.load(int8.ref, cfg.paths).logits(titles), fresh)  # bit for bit


def test_bench_infer_measures_the_family_against_the_pipeline(family):
    from fakenews.bench_infer import bench_infer, pick_serving
    cfg, made = family
    table = bench_infer(made[0].ref, refs=[made[0].ref, made[-1].ref], latency_titles=10, paths=cfg.paths, repeats=1)
    assert table.model.tolist() == ["transformers.pipeline", made[0].ref, made[-1].ref]
    assert table["speed (x pipeline)"].iloc[0] == 1.0 and (table["titles/s"] > 0).all()
    assert abs(table["F1 all"].iloc[0] - table["F1 all"].iloc[1]) < 0.02  # the pipeline and the Predictor run one model
    assert {"ΔF1 all (pts)", "ceiling share", "p95 ms", "size (MB)", "params (M)"} <= set(table.columns)
    # the choice: the fastest within the bar, never the pipeline
    # every per-corpus delta is set: a tiny random model's own deltas on a small corpus may already pass the bar's -1
    deltas = [c for c in table.columns if c.startswith("ΔF1 ")]
    fake = table.assign(**{"titles/s": [1000.0, 10.0, 20.0], "p95 ms": [1.0, 1.0, 1.0]}, **{c: [0.0, 0.0, -0.5] for c in deltas})
    assert pick_serving(fake).model == made[-1].ref
    assert pick_serving(fake.assign(**{deltas[-1]: [0.0, 0.0, -1.5]})).model == made[0].ref  # one corpus past the bar is enough
    assert pick_serving(fake.assign(**{"p95 ms": [1.0, 30.0, 30.0]})) is None


def test_bad_compression_requests_are_clear_errors(family, tmp_path):
    "An unknown teacher, a corrupt or missing ONNX graph (an unknown method is 05_compress's own test)."
    from fakenews.compress import compress
    from fakenews.core import ModelError
    from fakenews.predict import Predictor
    cfg, made = family
    with pytest.raises(ModelError, match="no alias 'nosuch'"):
        compress("nosuch", cfg=cfg)
    broken = tmp_path / "broken"
    onnx = next(v for v in made if v.meta.get("variant", {}).get("method") == "onnx")
    shutil.copytree(onnx.path, broken)
    (broken / "model.onnx").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match="model.onnx"):
        Predictor.load(str(broken))
    (broken / "model.onnx").unlink()
    with pytest.raises(ModelError, match="model.onnx"):
        Predictor.load(str(broken))


@pytest.fixture
def registry_disk(family):
    "A 6 MB tmpfs as the folder of a registry name: room for the tiny teacher (~4.5 MB), not for a variant too."
    cfg, _ = family
    cfg.paths.registry.mkdir(parents=True, exist_ok=True)
    yield _tmpfs(cfg.paths.registry / "small", "6m")
    subprocess.run(["umount", "-l", str(cfg.paths.registry / "small")], check=False)  # lazy: a loaded model may still map a file


def test_full_disk_while_registering_a_variant_leaves_no_partial_version(family, registry_disk):
    from fakenews.compress import make_variants
    from fakenews.core import ModelError
    from fakenews.registry import load_model, register, versions
    cfg, made = family
    model, tokenizer, teacher = load_model(made[0].ref, cfg.paths)
    small = register(model, tokenizer, teacher.meta, "small", cfg.paths)
    with pytest.raises(ModelError, match="could not write small to the registry.*No space left"):
        make_variants(small.ref, ["onnx"], cfg.paths)
    assert [v.ref for v in versions("small", cfg.paths)] == ["small:v1"]
    assert not [p for p in registry_disk.iterdir() if p.name.startswith(".staging")]


def test_cli_errors_are_one_line(family):
    cfg, _ = family
    for args in (["compress", "--teacher", "nosuch"], ["bench", "infer", "--teacher", "nosuch"],
                 ["compress", "--methods", "zip"]):
        run = subprocess.run([FAKENEWS, *args, "--home", str(cfg.paths.home)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 2, (args, run.stderr)
        assert run.stderr.strip().startswith("fakenews: error:") and len(run.stderr.strip().splitlines()) == 1, run.stderr
