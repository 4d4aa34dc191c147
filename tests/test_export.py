"""ONNX export: per-architecture parity with onnxruntime at the export size and another one, metadata, refusal to
overwrite, and the `segwise export` command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from segwise.cli import main
from segwise.models.spec import ModelSpec, load_model, save_model
from segwise.errors import DataError, ModelError
from segwise.export import check_parity, export_onnx

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = "tu-test_resnet"  # timm's test ResNet: a few thousand parameters, no download


def save_run(directory: Path, name: str = "unet", args: dict | None = None) -> Path:
    """A run directory with a tiny model whose BatchNorm statistics are not the identity (so folding matters)."""
    spec = ModelSpec(name=name, encoder=TINY, args=args or {}, in_channels=3, num_classes=4,
                     class_names=["bg", "road", "roof", "tree"], palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0],
                                                                         [0, 0, 255]],
                     mean=[120.0, 115.0, 100.0], std=[60.0, 58.0, 57.0])
    torch.manual_seed(0)
    model = spec.build()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    save_model(model, spec, directory)
    return directory


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory) -> Path:
    return save_run(tmp_path_factory.mktemp("unet"), args={"decoder_channels": [16, 8, 8, 8, 8]})


@pytest.fixture(scope="module")
def unet_onnx(unet_run: Path):
    out = unet_run / "model.onnx"
    return export_onnx(unet_run, out, height=64), out


def test_unet_exports_with_dynamic_axes_and_matches_torch_at_two_sizes(unet_onnx):
    report, out = unet_onnx
    assert out.is_file() and report.path == out and report.exporter == "dynamo" and report.opset >= 18
    assert report.batchnorm_folded
    assert report.input_shape == ["batch", 3, "32*h", "32*w"] and report.output_shape == ["batch", 4, "32*h", "32*w"]
    assert [p.shape for p in report.parity] == [(1, 3, 64, 64), (2, 3, 96, 128)]
    assert all(p.max_abs_diff <= 1e-4 and p.label_agreement == 1.0 for p in report.parity)
    assert not list(out.parent.glob(".model.onnx.*"))  # no temporary file left behind
    assert "labels agree on 100.00 %" in report.summary()


def test_onnx_file_runs_alone_at_another_size_and_carries_preprocessing(unet_onnx, unet_run):
    _, out = unet_onnx
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["mean"]) == [120.0, 115.0, 100.0] and json.loads(meta["std"]) == [60.0, 58.0, 57.0]
    assert json.loads(meta["class_names"]) == ["bg", "road", "roof", "tree"]
    assert json.loads(meta["input_stride"]) == 32 and json.loads(meta["image_size"]) is None
    assert "argmax" in meta["preprocessing"]
    pixels = np.random.default_rng(1).integers(0, 256, (3, 160, 224, 3)).astype(np.float32)
    x = ((pixels - json.loads(meta["mean"])) / json.loads(meta["std"])).transpose(0, 3, 1, 2).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    model, _ = load_model(unet_run)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 4, 160, 224)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_torchscript_exporter_is_the_fallback_when_torch_export_fails(unet_run, tmp_path, monkeypatch):
    original = torch.onnx.export

    def dynamo_fails(*args, dynamo: bool = True, **kwargs):
        if dynamo:
            raise RuntimeError("cannot trace this\nsecond line")
        return original(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    report = export_onnx(unet_run, tmp_path / "m.onnx", height=64)
    assert report.exporter == "torchscript" and report.fallback_reason == "RuntimeError: cannot trace this"
    assert report.input_shape == ["batch", 3, "height", "width"] and len(report.parity) == 2
    assert all(p.max_abs_diff <= 1e-4 for p in report.parity)
    assert "the dynamo exporter failed: RuntimeError: cannot trace this" in report.summary()


def test_parity_failure_names_the_size_and_the_difference(unet_onnx, unet_run):
    _, out = unet_onnx
    model, _ = load_model(unet_run)
    with torch.no_grad():
        model.segmentation_head[0].bias.add_(0.01)
    with pytest.raises(ModelError, match=r"2 x 3 x 64 x 96 input: max \|diff\| = 1\.00e-02 > atol 0\.0001"):
        check_parity(out, model, [(2, 3, 64, 96)])


def test_existing_output_is_refused_unless_overwrite(unet_run, tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(DataError, match=rf"{re.escape(str(out))} already exists; pass --overwrite"):
        export_onnx(unet_run, out)
    assert out.read_bytes() == b"keep me"
    report = export_onnx(unet_run, out, height=64, dynamic=False, overwrite=True)
    assert onnx.load(str(out)).graph.input[0].name == "input" and report.parity[0].max_abs_diff <= 1e-4


def test_size_must_be_a_multiple_of_the_stride(unet_run, tmp_path):
    with pytest.raises(ModelError, match="not a multiple of the model's input stride 32"):
        export_onnx(unet_run, tmp_path / "m.onnx", height=100, dynamic=False)
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_prints_shapes_and_parity(unet_run, tmp_path, capsys):
    out = tmp_path / "static.onnx"
    assert main(["export", str(unet_run), "-o", str(out), "--static", "--size", "64x96", "--opset", "18"]) == 0
    text = capsys.readouterr().out
    assert f"wrote        : {out}" in text and "(opset 18)" in text
    assert "input        : input float32 1 x 3 x 64 x 96" in text and "logits float32 1 x 4 x 64 x 96" in text
    assert "parity       : 1 x 3 x 64 x 96: max |onnx - torch| = " in text and "100.00 % of pixels" in text
    assert main(["export", str(unet_run), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_export_of_a_missing_model_is_a_clean_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "no_run"), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segwise export: error: ") and "no_run" in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_export_help_lists_flags(capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--opset", "--size", "--static", "--no-check", "--overwrite"):
        assert flag in text


@pytest.mark.slow
def test_adaptive_pooling_graph_is_refused_dynamic_and_exported_static(tmp_path):
    run = save_run(tmp_path, "pspnet")
    with pytest.raises(ModelError, match="export with --static"):
        export_onnx(run, tmp_path / "m.onnx", height=64)
    assert not (tmp_path / "m.onnx").exists()
    report = export_onnx(run, tmp_path / "m.onnx", height=64, dynamic=False)
    assert report.parity[0].max_abs_diff <= 1e-4
