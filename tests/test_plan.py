"""`segwise plan` and `train --auto`: each rule on synthetic fingerprints, the fingerprint's mask measurements, the
rare-class crop sampler, and the commands on the synthetic set."""

from __future__ import annotations

import argparse
import re
from collections import Counter

import albumentations as A
import numpy as np
import pytest
import yaml

from segwise.cli import main
from segwise.cli.flags import duration, memory_size
from segwise.config import load_config
from segwise.data.transforms import apply_transform, build_train_transform, seed_transform
from segwise.data.validate import MaskShapes
from segwise.errors import ConfigError, TrainingError
from segwise.tasks.semantic import plan
from segwise.tasks.semantic.plan import (Fingerprint, augment_rule, batch_rule, crop_rule, loss_rule, model_rule,
                                         sampler_rule)

COLOUR_OPS = (A.RandomBrightnessContrast, A.RandomGamma, A.CLAHE, A.HueSaturationValue, A.RGBShift, A.FancyPCA)


def fingerprint(class_pixels=(600, 400), object_area=1600, channels=3, dtypes=("uint8",), side=1024,
                upper=None) -> Fingerprint:
    """20 images of side × side; 50 objects of `object_area` pixels in class 1."""
    pixels = np.asarray(class_pixels, np.int64)
    return Fingerprint(Counter({(side, side): 20}), channels, set(dtypes), [f"c{i}" for i in range(len(pixels))],
                       pixels, np.full(len(pixels), 20), {1: [object_area] * 50},
                       upper_half_pixels=None if upper is None else np.asarray(upper, np.int64))


def values(choices) -> dict:
    return {c.key: c.value for c in choices}


def test_tiny_objects_get_small_object_mining_and_a_larger_crop():
    tiny, medium = fingerprint(object_area=100), fingerprint(object_area=1600)  # 10 px and 40 px across
    assert crop_rule(tiny).value == 512 > crop_rule(medium).value == 256
    assert "som" in values(loss_rule(tiny))["loss.name"]
    assert "som" not in values(loss_rule(medium))["loss.name"]
    assert crop_rule(fingerprint(object_area=100, side=200)).value == 192  # never beyond the images, a multiple of 32
    assert crop_rule(fingerprint(object_area=120 ** 2)).value == 480  # large objects: 4 × their side


def test_one_rare_class_gets_dice_weights_and_the_sampler():
    rare = fingerprint(class_pixels=(900, 80, 20))  # class 2: 2 % of the pixels
    loss = values(loss_rule(rare))
    assert loss["loss.name"] == "ce + 0.5*dice"
    weights = loss["loss.class_weights"]
    assert weights[2] > weights[1] > weights[0] and all(0.25 <= w <= 10 for w in weights)
    sampler = values(sampler_rule(rare, 256))
    assert sampler["data.rare_classes"] == [2] and 0 < sampler["data.rare_class_crops"] <= 1
    balanced = fingerprint(class_pixels=(500, 300, 200))
    assert values(loss_rule(balanced)) == {"loss.name": "ce", "loss.class_weights": None}
    assert values(sampler_rule(balanced, 256)) == {"data.rare_class_crops": 0.0}


def test_16_bit_five_band_images_get_no_colour_ops():
    chosen = values(augment_rule(fingerprint(channels=5, dtypes=("uint16",))))
    assert chosen["data.augment"] == "safe" and chosen["data.hflip"] and chosen["data.vflip"]
    transform = build_train_transform(chosen["data.augment"], crop_size=32, hflip=True, vflip=True, num_channels=5)
    ops = [op for op in walk(transform)]
    assert not [op for op in ops if isinstance(op, COLOUR_OPS)]
    image = np.random.default_rng(0).integers(0, 65535, (48, 48, 5), dtype=np.uint16)
    out, mask = apply_transform(transform, image, np.zeros((48, 48), np.int64))
    assert out.shape == (32, 32, 5) and mask.shape == (32, 32)


def test_upright_scenes_get_hflip_and_scale_aerial_tiles_get_rotations():
    street = fingerprint(class_pixels=(500, 500), upper=(480, 20))  # class 0 (sky) above, class 1 (road) below
    chosen = values(augment_rule(street))
    assert (chosen["data.augment"], chosen["data.vflip"], chosen["data.scale_range"]) == ("none", False, [0.5, 2.0])
    aerial = values(augment_rule(fingerprint(class_pixels=(500, 500), upper=(240, 260))))
    assert aerial["data.augment"] == "safe" and aerial["data.vflip"]


def test_small_memory_gives_a_smaller_batch_and_accumulation():
    mib = 2 ** 20
    roomy = values(batch_rule(100 * mib, 200 * mib, 16 * 2 ** 30, 100))
    assert roomy == {"data.batch_size": 16, "trainer.accumulate": 1}
    small = values(batch_rule(100 * mib, 200 * mib, 700 * mib, 100))  # (700 - 100) / (200 × 1.5) = 2 samples
    assert small == {"data.batch_size": 2, "trainer.accumulate": 2}
    assert values(batch_rule(100 * mib, 200 * mib, 300 * mib, 100))["trainer.accumulate"] == 4
    assert values(batch_rule(0, mib, 2 ** 30, 3))["data.batch_size"] == 3  # never more than the images


def test_on_cuda_the_batch_is_searched_for_on_the_device(monkeypatch):
    """The memory estimate's batch is tried for real; out of memory, a binary search finds the largest that runs
    (a stand-in device that holds 5 samples: no GPU is needed to test the search)."""
    import torch

    tried = []

    def device_with_room_for_5(encoder, channels, classes, side, device, batch=2):
        tried.append(batch)
        if batch > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return plan.StepCost(0.1 / batch, 0, 0)

    monkeypatch.setattr(plan, "measure_step", device_with_room_for_5)
    assert plan.confirmed_step("resnet18", 3, 2, 256, "cuda", 16) == (5, plan.StepCost(0.02, 0, 0))
    assert tried[0] == 16 and 5 in tried and 6 in tried and len(tried) <= 5  # 16, 8, 4, 6, 5
    tried.clear()
    assert plan.confirmed_step("resnet18", 3, 2, 256, "cuda", 4)[0] == 4 and tried == [4]  # the estimate ran
    assert plan.confirmed_step("resnet18", 3, 2, 256, "cpu", 16) == (16, None)  # a CPU keeps the estimate
    monkeypatch.setattr(plan, "measure_step", lambda *args, **kw: (_ for _ in ()).throw(
        torch.cuda.OutOfMemoryError("CUDA out of memory")))
    with pytest.raises(TrainingError, match=r"one training sample of 256x256 px does not fit on cuda.*--memory"):
        plan.confirmed_step("resnet18", 3, 2, 256, "cuda", 8)


def test_the_budget_picks_the_largest_encoder_that_trains_long_enough():
    times = {"resnet18": 0.01, "resnet34": 0.02, "resnet50": 0.05}
    # 30 epochs × 100 images × measured time × STEP_OVERHEAD 1.5 within 80 % of the budget
    assert values(model_rule(times, 100, 3600))["model.encoder"] == "resnet50"  # 225 s ≤ 2880 s
    assert values(model_rule(times, 100, 150))["model.encoder"] == "resnet34"  # 90 s ≤ 120 s < 225 s
    assert values(model_rule(times, 100, 10))["model.encoder"] == "resnet18"  # none fits: the smallest
    epochs, limit = plan.length_rule(0.01, 100, 100)
    assert (epochs.value, limit.value) == (53, 100)  # 80 s / 0.015 s = 5333 samples


def test_a_short_budget_trades_crop_and_batch_for_steps():
    # 0.2 s per 256² sample × 1.5 = 0.3 s: 3 min × 80 % hold 480 samples, under 400 steps of 4
    smaller = plan.budget_crop_rule(256, 0.2, 180, floor=64)
    assert smaller.value == 128 and "halved" in smaller.why
    assert plan.budget_crop_rule(256, 0.2, 3600, floor=64) is None  # an hour holds 9600 samples
    assert plan.budget_crop_rule(64, 0.2, 180, floor=64) is None  # never under the floor (2 × the median object)
    assert plan.smallest_crop(fingerprint(object_area=100 ** 2)) == 224 and plan.smallest_crop(fingerprint()) == 96
    mib = 2 ** 20
    few = values(plan.batch_rule(100 * mib, 10 * mib, 16 * 2 ** 30, 100, samples=1200))
    assert (few["data.batch_size"], few["trainer.accumulate"]) == (3, 1)  # 1200 // 400 = 3, no accumulation
    many = values(plan.batch_rule(100 * mib, 10 * mib, 16 * 2 ** 30, 100, samples=100_000))
    assert many["data.batch_size"] == 16


def test_plan_shrinks_the_crop_for_a_short_budget(synthetic_root, monkeypatch):
    """With a step time that grows with the crop's area, a short budget halves the crop until the steps fit."""
    monkeypatch.setattr(plan, "ENCODERS", ("resnet18",))
    monkeypatch.setattr(plan, "crop_rule", lambda fp, max_side=512: plan.Choice("data.crop_size", 256, "test"))
    monkeypatch.setattr(plan, "measure_step", lambda encoder, channels, classes, side, device, batch=1:
                        plan.StepCost(0.3 * (side / 256) ** 2, 100 * 2 ** 20, 10 * 2 ** 20))
    config = load_config(None, [f"data.root={synthetic_root}"])
    short = values(plan.make_plan(config, 120, "cpu", 8 * 2 ** 30).choices)
    long = values(plan.make_plan(config, 7200, "cpu", 8 * 2 ** 30).choices)
    assert long["data.crop_size"] == 256 and short["data.crop_size"] < 256
    assert short["data.batch_size"] <= long["data.batch_size"]


def test_budget_and_memory_flags():
    assert (duration("30m"), duration("1h30m"), duration("90s"), duration("2")) == (1800, 5400, 90, 120)
    assert (memory_size("8GB"), memory_size("512MB"), memory_size("1.5g")) == (8 * 2 ** 30, 512 * 2 ** 20,
                                                                             int(1.5 * 2 ** 30))
    for bad, parse in (("soon", duration), ("0m", duration), ("8 bytes", memory_size)):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


def test_mask_shapes_measure_objects_borders_and_layout():
    mask = np.zeros((8, 8), np.int64)
    mask[0:2, 0:2] = 1  # a 4-pixel object in the upper half
    mask[5:8, 5:8] = 1  # a 9-pixel object in the lower half
    mask[:, 3] = 255  # a one-pixel unlabelled line between labelled pixels
    shapes = MaskShapes(2)
    shapes.add(mask, mask == 255)
    assert sorted(shapes.object_areas[1]) == [4, 9]
    assert shapes.ignore_border_pixels == 8  # every ignore pixel touches a labelled one
    assert shapes.upper_half_pixels.tolist() == [24, 4]


def test_rare_class_crops_raise_the_rare_class_share():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    mask = np.zeros((128, 128), np.int64)
    mask[100:108, 20:28] = 1  # 64 of 16384 pixels: 0.4 %

    def share(rare_class_crops: float) -> float:
        transform = build_train_transform("none", crop_size=32, rare_classes=[1], rare_class_crops=rare_class_crops)
        found = []
        for seed in range(200):
            seed_transform(transform, seed)
            found.append((apply_transform(transform, image, mask)[1] == 1).mean())
        return float(np.mean(found))

    plain, steered = share(0.0), share(0.5)
    assert plain < 0.01 and steered > 5 * plain  # about half the crops hold the 8×8 square: ~3 % vs 0.4 %


def walk(transform):
    yield transform
    for child in getattr(transform, "transforms", ()):
        yield from walk(child)


def test_plan_writes_a_loadable_config_with_a_reason_on_every_key(synthetic_root, tmp_path, one_thread, capsys):
    out = tmp_path / "plan.yaml"
    assert main(["plan", str(synthetic_root), "--budget", "1m", "--device", "cpu", "--memory", "4GB",
                 "-o", str(out)]) == 0
    assert f"plan written to {out}" in capsys.readouterr().out
    config = load_config(out)
    assert config.data.crop_size == (64, 64) and config.trainer.accelerator == "cpu"
    text = out.read_text()
    keys = [line for line in text.splitlines() if re.match(r"\s+\w+: ", line)]
    assert len(keys) >= 15 and all(re.search(r"  # \S", line) for line in keys)
    assert set(yaml.safe_load(text)) == {"data", "model", "loss", "trainer"}


def test_train_auto_plans_prints_trains_and_keeps_the_plan(synthetic_root, tmp_path, one_thread, capsys,
                                                           monkeypatch):
    monkeypatch.setattr(plan, "ENCODERS", ("resnet18",))  # one candidate: the test measures the plumbing
    assert main(["train", str(synthetic_root), "--auto", "--budget", "20s", "--cpu", "--steps", "2", "-w", "0",
                 "--log-dir", str(tmp_path), "--name", "auto", "--set", "trainer.progress_bar=false"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"loss\.name\s+ce \+", printed) and "data.crop_size" in printed
    run = tmp_path / "auto"
    planned = load_config(run / "plan.yaml")
    trained = yaml.safe_load((run / "config.yaml").read_text())
    assert trained["loss"]["name"] == planned.loss.name and trained["trainer"]["max_steps"] == 2
    assert (run / "model.safetensors").is_file()

    # the same name again (a killed run restarted, or trained further): the kept plan stands, nothing is measured
    kept = (run / "plan.yaml").read_text()
    monkeypatch.setattr(plan, "make_plan", lambda *a, **kw: pytest.fail("a resumed run must not plan again"))
    assert main(["train", str(synthetic_root), "--auto", "--budget", "5m", "--cpu", "--steps", "4", "-w", "0",
                 "--log-dir", str(tmp_path), "--name", "auto", "--set", "trainer.progress_bar=false"]) == 0
    printed = capsys.readouterr().out
    assert f"{run} resumes with the plan it started with" in printed
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in printed
    assert (run / "plan.yaml").read_text() == kept
    resumed = yaml.safe_load((run / "config.yaml").read_text())
    assert resumed["data"]["crop_size"] == trained["data"]["crop_size"] and resumed["trainer"]["max_steps"] == 4


def test_budget_without_auto_is_refused(tmp_path, capsys):
    from segwise.cli import main

    assert main(["train", str(tmp_path), "--budget", "10m"]) == 2
    assert "--auto" in capsys.readouterr().err


def test_a_device_the_machine_lacks_is_one_line_before_any_reading(synthetic_root, tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["plan", str(synthetic_root), "--device", "cuda", "-o", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: torch sees no CUDA GPU" in err and "Traceback" not in err
    assert main(["train", str(synthetic_root), "--auto", "--budget", "1m", "--device", "cuda",
                 "--log-dir", str(tmp_path)]) == 2
    assert "--device cuda: torch sees no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists() and not any(tmp_path.iterdir())


def test_memory_that_holds_no_sample_is_refused(synthetic_root, monkeypatch):
    """--memory under the weights, optimiser state and one sample's activations at the smallest crop: an error
    naming the flag and what one sample needs, not a plan of batch 1 that cannot run."""
    monkeypatch.setattr(plan, "ENCODERS", ("resnet18",))
    monkeypatch.setattr(plan, "measure_step", lambda encoder, channels, classes, side, device, batch=1:
                        plan.StepCost(0.01, 40 * 2 ** 20, (side / 64) ** 2 * 2 ** 20))
    config = load_config(None, [f"data.root={synthetic_root}"])
    with pytest.raises(ConfigError, match=r"1 MiB of memory \(--memory\) do not hold a U-Net on resnet18 training "
                                          r"one \d+x\d+ sample \(4\d MiB measured"):
        plan.make_plan(config, 600, "cpu", 2 ** 20)
    assert values(plan.make_plan(config, 600, "cpu", 50 * 2 ** 20).choices)["data.batch_size"] >= 1


def test_plan_on_16_bit_five_band_geotiffs_keeps_colour_ops_out_and_trains(tmp_path, one_thread, capsys,
                                                                           monkeypatch):
    """A multispectral set as users hold it (5-band uint16 GeoTIFFs, aerial: classes anywhere in the tile): the plan
    reads the bands and the pixel type from the files, turns on rotations and both flips, no colour op, and the
    planned config trains."""
    from tests.helpers import write_geotiff
    from segwise.data.io import write_png

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for i in range(count):
            mask = np.zeros((64, 64), np.uint8)
            for _ in range(4):  # fields of class 1 and 2 anywhere in the tile
                y, x = rng.integers(0, 48, 2)
                mask[y:y + 16, x:x + 16] = rng.integers(1, 3)
            pixels = (rng.integers(0, 4000, (5, 64, 64)) + mask.astype(np.int64) * 9000).astype(np.uint16)
            (tmp_path / "ms" / split / "images").mkdir(parents=True, exist_ok=True)
            write_geotiff(tmp_path / "ms" / split / "images" / f"t{i}.tif", pixels, nodata=None)
            write_png(tmp_path / "ms" / split / "masks" / f"t{i}.png", mask)
    monkeypatch.setattr(plan, "ENCODERS", ("resnet18",))
    out = tmp_path / "plan.yaml"
    assert main(["plan", str(tmp_path / "ms"), "--budget", "1m", "--device", "cpu", "--memory", "2GB",
                 "-o", str(out)]) == 0
    text = out.read_text()
    assert "5 channels (uint16)" in text
    config = load_config(out)
    assert config.data.augment == "safe" and config.data.vflip and config.data.hflip
    transform = build_train_transform(config.data.augment, crop_size=config.data.crop_size, hflip=True, vflip=True,
                                      num_channels=5)
    assert not [op for op in walk(transform) if isinstance(op, COLOUR_OPS)]
    assert main(["train", str(tmp_path / "ms"), "--config", str(out), "--cpu", "--steps", "2", "-w", "0",
                 "--log-dir", str(tmp_path / "runs"), "--name", "ms", "--set", "trainer.progress_bar=false"]) == 0
    assert yaml.safe_load((tmp_path / "runs" / "ms" / "model.yaml").read_text())["in_channels"] == 5
