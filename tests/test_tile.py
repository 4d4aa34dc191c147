"""Offline tiling (`segwise data tile`) and the iSAID readers, on crafted files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from segwise.cli import main
from segwise.config import load_config
from segwise.data import isaid
from segwise.data.classmap import ClassMap
from segwise.data.folder import Sample, find_samples
from segwise.data.io import read_image, read_mask, write_png
from segwise.data.synthetic import make_synthetic_dataset
from segwise.data.tile import class_map_decoder, tile_samples, tile_windows
from segwise.models.spec import load_model
from segwise.errors import ConfigError, DataError
from segwise.tasks.semantic.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
pytestmark = pytest.mark.usefixtures("one_thread")


def _ramp_sample(folder: Path, name: str, height: int, width: int) -> Sample:
    """An image whose pixel (y, x) encodes its position, and an index mask (y + x) % 3."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([yy % 256, xx % 256, (yy // 256) * 16 + xx // 256], axis=2).astype(np.uint8) + 1
    write_png(folder / "images" / f"{name}.png", image)
    write_png(folder / "masks" / f"{name}.png", ((yy + xx) % 3).astype(np.uint8))
    return Sample(name, folder / "images" / f"{name}.png", folder / "masks" / f"{name}.png")


def test_windows_follow_simplecv_last_one_on_the_border():
    assert [y for y, x in tile_windows(2000, 896, 896, 512) if x == 0] == [0, 512, 1024, 1104]
    assert list(tile_windows(1000, 1408, 896, 512)) == [(0, 0), (0, 512), (104, 0), (104, 512)]
    assert list(tile_windows(896, 896, 896, 512)) == [(0, 0)]
    assert list(tile_windows(300, 500, 896, 512)) == [(0, 0)]  # one window: the image itself, padded


def test_tiles_are_exact_crops_padded_with_0_and_255(tmp_path: Path):
    samples = [_ramp_sample(tmp_path / "src", "big", 300, 200), _ramp_sample(tmp_path / "src", "small", 50, 70)]
    decode = class_map_decoder(ClassMap(3))
    assert tile_samples(samples, tmp_path / "out", decode, size=128, stride=100) == 3 * 2 + 1
    source, mask = read_image(samples[0].image), read_mask(samples[0].mask)
    for y in (0, 100, 172):
        for x in (0, 72):
            tile = read_image(tmp_path / "out" / "images" / f"big_{y}_{x}.png")
            assert tile.shape == (128, 128, 3)
            np.testing.assert_array_equal(tile, source[y:y + 128, x:x + 128])
            np.testing.assert_array_equal(read_mask(tmp_path / "out" / "masks" / f"big_{y}_{x}.png"),
                                          mask[y:y + 128, x:x + 128])
    small_image = read_image(tmp_path / "out" / "images" / "small_0_0.png")
    small_mask = read_mask(tmp_path / "out" / "masks" / "small_0_0.png")
    assert small_image.shape == (128, 128, 3) and small_mask.shape == (128, 128)
    np.testing.assert_array_equal(small_image[:50, :70], read_image(samples[1].image))
    assert (small_image[50:] == 0).all() and (small_image[:, 70:] == 0).all()
    assert (small_mask[50:] == 255).all() and (small_mask[:, 70:] == 255).all() and small_mask[:50, :70].max() < 3
    with pytest.raises(ConfigError, match="stride"):
        tile_samples(samples, tmp_path / "bad", decode, size=128, stride=200)


def test_isaid_colour_masks_map_unmatched_colours_to_background(tmp_path: Path):
    rgb = np.zeros((2, 4, 3), np.uint8)
    rgb[0, 0], rgb[0, 1], rgb[0, 2], rgb[0, 3] = isaid.PALETTE[1], isaid.PALETTE[15], (9, 9, 9), isaid.PALETTE[9]
    rgb[1, :] = isaid.PALETTE[14]
    np.testing.assert_array_equal(isaid.decode_isaid_mask(rgb), [[1, 15, 0, 9], [14, 14, 14, 14]])
    index = np.array([[0, 15], [255, 7]], np.uint8)
    np.testing.assert_array_equal(isaid.decode_isaid_mask(index), index)
    with pytest.raises(DataError, match="16"):
        isaid.decode_isaid_mask(np.array([[16]], np.uint8))
    assert len(isaid.CLASS_NAMES) == len(isaid.PALETTE) == 16 and isaid.CLASS_NAMES[14] == "plane"


def test_isaid_pairs_nested_instance_colour_masks_and_reports_orphans(tmp_path: Path):
    split = tmp_path / "train"
    for name in ("P0001", "P0002"):
        write_png(split / "images" / "images" / f"{name}.png", np.zeros((4, 4, 3), np.uint8))
        write_png(split / "masks" / "images" / f"{name}{isaid.MASK_SUFFIX}.png", np.zeros((4, 4, 3), np.uint8))
    samples = isaid.find_isaid_samples(split)
    assert [s.name for s in samples] == ["P0001", "P0002"]
    assert samples[0].mask.name == "P0001_instance_color_RGB.png"
    write_png(split / "images" / "images" / "P0003.png", np.zeros((4, 4, 3), np.uint8))
    write_png(split / "masks" / "P0009.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError) as error:
        isaid.find_isaid_samples(split)
    assert "P0003.png has no mask" in str(error.value) and "P0009.png has no image" in str(error.value)
    with pytest.raises(DataError, match="masks/"):
        isaid.find_isaid_samples(tmp_path / "nowhere")


def _isaid_format(root: Path, out: Path) -> Path:
    """The synthetic set rewritten as an iSAID split: colour masks (iSAID palette, one stray colour) named
    `<stem>_instance_color_RGB.png`."""
    for sample in find_samples(root / "train"):
        ids = read_mask(sample.mask)
        colours = np.asarray(isaid.PALETTE, np.uint8)[ids * 4]  # classes 1..3 → ship-like ids 4, 8, 12
        colours[0, 0] = (200, 10, 10)  # not an iSAID colour: becomes background
        write_png(out / "images" / f"{sample.name}.png", read_image(sample.image))
        write_png(out / "masks" / f"{sample.name}{isaid.MASK_SUFFIX}.png", colours)
    return out


def test_tile_cli_isaid_format_then_train_the_small_recipe(tmp_path: Path, capsys):
    root = make_synthetic_dataset(tmp_path / "syn", num_train=4, num_val=0, num_test=0, size=80, seed=1)
    src = _isaid_format(root, tmp_path / "isaid_train")
    assert main(["data", "tile", str(src), str(tmp_path / "data" / "train"), "--format", "isaid", "--size", "64",
                 "--stride", "48"]) == 0
    assert "wrote 16 tile(s) from 4 image(s)" in capsys.readouterr().out
    first = read_mask(tmp_path / "data" / "train" / "masks" / "train_0000_0_0.png")
    expected = read_mask(root / "train" / "masks" / "train_0000.png")[:64, :64].astype(np.int64) * 4
    expected[0, 0] = 0
    np.testing.assert_array_equal(first, expected)
    config = load_config(CONFIGS / "isaid_factseg_small.yaml",
                         [f"data.root={tmp_path / 'data'}", f"run.log_dir={tmp_path / 'runs'}", "run.name=small",
                          "trainer.max_steps=2", "trainer.progress_bar=false"])
    run = train(config)
    model, spec = load_model(run)
    assert spec.name == "factseg" and spec.num_classes == 16 and spec.class_names[4] == "tennis_court"
    assert yaml.safe_load((run / "config.yaml").read_text())["loss"]["name"] == "som"


def test_tile_cli_folder_format_reads_palette_mode_png_as_colours(tmp_path: Path, capsys):
    """A palette-mode PNG whose palette indices differ from the class order (as in Dubai tile 2)."""
    colours = [(132, 41, 246), (60, 16, 152), (155, 155, 155)]  # land, building, unlabeled (ignored)
    indices = np.array([[2, 0, 1, 1], [0, 0, 2, 1]], np.uint8)
    mask = Image.fromarray(indices, mode="P")
    mask.putpalette([c for colour in colours for c in colour])
    (tmp_path / "src" / "masks").mkdir(parents=True)
    mask.save(tmp_path / "src" / "masks" / "a.png")
    write_png(tmp_path / "src" / "images" / "a.png", np.full((2, 4, 3), 7, np.uint8))
    assert main(["data", "tile", str(tmp_path / "src"), str(tmp_path / "out"), "--whole", "--prefix", "t2_",
                 "--set", "data.palette=[[132, 41, 246], [60, 16, 152]]", "--set", "data.unmapped=ignore"]) == 0
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "masks" / "t2_a.png"),
                                  [[255, 0, 1, 1], [0, 0, 255, 1]])
    assert "wrote 1 tile(s)" in capsys.readouterr().out
    assert main(["data", "tile", str(tmp_path / "src"), str(tmp_path / "out2"), "--whole",
                 "--set", "data.palette=[[132, 41, 246], [60, 16, 152]]"]) == 2  # unmapped colours are an error
