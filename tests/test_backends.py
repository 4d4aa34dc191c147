"""Runtimes of predict/eval (`--backend onnxruntime`, `--quantize int8`): onnxruntime's labels equal torch's in
every mode and in an ensemble, the ONNX cache in the run directory is reused and follows the model file, an
exported `.onnx` file is a MODEL, int8 prints its agreement or is refused, and option errors are clean."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from segwise.cli import main
from segwise.data.io import read_mask
from segwise.errors import ModelError
from segwise.inference import Predictor, build_mode
from segwise.inference import onnx_backend
from segwise.inference.onnx_backend import Runtime
from segwise.models.spec import ModelSpec, save_model

pytestmark = pytest.mark.usefixtures("one_thread")
ORT = Runtime("onnxruntime", threads=1)


def make_run(directory: Path, data_root: Path, seed: int) -> Path:
    """An untrained tiny FCN-8s (exports in ~2 s) with a config.yaml naming its training data."""
    spec = ModelSpec(name="fcn8", encoder=None, args={"base_channels": 4, "fc_channels": 16}, in_channels=3,
                     num_classes=4, class_names=["bg", "a", "b", "c"],
                     palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], mean=[120.0] * 3, std=[60.0] * 3)
    torch.manual_seed(seed)
    model = spec.build().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(4.0)  # sharper logits: no near-ties between classes that float rounding could flip
    save_model(model, spec, directory)
    (directory / "config.yaml").write_text(f"data:\n  root: {data_root}\n  format: folder\n")
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synthetic_root) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("backend_runs")
    return {"a": make_run(root / "a", synthetic_root, 0), "b": make_run(root / "b", synthetic_root, 1)}


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)  # not a multiple of the stride


def cached(run: Path) -> list[Path]:
    return sorted((run / ".cache" / "onnx").glob("*.onnx"))


@pytest.mark.parametrize("mode", [{}, {"mode": "slide", "window": 32, "overlap": 0.5, "window_batch": 3},
                                  {"scales": [0.75, 1.0], "flip": "h"}], ids=["whole", "slide", "tta"])
def test_onnxruntime_labels_equal_torch_in_every_mode(runs, image, mode):
    torch_labels = Predictor.from_path(runs["a"], "cpu", build_mode(**mode)).predict(image)
    onnx_predictor = Predictor.from_path(runs["a"], None, build_mode(**mode), ORT)
    assert isinstance(onnx_predictor.model, onnx_backend.OnnxModel) and onnx_predictor.device.type == "cpu"
    assert np.array_equal(onnx_predictor.predict(image), torch_labels)
    assert len(cached(runs["a"])) == 1  # exported once, reused by every mode


def test_ensemble_and_eval_through_the_cli_match_torch(runs, synthetic_root, tmp_path):
    val = synthetic_root / "val"
    for backend in ("torch", "onnxruntime"):
        assert main(["predict", str(runs["a"]), str(val), "-o", str(tmp_path / backend), "--save", "index",
                     "--backend", backend, "--threads", "1", "--ensemble", str(runs["b"])]) == 0
        assert main(["eval", str(runs["a"]), str(val), "-o", str(tmp_path / f"eval_{backend}"), "--metrics-only",
                     "--backend", backend]) == 0
    masks = sorted((tmp_path / "torch" / "index").glob("*.png"))
    assert masks and all(np.array_equal(read_mask(m), read_mask(tmp_path / "onnxruntime" / "index" / m.name))
                         for m in masks)
    metrics = [json.loads((tmp_path / f"eval_{b}" / "metrics.json").read_text()) for b in ("torch", "onnxruntime")]
    assert metrics[0]["confusion_matrix"] == metrics[1]["confusion_matrix"]
    assert len(cached(runs["b"])) == 1


def test_cache_is_reused_and_a_changed_model_is_exported_again(runs, image, tmp_path, monkeypatch):
    Predictor.from_path(runs["a"], "cpu", runtime=ORT)  # exported by now (or here)
    run = shutil.copytree(runs["a"], tmp_path / "run")

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds the graph")

    with monkeypatch.context() as patch:
        patch.setattr(onnx_backend, "export_graph", no_export)
        Predictor.from_path(run, "cpu", runtime=ORT)
    make_run(run, tmp_path, seed=5)  # other weights in the same run directory
    predictor = Predictor.from_path(run, "cpu", runtime=ORT)
    assert len(cached(run)) == 2 and predictor.model.path in cached(run)
    assert np.array_equal(predictor.predict(image), Predictor.from_path(run, "cpu").predict(image))


def test_exported_onnx_file_is_a_model_for_predict_and_eval(runs, synthetic_root, image, tmp_path):
    Predictor.from_path(runs["a"], "cpu", runtime=ORT)
    model = tmp_path / "model.onnx"
    shutil.copy(cached(runs["a"])[0], model)  # the cache holds segwise's export, metadata included
    predictor = Predictor.from_path(model)
    assert predictor.spec.class_names == ["bg", "a", "b", "c"] and predictor.spec.mean == [120.0] * 3
    assert np.array_equal(predictor.predict(image), Predictor.from_path(runs["a"], "cpu").predict(image))
    assert main(["predict", str(model), str(synthetic_root / "val"), "-o", str(tmp_path / "out"), "--save",
                 "index", "color"]) == 0
    assert len(list((tmp_path / "out" / "color").glob("*.png"))) == 8
    assert main(["eval", str(model), str(synthetic_root / "val"), "--metrics-only"]) == 0
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_int8_prints_its_agreement_or_is_refused_and_records_the_images(runs, image, tmp_path, capsys):
    quantized = Runtime("onnxruntime", threads=1, quantize="int8", calibration_images=3)
    try:
        predictor = Predictor.from_path(runs["a"], "cpu", runtime=quantized)
        assert predictor.predict(image).shape == image.shape[:2]
    except ModelError as exc:
        assert "--quantize int8 refused" in str(exc) and "--min-agreement" in str(exc)
    assert "int8: labels agree with float on " in capsys.readouterr().out
    record = next((runs["a"] / ".cache" / "onnx").glob("*.int8.json"))
    assert len(json.loads(record.read_text())["calibration_images"]) == 3
    args = ["predict", str(runs["a"]), str(image_file(tmp_path, image)), "-o", str(tmp_path / "out"),
            "--backend", "onnxruntime", "--quantize", "int8", "--calibration-images", "3"]
    assert main([*args, "--min-agreement", "1.01"]) == 2
    captured = capsys.readouterr()
    assert "int8: labels agree with float on " in captured.out
    assert "--quantize int8 refused" in captured.err and "below --min-agreement 1.01" in captured.err


def test_option_errors_are_clean(runs, tmp_path, capsys):
    out = ["-o", str(tmp_path / "out")]
    assert main(["predict", str(runs["a"]), str(tmp_path), *out, "--quantize", "int8"]) == 2
    assert "--quantize int8 runs in onnxruntime only; add --backend onnxruntime" in capsys.readouterr().err
    assert main(["predict", str(runs["a"]), str(tmp_path), *out, "--backend", "onnxruntime", "--compile"]) == 2
    assert "--compile applies to the torch backend" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_fixed_size_graph_names_the_torch_backend_for_other_sizes(runs, tmp_path):
    Predictor.from_path(runs["a"], "cpu", runtime=ORT)
    fixed = onnx_backend.OnnxModel(cached(runs["a"])[0], 1, 32)
    fixed.fixed = (1, 3, 64, 64)  # as a graph exported without dynamic axes reports itself
    assert fixed(torch.zeros(2, 3, 64, 64)).shape == (2, 4, 64, 64)  # batch 1 graph: one image per run
    with pytest.raises(ModelError, match="--backend torch"):
        fixed(torch.zeros(1, 3, 96, 64))


def image_file(folder: Path, image: np.ndarray) -> Path:
    from segwise.data.io import write_png

    write_png(folder / "image.png", image)
    return folder / "image.png"
