"""What long commands show: progress lines on a log, one accurate closing line per command, a quiet training log
with the run's real length, `--epochs` winning over a config's `max_steps`, `--version` and `data --help`."""

from __future__ import annotations

import argparse
import logging
import re
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from segwise import progress
from segwise.cli import build_parser, main
from segwise.data.io import write_png
from segwise.models.spec import ModelSpec, save_model
from tests.helpers import write_geotiff

QUICK_TRAIN = ["--cpu", "-w", "0", "--encoder", "resnet18", "--set", "trainer.log_images=0", "--set",
               "trainer.log_worst_images=0"]


def test_track_on_a_log_ends_with_count_and_rate(capsys):
    assert list(progress.track(range(5), "counting", unit="things")) == [0, 1, 2, 3, 4]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(r"counting: 5 things in \d+\.\d s \([\d.]+ things/s\)\n", captured.err)


def test_progress_lines_on_a_log_and_silence_when_asked(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_SECONDS", 0.0)  # a line after every item
    with progress.progress(3, "windows of x.tif", "windows") as counter:
        for _ in range(3):
            counter.advance()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("windows of x.tif: 1/3 windows (") and " left)" in lines[0]
    assert len(lines) == 4 and lines[-1].startswith("windows of x.tif: 3 windows in ")
    list(progress.track(range(3), "hidden", enabled=False))
    monkeypatch.setenv("LOCAL_RANK", "1")  # an extra process of a DDP run: rank 0 reports
    list(progress.track(range(3), "rank 1"))
    progress.notice("skipped")
    assert capsys.readouterr().err == ""


def test_an_error_inside_the_loop_prints_no_final_line(capsys):
    with pytest.raises(ValueError):
        for item in progress.track([1, 2], "failing"):
            raise ValueError(item)
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained 4-class RGB model: enough for what predict and eval write."""
    spec = ModelSpec(name="unet", encoder="tu-test_resnet", args={"decoder_channels": [16, 8, 8, 8, 8]},
                     in_channels=3, num_classes=4, class_names=["a", "b", "c", "d"],
                     palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], mean=[100.0] * 3, std=[60.0] * 3)
    directory = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    save_model(spec.build(), spec, directory)
    return directory


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_predict_summary_names_what_was_written(model_dir, tmp_path, capsys, one_thread):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    pixels = (np.random.default_rng(0).random((3, 40, 48)) * 250).astype(np.uint8)
    write_png(inputs / "small.png", pixels.transpose(1, 2, 0))
    write_geotiff(inputs / "geo.tif", pixels, nodata=None)
    assert main(["predict", str(model_dir), str(inputs), "-o", str(out), "--device", "cpu", "--color"]) == 0
    captured = capsys.readouterr()
    assert _last_line(captured.out) == (f"predicted 2 image(s) into {out}: 1 into index/, color/, overlay/; "
                                        "1 streamed to GeoTIFF (<name>.tif, <name>_color.tif)")
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.*")} == {
        "index/small.png", "color/small.png", "overlay/small.png", "geo.tif", "geo_color.tif"}
    assert re.search(r"^predicting: 2 images in .* images/s\)$", captured.err, re.M)

    (inputs / "small.png").unlink()
    only_tiff = tmp_path / "only_tiff"
    assert main(["predict", str(model_dir), str(inputs), "-o", str(only_tiff), "--device", "cpu"]) == 0
    line = _last_line(capsys.readouterr().out)
    assert line == f"predicted 1 image(s) into {only_tiff}: 1 streamed to GeoTIFF (<name>.tif)"
    assert sorted(p.name for p in only_tiff.iterdir()) == ["geo.tif"]


def test_eval_summary_names_metrics_predictions_and_plots(model_dir, synthetic_root, tmp_path, capsys, one_thread):
    out = tmp_path / "eval"
    assert main(["eval", str(model_dir), str(synthetic_root / "val"), "-o", str(out), "--device", "cpu",
                 "--save", "index", "--plots", "2"]) == 0
    captured = capsys.readouterr()
    assert _last_line(captured.out) == (f"metrics written to {out}/metrics.json and metrics.csv; predictions in "
                                        f"{out}/predictions/ (index); plots of the worst images in {out}/plots/")
    assert len(list((out / "plots").iterdir())) == 2 and len(list((out / "predictions" / "index").iterdir())) == 8
    assert "evaluating: 8 images in " in captured.err and "checking val: 8 images in " in captured.err


def test_training_log_is_quiet_and_shows_the_real_length(synthetic_root, tmp_path, capsys, one_thread):
    """No Lightning boilerplate (its info lines go to its own loggers, its warnings through `warnings`, so both are
    recorded here) and no dependency deprecations; the bar counts the run's steps; a resume says so without a
    "checkpoint directory exists" warning; the closing lines come once."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    for logger in loggers:
        logger.addHandler(handler)
    outputs = []
    try:
        for steps in (2, 3):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert main(["train", str(synthetic_root), "--steps", str(steps), "--name", "quiet", "--log-dir",
                             str(tmp_path), "-b", "8", *QUICK_TRAIN]) == 0
            messages = [record.getMessage() for record in records] + [str(w.message) for w in caught]
            outputs.append(capsys.readouterr().out + "\n".join(messages))
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    for output in outputs:
        for noise in ("GPU available", "TPU", "Tip", "litlogger", "LeafSpec", "deprecated", "exists and is not empty",
                      "logging interval"):
            assert noise not in output, (noise, output)
        assert not re.search(r"Epoch \d+/-", output) and output.count("run directory") == 1
    first, resumed = outputs
    assert "training 2 steps on cpu" in first and "step 2/2" in first
    assert "step 3/3" in resumed and f"resuming from {tmp_path / 'quiet' / 'checkpoints' / 'last.ckpt'}" in resumed


def test_epochs_flag_wins_over_a_config_max_steps(synthetic_root, tmp_path, capsys, one_thread):
    config = tmp_path / "steps.yaml"
    config.write_text("trainer:\n  max_steps: 50\n")
    assert main(["train", str(synthetic_root), "--config", str(config), "-e", "1", "--name", "e1", "--log-dir",
                 str(tmp_path), "-b", "8", "--set", "trainer.progress_bar=false", *QUICK_TRAIN]) == 0
    assert "training 1 epochs on cpu" in capsys.readouterr().out
    trainer = yaml.safe_load((tmp_path / "e1" / "config.yaml").read_text())["trainer"]
    assert trainer["max_epochs"] == 1 and trainer["max_steps"] is None
    last = torch.load(tmp_path / "e1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3  # 24 training images in batches of 8: one epoch, not 50 steps


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"segwise {metadata.version('segwise')}"


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))


def test_data_help_lists_every_data_subcommand(capsys):
    data = _subcommands(_subcommands(build_parser()).choices["data"])
    subcommands = {choice.dest: choice.help for choice in data._choices_actions}
    assert set(subcommands) == set(data.choices) and {"check", "synth", "tile"} <= set(subcommands)
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, line in subcommands.items():
        assert line and f"{name} {' '.join(line.split())}" in text
