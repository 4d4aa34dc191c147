"""RLE: TianChi "start length" strings, COCO counts and strings, name<TAB>rle CSV files, `segwise rle decode`,
class rasters encoded strip by strip."""

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from rasterio.io import DatasetReader

from segwise.cli import main
from segwise.data.io import read_mask, write_png
from segwise.errors import ConfigError, DataError
from segwise.inference.rle import (
    coco_counts_to_string, coco_rle_decode, coco_rle_encode, coco_string_to_counts, decode_rle_csv, raster_rle_encode,
    read_rle_csv, rle_decode, rle_encode, write_rle_csv,
)
from tests.helpers import write_geotiff

# 3×3 by hand. Column-major pixels: 0 1 0 | 1 1 0 | 0 0 1 → runs at 1-based 2 (1 px), 4 (2 px), 9 (1 px)
SMALL = np.array([[0, 1, 0],
                  [1, 1, 0],
                  [0, 0, 1]], dtype=np.uint8)


def edge_case_masks() -> list[np.ndarray]:
    masks = []
    for height, width in [(1, 1), (1, 7), (7, 1), (3, 5), (8, 8), (13, 17)]:
        masks += [np.zeros((height, width), np.uint8), np.ones((height, width), np.uint8)]
        for row, col in [(0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1)]:
            single = np.zeros((height, width), np.uint8)
            single[row, col] = 1
            masks += [single, 1 - single]
        stripes = np.zeros((height, width), np.uint8)
        stripes[:, ::2] = 1
        masks += [stripes, stripes.T.copy()]
    return masks


def random_masks(count: int = 300, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count):
        height, width = rng.integers(1, 40, size=2)
        if rng.random() < 0.5:  # salt and pepper of any density
            masks.append((rng.random((height, width)) < rng.random()).astype(np.uint8))
        else:  # blocky masks with long runs across columns
            mask = np.zeros((height, width), np.uint8)
            for _ in range(rng.integers(0, 4)):
                r0, c0 = rng.integers(0, height), rng.integers(0, width)
                mask[r0:r0 + rng.integers(1, height + 1), c0:c0 + rng.integers(1, width + 1)] = 1
            masks.append(mask)
    return masks


ALL_MASKS = edge_case_masks() + random_masks()


# ---- TianChi ------------------------------------------------------------------------------------------------
def test_small_example_by_hand():
    assert rle_encode(SMALL) == "2 1 4 2 9 1"
    np.testing.assert_array_equal(rle_decode("2 1 4 2 9 1", (3, 3)), SMALL)
    assert rle_encode(np.zeros((4, 3))) == ""
    assert rle_encode(np.ones((4, 3), bool)) == "1 12"
    corner = np.zeros((4, 3), np.uint8)
    corner[3, 2] = 1  # last pixel in column-major order
    assert rle_encode(corner) == "12 1"
    corner = np.zeros((4, 3), np.uint8)
    corner[0, 2] = 1  # top-right: first pixel of the last column
    assert rle_encode(corner) == "9 1"


def test_foreground_class_or_any_nonzero():
    labels = np.array([[0, 2, 1],
                       [2, 2, 0]])
    assert rle_encode(labels) == "2 4"  # column-major: 0 2 | 2 2 | 1 0 → pixels 2..5 non-zero
    assert rle_encode(labels, foreground=2) == "2 3"
    assert rle_encode(labels, foreground=1) == "5 1"
    with pytest.raises(DataError, match="H×W"):
        rle_encode(np.zeros((2, 2, 3)))


def test_round_trip_edge_cases_and_random_masks():
    for mask in ALL_MASKS:
        text = rle_encode(mask)
        np.testing.assert_array_equal(rle_decode(text, mask.shape), mask)
        np.testing.assert_array_equal(rle_decode(text, mask.shape, value=255), mask * 255)
        values = [int(v) for v in text.split()]
        starts, lengths = values[0::2], values[1::2]
        assert all(n > 0 for n in lengths) and starts == sorted(starts)
        assert all(s + n < t for s, n, t in zip(starts, lengths, starts[1:]))  # canonical: runs never touch


def test_decode_accepts_unsorted_overlapping_runs_and_extra_whitespace():
    expected = rle_decode("1 3 6 2", (3, 3))
    np.testing.assert_array_equal(rle_decode("  6 2\t1 2 2 2 7 0 \n", (3, 3)), expected)
    assert rle_decode("", (2, 5)).sum() == 0


@pytest.mark.parametrize(("text", "message"), [
    ("1 2 3", "odd number"), ("1 x", "'x' is not a whole number"), ("1 -2", "'-2'"), ("1 2.5", "'2.5'"),
    ("0 3", "below 1"), ("8 3", "beyond the 3×3 mask"),
])
def test_decode_errors(text, message):
    with pytest.raises(DataError, match=message):
        rle_decode(text, (3, 3))


def test_large_mask_is_fast():
    mask = np.zeros((5000, 5000), np.uint8)
    mask[1000:3000, 2000:4000] = 1
    mask[::7, ::5] = 1
    start = time.perf_counter()
    text = rle_encode(mask)
    decoded = rle_decode(text, mask.shape)
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(decoded, mask)
    assert elapsed < 10, elapsed  # ~0.5 s on one idle core; generous for a busy CI machine


# ---- COCO ---------------------------------------------------------------------------------------------------
def test_coco_small_examples_by_hand():
    assert coco_rle_encode(SMALL, compressed=False) == {"size": [3, 3], "counts": [1, 1, 1, 2, 3, 1]}
    # deltas from the 4th count on: 1 1 1 (2-1) (3-1) (1-2) → '1' '1' '1' '1' '2' and -1 = 31 (sign bit) + 48 = 'O'
    assert coco_rle_encode(SMALL) == {"size": [3, 3], "counts": "11112O"}
    columns = np.zeros((10, 10), np.uint8)
    columns[:, 4:7] = 1  # counts 40 30 30; 40 = 8 + 1·32 → 'X'(8|0x20) '1'; 30 has bit 0x10 → 'n'(30|0x20) '0'
    assert coco_rle_encode(columns) == {"size": [10, 10], "counts": "X1n0n0"}
    starts_on = np.zeros((10, 10), np.uint8)
    starts_on[:, 0] = 1
    starts_on[3, 9] = 1  # counts 0 10 83 1 6 → deltas 0 10 83 -9 -77
    assert coco_rle_encode(starts_on, compressed=False)["counts"] == [0, 10, 83, 1, 6]
    assert coco_rle_encode(starts_on)["counts"] == "0:c2GcM"
    assert coco_rle_encode(np.ones((2, 3)), compressed=False)["counts"] == [0, 6]
    assert coco_rle_encode(np.zeros((2, 3)), compressed=False)["counts"] == [6]


def test_coco_round_trips():
    for mask in ALL_MASKS:
        for compressed in (True, False):
            rle = coco_rle_encode(mask, compressed=compressed)
            assert rle["size"] == list(mask.shape)
            np.testing.assert_array_equal(coco_rle_decode(rle), mask)
        counts = coco_rle_encode(mask, compressed=False)["counts"]
        np.testing.assert_array_equal(coco_string_to_counts(coco_counts_to_string(counts)), counts)
    rle = coco_rle_encode(SMALL)
    np.testing.assert_array_equal(coco_rle_decode({**rle, "counts": rle["counts"].encode()}, value=255), SMALL * 255)


def test_coco_large_counts_use_several_characters():
    counts = [0, 2 ** 31, 5, 2 ** 20, 3 * 2 ** 25, 7]
    np.testing.assert_array_equal(coco_string_to_counts(coco_counts_to_string(counts)), counts)


def test_coco_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    for mask in ALL_MASKS[::3]:
        ours = coco_rle_encode(mask)
        theirs = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ours["counts"] == theirs["counts"].decode("ascii") and ours["size"] == theirs["size"]
        np.testing.assert_array_equal(coco_rle_decode(theirs), mask_api.decode(theirs))


@pytest.mark.parametrize(("rle", "message"), [
    ({"size": [3, 3], "counts": [1, 1, 1]}, "add up to 3 pixels"),
    ({"size": [3, 3], "counts": [10, -1]}, "negative"),
    ({"size": [3, 3], "counts": "11 12O"}, "' '"),
    ({"size": [3, 3], "counts": "1X"}, "cut off"),
    ({"counts": "1"}, "dict"),
])
def test_coco_decode_errors(rle, message):
    with pytest.raises(DataError, match=message):
        coco_rle_decode(rle)


# ---- CSV ----------------------------------------------------------------------------------------------------
def test_csv_round_trip(tmp_path: Path):
    masks = {"a.jpg": SMALL, "b.jpg": np.zeros((3, 3), np.uint8), "c.jpg": np.ones((3, 3), np.uint8)}
    path = write_rle_csv(tmp_path / "sub.csv", [(name, rle_encode(m)) for name, m in masks.items()])
    assert path.read_text() == "a.jpg\t2 1 4 2 9 1\nb.jpg\t\nc.jpg\t1 9\n"
    rows = read_rle_csv(path, (3, 3))
    assert [name for name, _ in rows] == list(masks)
    for (name, rle), mask in zip(rows, masks.values()):
        np.testing.assert_array_equal(rle_decode(rle, (3, 3)), mask)


def test_csv_reads_missing_rle_and_blank_lines(tmp_path: Path):
    path = tmp_path / "in.csv"
    path.write_text("x.jpg\n\ny.jpg\t3 2\r\n")
    assert read_rle_csv(path) == [("x.jpg", ""), ("y.jpg", "3 2")]


@pytest.mark.parametrize(("text", "message"), [
    ("a.jpg\t1 2\na.jpg\t3 4\n", "line 2: 'a.jpg' already appeared on line 1"),
    ("a.jpg\t1 2\nb.jpg 1 2\n", "line 2: no tab"),
    ("name,rle\n", "line 1: no tab"),
    ("a.jpg\t1 2\n\t3 4\n", "line 2: the line has an RLE but no name"),
    ("a.jpg\t1 2\n\nb.jpg\t1 two\n", r"line 3 \(b.jpg\): RLE value 'two'"),
    ("a.jpg\t5 6\n", r"line 1 \(a.jpg\): RLE run ends at pixel 10, beyond the 3×3 mask"),
])
def test_csv_errors_name_file_and_line(tmp_path: Path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_rle_csv(path, (3, 3))
    assert str(path) in str(info.value)


def test_csv_write_and_read_errors(tmp_path: Path):
    with pytest.raises(DataError, match="tab"):
        write_rle_csv(tmp_path / "x.csv", [("a\tb.jpg", "")])
    with pytest.raises(DataError, match="does not exist"):
        read_rle_csv(tmp_path / "missing.csv")


def test_decode_csv_to_pngs(tmp_path: Path):
    rng = np.random.default_rng(1)
    masks = {f"img{i}.jpg": (rng.random((23, 31)) < 0.3).astype(np.uint8) for i in range(3)}
    masks["empty.jpg"] = np.zeros((23, 31), np.uint8)
    csv = write_rle_csv(tmp_path / "sub.csv", [(n, rle_encode(m)) for n, m in masks.items()])
    written = decode_rle_csv(csv, (23, 31), tmp_path / "png", value=1)
    assert [p.name for p in written] == ["img0.png", "img1.png", "img2.png", "empty.png"]
    for path, mask in zip(written, masks.values()):
        np.testing.assert_array_equal(read_mask(path), mask)
    clash = write_rle_csv(tmp_path / "clash.csv", [("a.jpg", ""), ("a.png", "")])
    with pytest.raises(DataError, match="both be written to a.png"):
        decode_rle_csv(clash, (2, 2), tmp_path / "clash")


def test_cli_rle_decode(tmp_path: Path, capsys):
    csv = write_rle_csv(tmp_path / "sub.csv", [("a.jpg", rle_encode(SMALL)), ("b.jpg", "")])
    assert main(["rle", "decode", str(csv), "--shape", "3x3", "-o", str(tmp_path / "out")]) == 0
    assert "decoded 2 mask(s)" in capsys.readouterr().out
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "a.png"), SMALL * 255)
    assert read_mask(tmp_path / "out" / "b.png").sum() == 0
    assert main(["rle", "decode", str(csv), "--shape", "2x2", "-o", str(tmp_path / "out2")]) == 2
    assert "line 1 (a.jpg)" in capsys.readouterr().err


def test_cli_rle_encode_round_trips_through_decode(tmp_path: Path, capsys):
    rng = np.random.default_rng(2)
    masks = {"a.png": rng.integers(0, 3, (17, 9)).astype(np.uint8), "b.png": np.zeros((17, 9), np.uint8)}
    (tmp_path / "masks").mkdir()
    for name, mask in masks.items():
        write_png(tmp_path / "masks" / name, mask)
    csv = tmp_path / "sub.csv"
    assert main(["rle", "encode", str(tmp_path / "masks"), "-o", str(csv), "--class", "2"]) == 0
    assert str(csv) in capsys.readouterr().out
    assert main(["rle", "decode", str(csv), "--shape", "17x9", "-o", str(tmp_path / "back"), "--value", "1"]) == 0
    for name, mask in masks.items():
        np.testing.assert_array_equal(read_mask(tmp_path / "back" / name), (mask == 2).astype(np.uint8))
    write_png(tmp_path / "rgb.png", np.dstack([masks["a.png"] * 60, masks["a.png"], masks["a.png"] * 9]))
    assert main(["rle", "encode", str(tmp_path / "rgb.png"), "-o", str(tmp_path / "x.csv")]) == 2
    assert "rgb.png: an RGB colour mask" in capsys.readouterr().err


# ---- rasters larger than memory -----------------------------------------------------------------------------
def write_class_tif(path: Path, bands: np.ndarray, nodata: float | None = None) -> Path:
    """A tiled GeoTIFF as segwise writes class maps (small tiles, so strips cut through them); `bands` is H×W or
    C×H×W."""
    return write_geotiff(path, bands[None] if bands.ndim == 2 else bands, nodata, block=16)


def class_masks(seed: int = 3) -> list[np.ndarray]:
    """Class maps 0..3 whose class-2 blocks make long runs that wrap from one column into the next."""
    rng = np.random.default_rng(seed)
    masks = [np.zeros((9, 11), np.uint8), np.full((9, 11), 2, np.uint8), np.ones((9, 11), np.uint8)]
    for height, width in [(1, 1), (1, 9), (7, 1), (13, 17), (20, 33), (31, 64)]:
        noise = rng.integers(0, 4, (height, width)).astype(np.uint8)
        blocks = np.zeros((height, width), np.uint8)
        for _ in range(3):
            r0, c0 = rng.integers(0, height), rng.integers(0, width)
            blocks[r0:r0 + rng.integers(1, height + 1), c0:c0 + rng.integers(1, width + 1)] = 2
        masks += [noise, blocks, np.where(rng.random((height, width)) < 0.1, noise, blocks)]
    wrap = np.zeros((6, 12), np.uint8)
    wrap[-2:, 3], wrap[:3, 4], wrap[:, 7], wrap[:, 8], wrap[0, 9] = 2, 2, 2, 2, 2  # runs across strip edges 4 and 8
    return masks + [wrap]


@pytest.mark.parametrize("strip", [1, 2, 4, 5, 16, 100])
def test_raster_rle_matches_in_memory_encoding(tmp_path: Path, strip):
    for number, mask in enumerate(class_masks()):
        path = write_class_tif(tmp_path / f"m{number}.tif", mask)
        for foreground in (None, 2, 3):
            assert raster_rle_encode(path, foreground, strip=strip) == rle_encode(mask, foreground), (mask.shape, foreground)


def test_raster_rle_uint16_and_all_foreground_across_strips(tmp_path: Path):
    mask = np.random.default_rng(4).integers(0, 3, (40, 70)).astype(np.uint16) * 1000
    path = write_class_tif(tmp_path / "u16.tif", mask)
    assert raster_rle_encode(path, 2000, strip=16) == rle_encode(mask, 2000)
    assert raster_rle_encode(path) == rle_encode(mask)
    full = write_class_tif(tmp_path / "full.tif", np.ones((5, 9), np.uint8))
    assert raster_rle_encode(full, strip=2) == "1 45"
    assert raster_rle_encode(full, 2, strip=2) == ""


def test_raster_rle_nodata_is_background(tmp_path: Path):
    mask = np.random.default_rng(5).integers(0, 3, (17, 23)).astype(np.uint8)
    mask[3:9, 4:20] = 255
    path = write_class_tif(tmp_path / "nodata.tif", mask, nodata=255)
    assert raster_rle_encode(path, strip=5) == rle_encode(np.where(mask == 255, 0, mask))
    assert raster_rle_encode(path, 1, strip=5) == rle_encode(mask, 1)
    assert raster_rle_encode(path, 255, strip=5) == ""
    ones = write_class_tif(tmp_path / "ones.tif", mask, nodata=1)
    assert raster_rle_encode(ones, 1) == "" and raster_rle_encode(ones) == rle_encode(np.where(mask == 1, 0, mask))


def test_raster_rle_errors_name_the_file(tmp_path: Path):
    rgb = write_class_tif(tmp_path / "rgb.tif", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match="3 bands; RLE encodes a single-band class raster") as info:
        raster_rle_encode(rgb)
    assert str(rgb) in str(info.value)
    missing = tmp_path / "missing.tif"
    with pytest.raises(DataError, match="file not found") as info:
        raster_rle_encode(missing)
    assert str(missing) in str(info.value)
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"not a tiff" * 10)
    with pytest.raises(DataError, match="cannot be read as a raster") as info:
        raster_rle_encode(garbage)
    assert str(garbage) in str(info.value)
    with pytest.raises(ConfigError, match="strip"):
        raster_rle_encode(rgb, strip=0)


def test_raster_rle_reads_one_strip_at_a_time(tmp_path: Path, monkeypatch):
    height, width, strip = 4000, 1000, 32
    mask = np.zeros((height, width), np.uint8)
    mask[500:3500, 100:800] = 1
    mask[::1000, ::3] = 2
    path = write_class_tif(tmp_path / "big.tif", mask)
    expected = rle_encode(mask)
    del mask
    windows = []
    read = DatasetReader.read

    def recording_read(self, *args, window=None, **kwargs):
        windows.append(window)
        return read(self, *args, window=window, **kwargs)

    monkeypatch.setattr(DatasetReader, "read", recording_read)
    tracemalloc.start()
    try:
        text = raster_rle_encode(path, strip=strip)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert text == expected
    assert all(w is not None and w.row_off == 0 and w.height == height and w.width <= strip for w in windows)
    assert [int(w.col_off) for w in windows] == list(range(0, width, strip))
    assert peak < 8 * height * strip < height * width // 2, peak  # a few strip-sized buffers, never the image
