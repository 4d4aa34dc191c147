"""End to end on real pixels (the synthetic set): training learns, resume is exact, eval/predict use the run alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import lightning as L
import pytest
import torch
import yaml

from segwise.data.io import read_mask, write_png
from segwise.data.synthetic import make_synthetic_dataset
from segwise.errors import CheckpointError, DataError, TrainingError
from segwise.tasks.semantic.evaluate import evaluate
from segwise.tasks.semantic.predict import predict
from segwise.tasks.semantic.train import train
from tests.helpers import quick_config

CHANCE_MIOU = 0.25  # 4 classes; predicting only the background scores ≈ 0.2


@pytest.fixture(scope="module")
def trained_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small U-Net trained for a few epochs on the CPU (shared by the eval/predict tests)."""
    root = make_synthetic_dataset(tmp_path_factory.mktemp("learn"), num_train=48, num_val=12, num_test=6,
                                  size=96, seed=5)
    config = quick_config(root, tmp_path_factory.mktemp("runs"), "learn", "trainer.max_epochs=12",
                          "optimizer.lr=0.003", "loss.name=ce + 0.5*dice", "data.batch_size=8",
                          "model.args={decoder_channels: [64, 32, 16, 16, 8]}", "scheduler.warmup_steps=6",
                          "data.vflip=true")
    return train(config)


def test_training_beats_chance_by_far(trained_run: Path) -> None:
    """mIoU of the exported best model on held-out test images (measured ≈ 0.8 on this set)."""
    metrics = evaluate(trained_run, _data_root(trained_run) / "test", trained_run / "eval_test")
    assert metrics["miou"] > 3 * CHANCE_MIOU - 0.1, metrics["miou"]
    assert metrics["pixel_accuracy"] > 0.85


def _data_root(run_dir: Path) -> Path:
    return Path(yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["root"])


def test_run_directory_holds_everything(trained_run: Path) -> None:
    for name in ("config.yaml", "dataset_stats.yaml", "model.safetensors", "model.yaml", "checkpoints/last.ckpt",
                 "checkpoints/best.ckpt"):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    spec = yaml.safe_load((trained_run / "model.yaml").read_text())
    assert spec["class_names"] == ["background", "disc", "polygon", "line"]
    assert spec["in_channels"] == 3 and len(spec["mean"]) == 3


def test_tensorboard_has_metrics_lr_and_images(trained_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained_run / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "val/miou", "val/loss", "val/fwiou"} <= set(scalars)
    assert any(tag.startswith("lr-") for tag in scalars)
    assert any(tag.startswith("val_worst/") for tag in events.Tags()["images"])
    assert any(tag.startswith("val_images/") for tag in events.Tags()["images"])


def test_eval_writes_table_files_plots_and_predictions(trained_run: Path, tmp_path: Path) -> None:
    metrics = evaluate(trained_run / "checkpoints" / "best.ckpt", _data_root(trained_run) / "val", tmp_path,
                       save={"index", "color", "probs"}, plots=3)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["miou"] == pytest.approx(metrics["miou"])
    assert "miou" in (tmp_path / "metrics.csv").read_text()
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3
    names = sorted(p.stem for p in (tmp_path / "predictions" / "index").glob("*.png"))
    assert len(names) == 12
    probs = np.load(tmp_path / "predictions" / "probs" / f"{names[0]}.npy")
    assert probs.shape[0] == 4 and np.allclose(probs.astype(np.float32).sum(0), 1, atol=1e-2)


def test_predict_any_size_from_run_directory(trained_run: Path, tmp_path: Path) -> None:
    """An odd-sized input (not a multiple of 32) comes back at its own size."""
    image = (np.random.default_rng(0).random((70, 133, 3)) * 255).astype(np.uint8)
    write_png(tmp_path / "in" / "odd.png", image)
    written = predict(trained_run, tmp_path / "in", tmp_path / "out")
    assert read_mask(written[0]).shape == (70, 133)
    assert (tmp_path / "out" / "overlay" / "odd.png").is_file()
    assert (tmp_path / "out" / "color" / "odd.png").is_file()


def test_resume_with_other_classes_is_refused(trained_run: Path, synthetic_root: Path) -> None:
    five = "data.palette=[[0,0,0],[9,9,9],[99,9,9],[9,99,9],[9,9,99]]"
    config = quick_config(_data_root(trained_run), trained_run.parent, "learn", "data.num_classes=5", five,
                          "data.class_names=[a,b,c,d,e]", "trainer.max_epochs=13")
    with pytest.raises(CheckpointError, match="num_classes"):
        train(config)


def test_eval_on_data_with_other_channels_is_refused(trained_run: Path, tmp_path: Path) -> None:
    image = np.zeros((32, 32, 4), np.uint8)
    write_png(tmp_path / "images" / "a.png", image)
    write_png(tmp_path / "masks" / "a.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(CheckpointError, match="channels"):
        evaluate(trained_run, tmp_path, tmp_path / "out")


def test_batch_of_one_and_odd_sized_data(tmp_path: Path) -> None:
    """The smp trainer breaks on these: 5 odd-sized images, batch 2 (last batch of 1) and a model with global
    pooling + BN."""
    root = make_synthetic_dataset(tmp_path / "data", num_train=5, num_val=3, num_test=1, size=(45, 77), seed=2)
    for batch in (1, 2):
        config = quick_config(root, tmp_path / "runs", f"odd{batch}", "model.name=deeplabv3plus",
                              f"data.batch_size={batch}", "trainer.max_epochs=1", "data.val_batch_size=2")
        run = train(config)
        assert (run / "model.safetensors").is_file()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(synthetic_root: Path, tmp_path: Path) -> None:
    config = quick_config(synthetic_root, tmp_path, "nan", "optimizer.name=SGD", "optimizer.lr=1e12",
                          "optimizer.weight_decay=0", "trainer.checkpoint_every_steps=1", "trainer.max_epochs=5",
                          "scheduler.name=constant", "data.val_split=null")
    with pytest.raises(TrainingError, match=r"non-finite training loss .* at global step (\d+)"):
        train(config)
    checkpoint = torch.load(tmp_path / "nan" / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import lightning as L
    from segwise.tasks.semantic.train import train
    from tests.helpers import quick_config

    class KillAt(L.Callback):
        def __init__(self, step):
            self.step = step
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == self.step:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, like a crash or an OOM kill

    root, log_dir, name, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    config = quick_config(root, log_dir, name, "trainer.max_steps=10", "trainer.checkpoint_every_steps=1",
                          "data.augment=medium", "data.num_workers=1", "data.val_split=null")
    train(config, [KillAt(kill_at)] if kill_at else [])
""")


def _run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", KILL_SCRIPT, *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(synthetic_root: Path, tmp_path: Path) -> None:
    """SIGKILL in the middle of epoch 2 (24 images / batch 4 = 6 steps per epoch; the last checkpoint is step 7's,
    since ModelCheckpoint runs after the killing callback), resume, compare bit for bit."""
    assert _run_script(str(synthetic_root), str(tmp_path), "straight", "0").returncode == 0
    killed = _run_script(str(synthetic_root), str(tmp_path), "killed", "8")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert torch.load(tmp_path / "killed/checkpoints/last.ckpt", weights_only=True)["global_step"] == 7
    resumed = _run_script(str(synthetic_root), str(tmp_path), "killed", "0")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr + resumed.stdout and "killed/checkpoints/last.ckpt" in resumed.stdout
    straight = torch.load(tmp_path / "straight/checkpoints/last.ckpt", weights_only=True)
    again = torch.load(tmp_path / "killed/checkpoints/last.ckpt", weights_only=True)
    assert straight["global_step"] == again["global_step"] == 10
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, again["state_dict"][key]), key


@pytest.mark.slow
def test_ddp_two_cpu_processes(synthetic_root: Path, tmp_path: Path) -> None:
    """`--devices 2` on the CPU runs two gloo processes; both shard the data, the run finishes with a model and
    says so once (rank 0), without Lightning's start-up lines."""
    result = subprocess.run(
        [sys.executable, "-m", "segwise", "train", str(synthetic_root), "--cpu", "--devices", "2", "--steps", "4",
         "--name", "ddp", "--log-dir", str(tmp_path), "-b", "2", "-w", "0", "--encoder", "resnet18",
         "--set", "trainer.progress_bar=false"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "training 4 steps on 2 cpu processes (DDP)" in result.stdout
    assert result.stdout.count("run directory") == 1 and "GPU available" not in output
    assert (tmp_path / "ddp" / "model.safetensors").is_file()
    assert torch.load(tmp_path / "ddp/checkpoints/last.ckpt", weights_only=True)["global_step"] == 4


def test_invalid_data_is_reported_before_training(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "data", num_train=4, num_val=2, num_test=1, size=32, seed=0)
    write_png(root / "train" / "masks" / "train_0001.png", np.full((32, 32), 9, np.uint8))
    (root / "val" / "masks" / "val_0000.png").unlink()
    config = quick_config(root, tmp_path / "runs", "bad")
    with pytest.raises(DataError) as error:
        train(config)
    assert "val_0000" in str(error.value) or "train_0001" in str(error.value)
    assert not (tmp_path / "runs" / "bad" / "checkpoints").exists()


def test_extra_channels_and_extra_validation_sets(tmp_path: Path) -> None:
    """An extra 'nir' plane per image becomes a 4th input channel; an extra val split logs under its own name."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = make_synthetic_dataset(tmp_path / "data", num_train=6, num_val=3, num_test=3, size=64, seed=4)
    for split in ("train", "val", "test"):
        for image in (root / split / "images").glob("*.png"):
            plane = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
            write_png(root / split / "nir" / image.name, plane)
    config = quick_config(root, tmp_path / "runs", "nir", "data.extra_channels=[nir]", "trainer.max_epochs=2",
                          "data.extra_val_splits=[test]", "data.extra_val_every=2")
    run = train(config)
    assert yaml.safe_load((run / "model.yaml").read_text())["in_channels"] == 4
    scalars = EventAccumulator(str(run / "tensorboard")).Reload().Tags()["scalars"]
    assert "val_test/miou" in scalars and "val/miou" in scalars
    written = predict(run, root / "test", tmp_path / "pred")
    assert len(written) == 3
    with pytest.raises(DataError, match="nir"):
        predict(run, next((root / "test" / "images").glob("*.png")), tmp_path / "pred2")


def test_binary_masks_and_threshold(tmp_path: Path) -> None:
    """0/255 masks with data.binary train a two-class model; eval --threshold moves the decision boundary."""
    root = make_synthetic_dataset(tmp_path / "data", num_train=6, num_val=2, num_test=2, size=64, seed=6)
    (root / "dataset.yaml").unlink()
    for mask_path in root.glob("*/masks/*.png"):
        write_png(mask_path, np.where(read_mask(mask_path) > 0, 255, 0).astype(np.uint8))
    run = train(quick_config(root, tmp_path / "runs", "bin", "data.binary=true", "trainer.max_epochs=1"))
    assert yaml.safe_load((run / "model.yaml").read_text())["num_classes"] == 2
    everything = evaluate(run, root / "test", tmp_path / "all", threshold=0.0)
    nothing = evaluate(run, root / "test", tmp_path / "none", threshold=1.01)
    assert everything["per_class"][1]["recall"] == 1.0
    assert nothing["per_class"][0]["recall"] == 1.0


class _Killed(Exception):
    pass


class _StopAfter(L.Callback):
    """Stands in for a kill: stops the process's training right after step `step`'s checkpoint was written
    (ModelCheckpoint runs last among the callbacks of a batch, so the stop comes at the next batch's start)."""

    def __init__(self, step: int, trained: list[int]) -> None:
        self.step, self.trained = step, trained

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise _Killed

    def on_train_batch_end(self, trainer, *args) -> None:
        self.trained.append(trainer.global_step)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_kills_inside_epochs_resume_to_the_same_weights_bit_for_bit(workers: int, tmp_path: Path) -> None:
    """12 images, batch 3: 4 batches an epoch, 3 epochs. Killed after steps 2, 5 and 9 (all inside an epoch), each
    time resumed with the same command: every batch is trained once, in the uninterrupted order, and the final
    weights equal the uninterrupted run's bit for bit (augmentation on)."""
    root = make_synthetic_dataset(tmp_path / "data", num_train=12, num_val=2, num_test=1, size=32, seed=0)

    def run(name: str, stop_after: int | None, trained: list[int]) -> None:
        config = quick_config(root, tmp_path / "runs", name, "model.name=enet", "model.encoder=null",
                              "trainer.max_epochs=3", "data.batch_size=3", f"data.num_workers={workers}",
                              "trainer.checkpoint_every_steps=1", "trainer.seed=7", "data.val_split=null",
                              "data.augment=medium")
        callbacks = [_StopAfter(stop_after if stop_after is not None else -1, trained)]
        try:
            train(config, callbacks)
        except _Killed:
            pass

    straight: list[int] = []
    run("straight", None, straight)
    resumed: list[int] = []
    for stop_after in (2, 5, 9, None):
        run("killed", stop_after, resumed)
    assert straight == resumed == list(range(1, 13))  # each optimizer step once: nothing repeated, nothing skipped
    a = torch.load(tmp_path / "runs/straight/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "runs/killed/checkpoints/last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_max_time_stops_training_validated_and_checkpointed(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    """`--max-time`: a 1000-epoch run stops after its time, with a validation and last.ckpt at the step it
    stopped (what `train --auto --budget` relies on)."""
    from segwise.cli import main

    assert main(["train", str(synthetic_root), "--epochs", "1000", "--max-time", "4s", "--cpu", "-w", "0",
                 "--encoder", "resnet18", "--log-dir", str(tmp_path), "--name", "timed",
                 "--set", "trainer.progress_bar=false"]) == 0
    assert "1000 epochs or 4.0 s of training, whichever ends first" in capsys.readouterr().out
    run = tmp_path / "timed"
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_time"] == 4.0
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert 0 < last["global_step"] and last["epoch"] < 999
    scores = (run / "val_per_epoch.csv").read_text().splitlines()
    assert len(scores) >= 2  # a header and the validation made when time ran out
    assert (run / "model.safetensors").is_file()


def test_max_time_must_be_a_duration(synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"trainer\.max_time.*'soon' is not a duration: give e\.g\. 30m"):
        quick_config(synthetic_root, tmp_path, "x", "trainer.max_time=soon")
