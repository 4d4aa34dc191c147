"""`segwise convert smp`: smp models trained by pytorch-segmentation's smp mode or by the smp trainer become
segwise runs whose probabilities equal the original model's; hostile files are refused without running."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from segwise.cli import main
from segwise.data.io import write_png
from segwise.data.transforms import normalize
from segwise.inference import Predictor
from segwise.models import input_stride
from segwise.models.spec import load_model

pytestmark = pytest.mark.usefixtures("one_thread")
ENCODER = "resnet18"


def _image(channels: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (45, 70, channels), dtype=np.uint8)


def _reference(model: torch.nn.Module, image: np.ndarray, mean, std) -> torch.Tensor:
    """The original model on the same normalised input, zero-padded to its stride (segwise crops it back)."""
    x = torch.from_numpy(normalize(image, mean, std).transpose(2, 0, 1).copy())[None]
    stride = input_stride(model)
    padded = torch.nn.functional.pad(x, (0, -70 % stride, 0, -45 % stride))
    with torch.no_grad():
        return model.eval()(padded)[0, :, :45, :70]


def _probs(run: Path, image: np.ndarray) -> np.ndarray:
    model, spec = load_model(run)
    return Predictor(model, spec, "cpu").predict_proba(image)


def test_an_smp_state_dict_with_a_softmax_head(tmp_path: Path):
    """pytorch-segmentation's smp mode: a plain state_dict of a 4-class softmax Unet."""
    torch.manual_seed(0)
    model = smp.Unet(ENCODER, encoder_weights=None, classes=4)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3},
               tmp_path / "best_model.pth")
    assert main(["convert", "smp", str(tmp_path / "best_model.pth"), "-o", str(tmp_path / "run"), "--arch", "Unet",
                 "--encoder", ENCODER, "--softmax"]) == 0
    image = _image()
    expected = _reference(model, image, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]).softmax(0).numpy()
    np.testing.assert_allclose(_probs(tmp_path / "run", image), expected, atol=1e-5)


def test_an_smp_trainer_checkpoint_with_one_sigmoid_logit(tmp_path: Path):
    """The smp trainer's dict (model/optimizer state, names, class list, numpy mean/std): P(class 1) = σ(z)."""
    torch.manual_seed(1)
    model = smp.DeepLabV3Plus(ENCODER, encoder_weights=None, classes=1, in_channels=4)
    mean, std = np.array([90.0, 100.0, 110.0, 50.0]), np.array([40.0, 45.0, 50.0, 20.0])
    optimizer = torch.optim.Adam(model.parameters())
    torch.save({"epoch": 7, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "loss": 0.2,
                "model_name": "deeplabv3+", "encoder_name": ENCODER, "encoder_weights": "imagenet",
                "activation": "sigmoid", "max_score": 0.8, "mean_var": [mean, std], "class_list": [64],
                "add_dirs": ["nir"], "device": "cuda"}, tmp_path / "last_checkpoint")
    assert main(["convert", "smp", str(tmp_path / "last_checkpoint"), "-o", str(tmp_path / "run")]) == 0
    image = _image(4)
    z = _reference(model, image, mean, std)[0]
    probs = _probs(tmp_path / "run", image)
    np.testing.assert_allclose(probs[1], torch.sigmoid(z).numpy(), atol=1e-5)
    _, spec = load_model(tmp_path / "run")
    assert (spec.name, spec.num_classes, spec.extra_channels, spec.class_values) == ("deeplabv3plus", 2, ["nir"],
                                                                                     [0, 64])
    assert spec.unmapped == "background"  # the smp trainer: every value but 64 is background


def test_a_multiclass_sigmoid_head_keeps_its_labels_with_background_first(tmp_path: Path):
    torch.manual_seed(2)
    model = smp.Unet(ENCODER, encoder_weights=None, classes=3)  # classes 10 and 20, background channel last
    torch.save({"model": model.state_dict(), "model_name": "unet", "encoder_name": ENCODER,
                "class_list": [10, 20], "mean_var": [np.full(3, 100.0), np.full(3, 50.0)]}, tmp_path / "c.pth")
    assert main(["convert", "smp", str(tmp_path / "c.pth"), "-o", str(tmp_path / "run")]) == 0
    image = _image()
    logits = _reference(model, image, [100.0] * 3, [50.0] * 3)
    expected = torch.cat([logits[2:], logits[:2]]).argmax(0).numpy()  # background first
    np.testing.assert_array_equal(_probs(tmp_path / "run", image).argmax(0), expected)
    _, spec = load_model(tmp_path / "run")
    assert spec.class_values == [0, 10, 20] and spec.class_names == ["background", "class_10", "class_20"]


def test_the_converted_run_predicts_from_the_command_line(tmp_path: Path):
    torch.manual_seed(3)
    model = smp.Unet(ENCODER, encoder_weights=None, classes=1)
    torch.save({"model": model.state_dict(), "model_name": "unet", "encoder_name": ENCODER, "class_list": [255],
                "mean_var": [np.full(3, 100.0), np.full(3, 50.0)]}, tmp_path / "x.pth")
    assert main(["convert", "smp", str(tmp_path / "x.pth"), "-o", str(tmp_path / "run")]) == 0
    write_png(tmp_path / "images" / "a.png", _image())
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "images"), "-o", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "index" / "a.png").is_file()


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['SEGWISE_TEST_MARKER']}",))


@pytest.mark.parametrize("hostile", ["payload", "whole model"])
def test_a_checkpoint_that_needs_pickled_code_is_refused_and_nothing_runs(hostile: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch, capsys):
    marker = tmp_path / "payload_ran"
    monkeypatch.setenv("SEGWISE_TEST_MARKER", str(marker))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    model = smp.Unet(ENCODER, encoder_weights=None, classes=1)
    content = {"model": model.state_dict(), "extra": _Payload()} if hostile == "payload" else model
    torch.save(content, tmp_path / "bad.pth")
    assert main(["convert", "smp", str(tmp_path / "bad.pth"), "-o", str(tmp_path / "run"), "--arch", "unet",
                 "--encoder", ENCODER]) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and "never unpickles" in err and "torch.save(model.state_dict()" in err
    assert not (tmp_path / "run" / "model.yaml").exists()


def test_missing_names_and_wrong_architectures_are_one_line_errors(tmp_path: Path, capsys):
    model = smp.Unet(ENCODER, encoder_weights=None, classes=2)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    assert main(["convert", "smp", str(tmp_path / "w.pth"), "-o", str(tmp_path / "r")]) == 2
    assert "--arch (e.g. unet) and --encoder" in capsys.readouterr().err
    assert main(["convert", "smp", str(tmp_path / "w.pth"), "-o", str(tmp_path / "r"), "--arch", "fpn",
                 "--encoder", ENCODER, "--softmax"]) == 2
    assert "does not fit fpn/resnet18" in capsys.readouterr().err
