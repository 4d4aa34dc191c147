"""Reading and writing images and masks: dtypes, layouts, palettes and damaged files."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from segwise.data.io import read_image, read_mask, write_png
from segwise.errors import DataError


def _rgb(h=12, w=17, dtype=np.uint8, seed=0):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(0, info.max, (h, w, 3), dtype=dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_round_trip_keeps_rgb_order_and_dtype(tmp_path: Path, dtype):
    image = _rgb(dtype=dtype)
    write_png(tmp_path / "sub" / "a.png", image)
    back = read_image(tmp_path / "sub" / "a.png")
    assert back.dtype == dtype and back.shape == image.shape
    np.testing.assert_array_equal(back, image)
    bgr = cv2.imread(str(tmp_path / "sub" / "a.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgr[..., ::-1], image)


def test_grayscale_png_is_hw1_and_rgba_keeps_alpha(tmp_path: Path):
    gray = np.arange(12 * 17, dtype=np.uint16).reshape(12, 17)
    write_png(tmp_path / "g.png", gray)
    assert read_image(tmp_path / "g.png").shape == (12, 17, 1)
    rgba = np.concatenate([_rgb(), np.full((12, 17, 1), 77, np.uint8)], axis=2)
    write_png(tmp_path / "rgba.png", rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba)


def test_jpeg_reads_as_rgb(tmp_path: Path):
    image = np.zeros((16, 16, 3), np.uint8)
    image[..., 0] = 250  # pure red survives JPEG compression well
    cv2.imwrite(str(tmp_path / "a.JPG"), image[..., ::-1])
    back = read_image(tmp_path / "a.JPG")
    assert back.shape == (16, 16, 3) and back[..., 0].min() > 230 and back[..., 2].max() < 20


@pytest.mark.parametrize("band_first", [False, True])
def test_multiband_tiff_both_layouts(tmp_path: Path, band_first: bool):
    image = np.random.default_rng(1).integers(0, 60000, (20, 30, 5)).astype(np.uint16)
    stored = np.moveaxis(image, -1, 0) if band_first else image
    tifffile.imwrite(tmp_path / "a.tif", stored)
    back = read_image(tmp_path / "a.tif")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, image)


def test_planar_tiff_and_float_tiff(tmp_path: Path):
    image = np.random.default_rng(2).random((3, 9, 8)).astype(np.float32)
    tifffile.imwrite(tmp_path / "p.tiff", image, planarconfig="separate")
    back = read_image(tmp_path / "p.tiff")
    assert back.shape == (9, 8, 3) and back.dtype == np.float32
    np.testing.assert_array_equal(back, np.moveaxis(image, 0, -1))
    tifffile.imwrite(tmp_path / "d.tif", image[0].astype(np.float64))
    assert read_image(tmp_path / "d.tif").dtype == np.float32


def test_truncated_png_names_file_and_fix(tmp_path: Path):
    write_png(tmp_path / "a.png", _rgb(64, 64))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"a\.png.*truncated.*re-export"):
        read_image(tmp_path / "a.png")


def test_truncated_jpeg_empty_and_missing_files(tmp_path: Path):
    cv2.imwrite(str(tmp_path / "a.jpg"), _rgb(32, 32))
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[:-40])
    with pytest.raises(DataError, match=r"a\.jpg.*truncated"):
        read_image(tmp_path / "a.jpg")
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"e\.png.*empty"):
        read_image(tmp_path / "e.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"junk\.png.*not a readable image"):
        read_mask(tmp_path / "junk.png")
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "missing.tif")


def test_read_mask_index_colour_and_grey_rgb(tmp_path: Path):
    index = np.random.default_rng(3).integers(0, 1000, (10, 11)).astype(np.uint16)
    write_png(tmp_path / "i.png", index)
    back = read_mask(tmp_path / "i.png")
    assert back.shape == (10, 11) and back.dtype == np.uint16
    np.testing.assert_array_equal(back, index)
    colour = _rgb(10, 11)
    write_png(tmp_path / "c.png", np.concatenate([colour, np.full((10, 11, 1), 255, np.uint8)], axis=2))
    np.testing.assert_array_equal(read_mask(tmp_path / "c.png"), colour)
    grey = np.repeat(index.astype(np.uint8)[..., None], 3, axis=2)
    write_png(tmp_path / "grey.png", grey)
    np.testing.assert_array_equal(read_mask(tmp_path / "grey.png"), grey[..., 0])


def test_palette_png_mask_returns_indices(tmp_path: Path):
    image = pytest.importorskip("PIL.Image")
    indices = np.array([[0, 1, 2], [255, 1, 0]], np.uint8)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 252 + [224, 224, 192]
    png = image.fromarray(indices, mode="P")
    png.putpalette(palette)
    png.save(tmp_path / "voc.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "voc.png"), indices)
    colours = read_mask(tmp_path / "voc.png", colours=True)  # a class map given by colours reads what is shown
    np.testing.assert_array_equal(colours[0, 1], [128, 0, 0])
    np.testing.assert_array_equal(colours[1, 0], [224, 224, 192])


def test_palette_png_masks_train_by_their_colours_under_a_colour_class_map(tmp_path: Path):
    """A palette-mode PNG whose palette order differs from the class order must map by colour, not by index."""
    image = pytest.importorskip("PIL.Image")
    from segwise.data.classmap import ClassMap
    from segwise.data.folder import find_samples, read_sample_mask

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    write_png(tmp_path / "images" / "a.png", np.zeros((2, 3, 3), np.uint8))
    png = image.fromarray(np.array([[0, 1, 1], [1, 0, 0]], np.uint8), mode="P")
    png.putpalette([0, 0, 255, 255, 0, 0] + [0, 0, 0] * 254)  # index 0 shows blue, index 1 red
    png.save(tmp_path / "masks" / "a.png")
    class_map = ClassMap(num_classes=2, palette=[(255, 0, 0), "#0000ff"])  # class 0 red, class 1 blue
    (sample,) = find_samples(tmp_path)
    np.testing.assert_array_equal(read_sample_mask(sample, class_map, (2, 3)), [[1, 0, 0], [0, 1, 1]])


def test_write_png_rejects_float(tmp_path: Path):
    with pytest.raises(DataError, match="uint8 or uint16"):
        write_png(tmp_path / "f.png", np.zeros((4, 4), np.float32))
