"""Bad input of every kind ends in one paragraph on stderr naming the file or key, and exit code 2, never a
traceback (issue 12, "No tracebacks"): damaged YAML, values that used to pass validation and fail later, bad data,
hostile sketch files, inference options, and outputs that cannot be written. Each case fails before any work."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from segwise.cli import main
from segwise.data.synthetic import make_synthetic_dataset
from segwise.models.spec import ModelSpec, save_model



def fails_cleanly(argv: list[str], capsys: pytest.CaptureFixture, *named: str) -> str:
    """Run `segwise argv`: exit code 2 and one paragraph on stderr that names each of `named`, no traceback."""
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, err)
    assert "Traceback" not in captured.err + captured.out
    message = err[err.index(f"segwise {argv[0]}: error:"):]  # progress lines of the work before it may precede it
    assert "\n\n" not in message, message
    for text in named:
        assert text in message, (text, message)
    return message


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A 32-pixel synthetic set (2 train, 1 val, 1 test image; dataset.yaml with 4 class names)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), num_train=2, num_val=1, num_test=1, size=32,
                                  seed=0)


@pytest.fixture
def data_copy(data_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(data_root, tmp_path / "data"))


@pytest.fixture(scope="module")
def model_run(tmp_path_factory) -> Path:
    """An untrained tiny U-Net (timm's test ResNet) saved as a run directory."""
    spec = ModelSpec(name="unet", encoder="tu-test_resnet", args={"decoder_channels": [8, 8, 8, 8, 8]},
                     in_channels=3, num_classes=4, class_names=["bg", "a", "b", "c"],
                     palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], mean=[120.0] * 3, std=[60.0] * 3)
    run = tmp_path_factory.mktemp("run")
    save_model(spec.build(), spec, run)
    return run


# ---- config files: --config and dataset.yaml ------------------------------------------------------------------
DAMAGED_YAML = {
    "syntax error": (b"data: [\n  num_classes: 3\n", "not valid YAML"),
    "not UTF-8": (b"data:\n  format: \xff\xfe\x80\n", "not UTF-8"),
    "a list, not a mapping": (b"- data\n- model\n", "mapping"),
    "num_classes: four": (b"num_classes: four\n", "num_classes = 'four'"),
    "a section that is a list": (b"class_names: 3\n", "class_names = 3"),
    "5000 nested brackets": (b"data: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests too deeply"),
}


@pytest.mark.parametrize("where", ["--config", "dataset.yaml"])
@pytest.mark.parametrize("case", list(DAMAGED_YAML))
def test_damaged_yaml_names_the_file(case: str, where: str, data_copy: Path, tmp_path: Path, capsys):
    content, message = DAMAGED_YAML[case]
    if where == "--config" and case in ("num_classes: four", "a section that is a list"):
        content = b"data:\n  " + content  # the same value inside the data section of a config file
    path = tmp_path / "config.yaml" if where == "--config" else data_copy / "dataset.yaml"
    path.write_bytes(content)
    argv = ["data", "check", str(data_copy)] + (["--config", str(path)] if where == "--config" else [])
    fails_cleanly(argv, capsys, str(path), message)


# ---- values that used to pass validation and fail later ---------------------------------------------------------
TRAIN_VALUES = {
    "--accelerator gpu without a GPU": (["--accelerator", "gpu"], "trainer.accelerator = gpu"),
    "--devices 0": (["--devices", "0"], "trainer.devices = 0"),
    "--devices -1 on the CPU": (["--devices", "-1"], "trainer.devices = -1"),
    "devices abc": (["--set", "trainer.devices=abc"], "trainer.devices = 'abc'"),
    "betas out of range": (["--set", "optimizer.args.betas=[2,3]"], "'betas': [2, 3]"),
    "negative seed": (["--seed", "-1"], "trainer.seed = -1"),
    "seed over 2**32": (["--seed", str(2**32)], "trainer.seed = 4294967296"),
    "no max_epochs, no max_steps": (["--set", "trainer.max_epochs=null", "--set", "trainer.max_steps=null"],
                                    "trainer.max_epochs"),
    "infinite lr": (["--set", "optimizer.lr=.inf"], "optimizer.lr = inf"),
    "run name leaving --log-dir": (["--name", "../../escape"], "run.name = '../../escape'"),
    "data.mean of the wrong length": (["--set", "data.mean=[1,2]", "--set", "data.std=[1,1]"], "data.mean"),
    "duplicate class names": (["--classes", "a,a,b,c"], "data.class_names"),
}

CPU_ONLY = ("--accelerator gpu without a GPU", "--devices -1 on the CPU")


@pytest.mark.parametrize("case", list(TRAIN_VALUES))
def test_values_that_would_fail_later_stop_training_before_it_starts(case: str, data_root: Path, tmp_path: Path,
                                                                      capsys):
    flags, named = TRAIN_VALUES[case]
    if case in CPU_ONLY and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    runs = tmp_path / "runs"
    fails_cleanly(["train", str(data_root), "--log-dir", str(runs), "--steps", "1", "-w", "0", *flags], capsys,
                  named)
    assert not runs.exists() and not (tmp_path.parent / "escape").exists()  # no run was started anywhere


# ---- data -------------------------------------------------------------------------------------------------------
def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_png_header(data: Path) -> tuple[str, Path]:
    """A small PNG whose header claims 100 000 × 100 000 pixels."""
    path = data / "train" / "images" / "train_0000.png"
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + _png_chunk(b"IEND", b""))
    return "check", path


def nan_in_float_image(data: Path) -> tuple[str, Path]:
    """Float32 TIFF images, one with a NaN pixel."""
    rng = np.random.default_rng(0)
    for path in data.glob("*/images/*.png"):
        pixels = rng.random((32, 32, 3), dtype=np.float32)
        if path.name == "train_0001.png":
            pixels[3, 4, 0] = np.nan
        path.unlink()
        tifffile.imwrite(path.with_suffix(".tif"), pixels)
    return "train", data / "train" / "images" / "train_0001.tif"


def validation_bands_differ(data: Path) -> tuple[str, Path]:
    """The validation images have 4 bands, the training images 3."""
    for path in (data / "val" / "images").glob("*.png"):
        path.unlink()
        tifffile.imwrite(path.with_suffix(".tif"), np.zeros((32, 32, 4), np.uint8))
    return "train", data / "val" / "images" / "val_0000.tif"


def multi_page_mask(data: Path) -> tuple[str, Path]:
    """A mask TIFF of three pages (it used to be read as an RGB mask)."""
    path = data / "train" / "masks" / "train_0000.png"
    path.unlink()
    pages = np.zeros((3, 32, 32), np.uint8)
    pages[1] = 1
    tifffile.imwrite(path.with_suffix(".tif"), pages)
    return "check", path.with_suffix(".tif")


@pytest.mark.parametrize("damage", [huge_png_header, nan_in_float_image, validation_bands_differ, multi_page_mask],
                         ids=lambda f: f.__name__)
def test_bad_data_is_named_before_training(damage: Callable[[Path], tuple[str, Path]], data_copy: Path,
                                           tmp_path: Path, capsys):
    command, bad_file = damage(data_copy)
    runs = tmp_path / "runs"
    argv = (["data", "check", str(data_copy)] if command == "check" else
            ["train", str(data_copy), "--log-dir", str(runs), "--steps", "1", "-w", "0", "--num-classes", "4"])
    fails_cleanly(argv, capsys, bad_file.name)
    assert not runs.exists()


def test_data_check_of_a_missing_folder(capsys):
    fails_cleanly(["data", "check", "/no/such/dir"], capsys, "/no/such/dir")


# ---- sketch files -----------------------------------------------------------------------------------------------
HUGE = "1" + "0" * 400
SKETCH_FILES = {
    "deeply nested ndjson": ("deep.ndjson", '{"drawing": ' + "[" * 5000 + "]" * 5000 + "}\n"),
    "deeply nested SPG JSON": ("deep.json", '{"train_data": ' + "[" * 5000 + "]" * 5000 + "}\n"),
    "integer of 10**400": ("big.ndjson", json.dumps({"drawing": [[[1, 2], [3, 4], [0, 0]]]}).replace("4", HUGE)),
    "integer of 4400 digits": ("long.ndjson", '{"drawing": [[[1, 2], [3, 1' + "0" * 4400 + '], [0, 0]]]}\n'),
    "SPG point of 10**400": ("big.json", '{"train_data": [[[1, ' + HUGE + ", 1, 0]]]}\n"),
}


@pytest.mark.parametrize("case", list(SKETCH_FILES))
def test_hostile_sketch_files_are_named(case: str, tmp_path: Path, capsys):
    name, text = SKETCH_FILES[case]
    path = tmp_path / name
    path.write_text(text)
    fails_cleanly(["sketch", "prepare", str(path), "-o", str(tmp_path / "out"), "--splits", "test"], capsys, name)


# ---- inference --------------------------------------------------------------------------------------------------
def _predict(run: Path, image: Path, out: Path, *flags: str) -> list[str]:
    return ["predict", str(run), str(image), "-o", str(out), "--device", "cpu", *flags]


INFERENCE = {
    "--scales nan": (lambda run, img, tmp: _predict(run, img, tmp / "out", "--scales", "nan"), "--scales"),
    "--scales 1000 over --max-pixels": (
        lambda run, img, tmp: _predict(run, img, tmp / "out", "--scales", "1000", "--max-pixels", "100000"),
        "--max-pixels 100,000"),
    "--rle naming a folder": (lambda run, img, tmp: _predict(run, img, tmp / "out", "--rle", str(tmp)), "--rle"),
    "unwritable output folder": (lambda run, img, tmp: _predict(run, img, tmp / "a_file" / "out"), "a_file"),
    "--device cuda without CUDA": (
        lambda run, img, tmp: _predict(run, img, tmp / "out")[:-1] + ["cuda"], "--device cuda"),
    "export --opset 1": (lambda run, img, tmp: ["export", str(run), "-o", str(tmp / "m.onnx"), "--opset", "1"],
                         "--opset 1"),
    "rle decode --shape beyond --max-pixels": (
        lambda run, img, tmp: ["rle", "decode", str(tmp / "ok.csv"), "--shape", "100000x100000", "-o", str(tmp)],
        "--shape 100000x100000"),
    "RLE name with NUL": (
        lambda run, img, tmp: ["rle", "decode", str(tmp / "nul.csv"), "--shape", "4", "-o", str(tmp)], "nul.csv"),
    "RLE name over 255 bytes": (
        lambda run, img, tmp: ["rle", "decode", str(tmp / "long.csv"), "--shape", "4", "-o", str(tmp)], "long.csv"),
}


@pytest.mark.parametrize("case", list(INFERENCE))
def test_inference_options_are_checked_before_the_work(case: str, model_run: Path, data_root: Path, tmp_path: Path,
                                                       capsys):
    if case.startswith("--device cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "ok.csv").write_text("a.png\t1 2\n")
    (tmp_path / "nul.csv").write_text("a\0b.png\t1 2\n")
    (tmp_path / "long.csv").write_text("a" * 300 + ".png\t1 2\n")
    make, named = INFERENCE[case]
    image = data_root / "test" / "images" / "test_0000.png"
    fails_cleanly(make(model_run, image, tmp_path), capsys, named)
    assert not (tmp_path / "out" / "index").exists()  # nothing was predicted


@pytest.mark.parametrize(("argv", "message"), [
    (["rle", "decode", "x.csv", "--shape", "-4", "-o", "out"], "--shape: '-4' is not a size"),
    (["rle", "decode", "x.csv", "--shape", "4", "-o", "out", "--max-pixels", "0"], "--max-pixels: '0' is not"),
    (["predict", "run", "x.png", "-o", "out", "--device", "tpu9"], "--device: 'tpu9' is not a torch device"),
    (["train", "data", "--devices", "abc"], "--devices: invalid int value: 'abc'"),
])
def test_malformed_flags_are_usage_errors(argv: list[str], message: str, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and "Traceback" not in err


def test_ctrl_c_during_predict_is_one_line(model_run: Path, data_root: Path, tmp_path: Path, capsys, monkeypatch):
    from segwise.inference.predictor import Predictor

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Predictor, "predict_proba_batch", interrupted)  # every image goes through it
    code = main(_predict(model_run, data_root / "test" / "images", tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("segwise predict: interrupted (Ctrl-C)")
