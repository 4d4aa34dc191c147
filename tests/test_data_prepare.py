"""`segwise data remap|filter|planes` and `data tile`'s smp-trainer options, on small crafted folders: outputs mirror
the source, images are linked, bad inputs are refused before anything is written, and a remapped set trains."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segwise.cli import main
from segwise.data.classmap import ClassMap
from segwise.data.folder import find_samples
from segwise.data.io import read_image, read_mask, write_png, write_tiff
from segwise.data.prepare import Remapping, filter_samples, gather_planes, parse_value_map, remap_masks
from segwise.data.synthetic import make_synthetic_dataset
from segwise.data.tile import axis_starts, class_map_decoder, tile_samples, tile_windows
from segwise.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")


def _sample(split: Path, name: str, mask: np.ndarray, planes: tuple[str, ...] = ()) -> None:
    """An image whose pixels encode the sample, its mask and one uint8 plane per name."""
    seed = sum(map(ord, name))
    write_png(split / "images" / f"{name}.png", np.full((*mask.shape[:2], 3), seed % 200, np.uint8))
    write_png(split / "masks" / f"{name}.png", mask)
    for plane in planes:
        write_png(split / plane / f"{name}.png", np.full(mask.shape[:2], seed % 100, np.uint8))


def _mask(values: dict[int, int], shape: tuple[int, int] = (8, 8), fill: int = 0) -> np.ndarray:
    """A mask of `fill` whose first pixels hold each value as often as given."""
    flat = np.full(shape[0] * shape[1], fill, np.uint8)
    start = 0
    for value, count in values.items():
        flat[start:start + count] = value
        start += count
    return flat.reshape(shape)


@pytest.fixture
def grey_root(tmp_path: Path) -> Path:
    """A data-set root with train/ and val/ and 0/64/128/255 masks (the smp trainer's kind of grey masks)."""
    root = tmp_path / "grey"
    _sample(root / "train", "a", _mask({64: 10, 128: 5, 255: 3}))
    _sample(root / "train", "b", _mask({128: 20}))
    _sample(root / "val", "c", _mask({64: 1, 255: 63}))
    (root / "dataset.yaml").write_text("num_classes: 4\n")
    return root


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ---- remap ----------------------------------------------------------------------------------------------------------
def test_remap_mirrors_the_root_links_images_and_prints_both_histograms(grey_root: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["data", "remap", str(grey_root), str(out), "--map", "64:1,128:2,255:0"]) == 0
    text = capsys.readouterr().out
    assert _files(out) == ["train/images/a.png", "train/images/b.png", "train/masks/a.png", "train/masks/b.png",
                           "val/images/c.png", "val/masks/c.png"]
    np.testing.assert_array_equal(read_mask(out / "train" / "masks" / "a.png"), _mask({1: 10, 2: 5, 0: 3}))
    assert os.path.samefile(out / "train" / "images" / "a.png", grey_root / "train" / "images" / "a.png")
    assert not list(out.rglob(".*"))  # no temporary file left behind
    before, after = text.split("mask values after:")
    assert "mask values before (3 masks)" in before and "255" in before and "128" in before
    rows = {int(line.split()[0]): int(line.split()[1].replace(",", "")) for line in after.splitlines()[1:]
            if line.startswith("  ")}
    assert rows == {0: 156, 1: 11, 2: 25}  # 0 is kept (--unmapped keep), 255 joins it
    assert "3 file(s) linked, 0 copied" in text and "dataset.yaml was not carried" in text


def test_remap_refuses_a_map_value_no_mask_holds_and_writes_nothing(grey_root: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["data", "remap", str(grey_root), str(out), "--map", "64:1,46:2"]) == 2
    err = capsys.readouterr().err
    assert "--map: no mask holds the value 46" in err and "the masks hold 0, 64, 128, 255" in err
    assert not out.exists()


def test_remap_unmapped_values_error_ignore_or_keep(grey_root: Path, tmp_path: Path):
    with pytest.raises(DataError) as error:
        remap_masks(grey_root, tmp_path / "e", Remapping({64: 1}, unmapped="error"))
    assert "value 128 (e.g. in masks/a.png) is not in --map" in str(error.value) and "--unmapped ignore" in str(
        error.value)
    assert not (tmp_path / "e").exists()
    remap_masks(grey_root, tmp_path / "i", Remapping({64: 1, 0: 0}, unmapped="ignore", ignore_index=250))
    np.testing.assert_array_equal(read_mask(tmp_path / "i" / "train" / "masks" / "a.png"), _mask({1: 10, 250: 8}))
    remap_masks(grey_root / "train", tmp_path / "k", Remapping({64: 1}, unmapped="keep"))
    np.testing.assert_array_equal(read_mask(tmp_path / "k" / "masks" / "a.png"), _mask({1: 10, 128: 5, 255: 3}))


def test_remap_colour_and_palette_masks(tmp_path: Path):
    split = tmp_path / "colour"
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0] = (255, 0, 0)
    rgb[1, :2] = (0, 255, 0)
    _sample(split, "a", rgb)
    report = remap_masks(split, tmp_path / "out", Remapping(palette=("#000000", "#ff0000", "#00ff00")))
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "masks" / "a.png"),
                                  [[1, 1, 1, 1], [2, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert report.before == {"#000000": 10, "#00ff00": 2, "#ff0000": 4}
    with pytest.raises(DataError, match=r"colour #00ff00 \(e.g. in masks/a.png\) is not in --palette"):
        remap_masks(split, tmp_path / "bad", Remapping(palette=("#000000", "#ff0000")))
    with pytest.raises(DataError, match="RGB colour mask.*--palette"):
        remap_masks(split, tmp_path / "bad", Remapping({1: 2}))
    palette_split = tmp_path / "voc"
    indexed = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    indexed.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    write_png(palette_split / "images" / "p.png", np.zeros((2, 2, 3), np.uint8))
    (palette_split / "masks").mkdir()
    indexed.save(palette_split / "masks" / "p.png")
    remap_masks(palette_split, tmp_path / "voc_out", Remapping({1: 5, 2: 6, 0: 0}))
    np.testing.assert_array_equal(read_mask(tmp_path / "voc_out" / "masks" / "p.png"), [[0, 5], [6, 5]])


def test_remap_copies_on_request_or_across_file_systems_and_writes_16_bit(grey_root: Path, tmp_path: Path,
                                                                          monkeypatch):
    report = remap_masks(grey_root / "val", tmp_path / "copied", Remapping({64: 300, 255: 0}), copy=True)
    assert report.transfers.copied == 1 and report.transfers.linked == 0
    assert not os.path.samefile(tmp_path / "copied" / "images" / "c.png", grey_root / "val" / "images" / "c.png")
    mask = read_mask(tmp_path / "copied" / "masks" / "c.png")
    assert mask.dtype == np.uint16 and mask[0, 0] == 300

    def cross_device(*_):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    report = remap_masks(grey_root / "val", tmp_path / "fallback", Remapping({64: 1, 255: 0}))
    assert report.transfers.copied == 1 and (tmp_path / "fallback" / "images" / "c.png").read_bytes() == (
        grey_root / "val" / "images" / "c.png").read_bytes()


def test_map_parsing_names_the_bad_entry():
    assert parse_value_map(["64:1,128:2", "255:0"]) == {64: 1, 128: 2, 255: 0}
    for words, message in ((["64-1"], "OLD:NEW"), (["64:1,64:2"], "maps 64 twice"), (["1:70000"], "0..65535"),
                           ([], "empty")):
        with pytest.raises(ConfigError, match=message):
            parse_value_map(words)


@pytest.mark.parametrize(("command", "flags"), [
    ("remap", ["--map", "--unmapped", "--ignore-index", "--palette", "--copy", "--add-dirs"]),
    ("filter", ["--keep-class", "--min-pixels", "--min-share", "--max-empty-share", "--seed", "--copy"]),
    ("planes", ["--from", "--planes", "--copy"]),
    ("tile", ["--offset", "--edge", "shift,pad,drop", "the smp trainer's shift"])])
def test_help_lists_the_flags(command: str, flags: list[str], capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert info.value.code == 0 and all(flag in text for flag in flags)


# ---- the shared checks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["remap", "--map", "64:1", "--unmapped", "keep"], ["filter", "--keep-class", "64"],
                                  ["planes", "--from", "{root}", "--planes", "nir"]])
def test_an_output_folder_inside_the_source_is_refused(argv: list[str], grey_root: Path, capsys):
    out = grey_root / "train" / "prepared"
    argv = [word.format(root=grey_root) for word in argv]
    assert main(["data", argv[0], str(grey_root), str(out), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert f"output folder {out} lies inside the source {grey_root}" in err and err.count("\n") == 1
    assert not out.exists()


def test_files_of_an_earlier_run_are_not_mixed_in(grey_root: Path, tmp_path: Path):
    out = tmp_path / "out"
    filter_samples(grey_root, out, [128])
    filter_samples(grey_root, out, [128])  # the same run again replaces its own files
    with pytest.raises(DataError, match=r"holds files this run would not write(.|\n)*train/images/a.png"):
        filter_samples(grey_root, out, [128], min_pixels=6)


def test_a_broken_source_split_is_reported_whole(grey_root: Path, tmp_path: Path):
    (grey_root / "val" / "masks" / "c.png").unlink()
    write_png(grey_root / "train" / "masks" / "orphan.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError) as error:
        remap_masks(grey_root, tmp_path / "out", Remapping({64: 1}, unmapped="keep"))
    assert "orphan.png has no image" in str(error.value) and "c.png has no mask" in str(error.value)
    assert not (tmp_path / "out").exists()


# ---- filter ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def tiles(tmp_path: Path) -> Path:
    """A split of 10 tiles with an nir plane: t0..t2 hold 2, 10 and 30 pixels of class 2, t3..t9 none."""
    split = tmp_path / "tiles"
    for index, count in enumerate([2, 10, 30] + [0] * 7):
        _sample(split, f"t{index}", _mask({2: count, 1: 5}), planes=("nir",))
    return split


def test_filter_keeps_the_class_with_its_planes_and_a_seeded_share_of_empty_tiles(tiles: Path, tmp_path: Path,
                                                                                   capsys):
    assert main(["data", "filter", str(tiles), str(tmp_path / "a"), "--keep-class", "2", "--min-pixels", "5",
                 "--add-dirs", "nir"]) == 0
    assert "tiles: kept 2 of 10 (2 with class 2, 0 of 8 without)" in capsys.readouterr().out
    assert _files(tmp_path / "a") == [f"{kind}/t{i}.png" for kind in ("images", "masks", "nir") for i in (1, 2)]
    assert [s.name for s in find_samples(tmp_path / "a", ["nir"])] == ["t1", "t2"]
    shared = filter_samples(tiles, tmp_path / "b", [2], min_share=0.4, max_empty_share=0.5, seed=3)
    assert (shared.splits[0].with_class, shared.splits[0].empty_kept) == (1, 1)  # 30/64 ≥ 0.4; one empty = half
    again = filter_samples(tiles, tmp_path / "c", [2], max_empty_share=0.5, seed=3)
    filter_samples(tiles, tmp_path / "d", [2], max_empty_share=0.5, seed=3)
    assert again.splits[0].empty_kept == 3 and _files(tmp_path / "c") == _files(tmp_path / "d")


def test_filter_refuses_a_class_no_mask_holds_and_conflicting_thresholds(tiles: Path, tmp_path: Path, capsys):
    assert main(["data", "filter", str(tiles), str(tmp_path / "out"), "--keep-class", "7"]) == 2
    assert "--keep-class: no mask holds the value 7 (a typo?); the masks hold 0, 1, 2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="keep one of them"):
        filter_samples(tiles, tmp_path / "out", [2], min_pixels=3, min_share=0.1)
    with pytest.raises(ConfigError, match="--max-empty-share 1.5"):
        filter_samples(tiles, tmp_path / "out", [2], max_empty_share=1.5)


# ---- planes ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def plane_tree(grey_root: Path, tmp_path: Path) -> Path:
    """The planes of grey_root's images elsewhere: nir per split (<root>/<split>/nir), dsm flat (<root>/dsm, float)."""
    tree = tmp_path / "big"
    for split, name in (("train", "a"), ("train", "b"), ("val", "c"), ("train", "unused")):
        write_png(tree / split / "nir" / f"{name}.png", np.full((8, 8), ord(name[0]), np.uint8))
        write_tiff(tree / "dsm" / f"{name}.tif", np.full((8, 8, 1), 1.5, np.float32))
    return tree


def test_planes_are_gathered_by_stem_and_the_result_trains_with_them(grey_root: Path, plane_tree: Path,
                                                                     tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["data", "planes", str(grey_root), str(out), "--from", str(plane_tree), "--planes", "nir", "dsm"]) == 0
    assert "train: 2 image(s), 4 plane file(s) (nir, dsm)" in capsys.readouterr().out
    assert "val/dsm/c.tif" in _files(out) and "val/nir/c.png" in _files(out) and (out / "dataset.yaml").is_file()
    samples = find_samples(out / "train", ["nir", "dsm"])
    assert [s.extras[0].name for s in samples] == ["a.png", "b.png"]
    assert read_image(samples[0].extras[1]).dtype == np.float32


def test_missing_planes_are_listed_and_nothing_is_written(grey_root: Path, plane_tree: Path, tmp_path: Path):
    (plane_tree / "train" / "nir" / "b.png").unlink()
    (plane_tree / "dsm" / "c.tif").unlink()
    with pytest.raises(DataError) as error:
        gather_planes(grey_root, tmp_path / "out", plane_tree, ["nir", "dsm", "ndvi"])
    text = str(error.value)
    assert "images/b.png has no plane in" in text and "images/c.png has no plane in" in text
    assert "no plane folder ndvi/ for split train" in text and not (tmp_path / "out").exists()


def test_planes_can_gather_the_masks_of_an_image_folder(grey_root: Path, tmp_path: Path):
    images_only = tmp_path / "picked" / "val"
    write_png(images_only / "images" / "c.png", read_image(grey_root / "val" / "images" / "c.png"))
    gather_planes(images_only, tmp_path / "out", grey_root, ["masks"])
    assert [s.mask.name for s in find_samples(tmp_path / "out")] == ["c.png"]
    with pytest.raises(ConfigError, match="--planes images"):
        gather_planes(images_only, tmp_path / "out2", grey_root, ["images"])


# ---- tile: the smp trainer's options --------------------------------------------------------------------------------
def test_window_starts_with_offset_and_each_edge_rule():
    assert axis_starts(1100, 512, 512) == [0, 512, 588]  # shift: the last window ends on the border
    assert axis_starts(1100, 512, 512, edge="drop") == [0, 512]  # the smp trainer: whole windows only
    assert axis_starts(1100, 512, 512, edge="pad") == [0, 512, 1024]
    assert axis_starts(1100, 512, 256, offset=100, edge="drop") == [100, 356]
    assert axis_starts(300, 512, 512, edge="drop") == [] and axis_starts(300, 512, 512, edge="pad") == [0]
    assert list(tile_windows(50, 30, 20, 20, offset=5, edge="drop")) == [(5, 5), (25, 5)]


def test_tiles_carry_their_planes(tmp_path: Path):
    split = tmp_path / "big"
    yy, xx = np.mgrid[0:40, 0:30]
    write_png(split / "images" / "s.png", np.stack([yy, xx, yy + xx], axis=2).astype(np.uint8))
    write_png(split / "masks" / "s.png", ((yy + xx) % 3).astype(np.uint8))
    write_tiff(split / "dsm" / "s.tif", (yy * 100 + xx).astype(np.float32)[..., None])
    samples = find_samples(split, ["dsm"])
    count = tile_samples(samples, tmp_path / "out", class_map_decoder(ClassMap(3)), size=16, stride=16, offset=4,
                         edge="pad")
    assert count == 3 * 2  # rows 4, 20, 36 (padded); columns 4, 20 (padded)
    tile = read_image(tmp_path / "out" / "dsm" / "s_20_4.tif")[..., 0]
    np.testing.assert_array_equal(tile, (yy * 100 + xx)[20:36, 4:20])
    edge = read_image(tmp_path / "out" / "dsm" / "s_36_20.tif")[..., 0]
    assert (edge[4:] == 0).all() and (edge[:, 10:] == 0).all() and edge[0, 0] == 3620
    with pytest.raises(ConfigError, match="offset 16"):
        tile_samples(samples, tmp_path / "bad", class_map_decoder(ClassMap(3)), size=16, stride=16, offset=16)


# ---- round trip -----------------------------------------------------------------------------------------------------
def test_remap_then_train_one_step(tmp_path: Path, capsys):
    """The synthetic set with classes 1 and 2 swapped and 3 merged into background trains at once."""
    root = make_synthetic_dataset(tmp_path / "syn", num_train=4, num_val=2, num_test=0, size=32, seed=2)
    out = tmp_path / "remapped"
    assert main(["data", "remap", str(root), str(out), "--map", "1:2,2:1,3:0,0:0"]) == 0
    original = read_mask(root / "train" / "masks" / "train_0000.png")
    np.testing.assert_array_equal(read_mask(out / "train" / "masks" / "train_0000.png"),
                                  np.array([0, 2, 1, 0], np.uint8)[original])
    assert main(["train", str(out), "--model", "enet", "--steps", "1", "-b", "2", "-w", "0", "--accelerator", "cpu",
                 "--name", "remapped", "--log-dir", str(tmp_path / "runs"), "--set", "trainer.progress_bar=false"]) == 0
    assert (tmp_path / "runs" / "remapped" / "model.safetensors").is_file()
