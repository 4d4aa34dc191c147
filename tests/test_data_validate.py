"""validate_samples reports every problem of a split at once; statistics are right."""

from pathlib import Path

import numpy as np
import pytest

from segwise.data.classmap import ClassMap
from segwise.data.folder import find_samples
from segwise.data.io import write_png
from segwise.data.validate import compute_mean_std, validate_samples
from segwise.errors import DataError


def _write(split: Path, name: str, mask: np.ndarray, image_size=None, channels=3) -> None:
    h, w = image_size or mask.shape
    image = np.full((h, w, channels), 100, np.uint8)
    write_png(split / "images" / f"{name}.png", image if channels > 1 else image[..., 0])
    write_png(split / "masks" / f"{name}.png", mask)


def test_report_counts_classes_ignore_and_formats(tmp_path: Path):
    split = tmp_path / "val"
    _write(split, "a", np.array([[0, 1], [1, 255]], np.uint8))
    _write(split, "b", np.array([[2, 2, 2], [0, 0, 0]], np.uint8))
    report = validate_samples(find_samples(split), ClassMap(3))
    assert report.num_samples == 2 and report.channels == 3 and report.dtypes == {"uint8"}
    assert report.sizes == {(2, 2): 1, (2, 3): 1}
    np.testing.assert_array_equal(report.class_pixel_counts, [4, 2, 3])
    assert report.ignore_pixels == 1
    text = report.format(["sky", "road", "car"])
    assert "1 road" in text and "20.00%" in text and "ignore" in text


def test_every_bad_file_and_value_is_listed(tmp_path: Path):
    split = tmp_path / "train"
    _write(split, "good", np.zeros((4, 4), np.uint8))
    _write(split, "values", np.array([[0, 7], [9, 1]], np.uint8))
    _write(split, "size", np.zeros((4, 4), np.uint8), image_size=(5, 4))
    _write(split, "gray", np.zeros((4, 4), np.uint8), channels=1)
    _write(split, "broken", np.zeros((4, 4), np.uint8))
    data = (split / "images" / "broken.png").read_bytes()
    (split / "images" / "broken.png").write_bytes(data[:30])
    _write(split, "more", np.full((4, 4), 6, np.uint8))
    with pytest.raises(DataError) as info:
        validate_samples(find_samples(split), ClassMap(6))
    message = str(info.value)
    assert "masks/values.png: values [7, 9] are not classes 0..5" in message
    assert "set data.num_classes / data.class_values, or map them with data.unmapped: ignore" in message
    assert "masks/more.png: values [6]" in message
    assert "masks/size.png: mask is 4×4 but image images/size.png is 5×4" in message
    assert "images/gray.png: channels 1, but most images have 3" in message
    assert "broken.png" in message and "truncated" in message
    assert "5 problems" in message


def test_problem_listing_is_capped(tmp_path: Path):
    split = tmp_path / "train"
    for i in range(60):
        _write(split, f"m{i:02d}", np.full((2, 2), 9, np.uint8))
    with pytest.raises(DataError) as info:
        validate_samples(find_samples(split), ClassMap(2))
    message = str(info.value)
    assert "60 problems" in message and "and 10 more" in message
    assert message.count("are not classes") == 50


def test_unmapped_ignore_counts_as_ignore(tmp_path: Path):
    split = tmp_path / "train"
    _write(split, "a", np.array([[0, 7], [9, 1]], np.uint8))
    report = validate_samples(find_samples(split), ClassMap(2, unmapped="ignore"))
    assert report.ignore_pixels == 2
    np.testing.assert_array_equal(report.class_pixel_counts, [1, 1])


def test_compute_mean_std_matches_numpy(tmp_path: Path):
    split = tmp_path / "train"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 65535, (h, 7, 3)).astype(np.uint16) for h in (5, 9, 3)]
    for i, image in enumerate(images):
        write_png(split / "images" / f"{i}.png", image)
        write_png(split / "masks" / f"{i}.png", np.zeros(image.shape[:2], np.uint8))
    mean, std = compute_mean_std(find_samples(split))
    pixels = np.concatenate([image.reshape(-1, 3) for image in images]).astype(np.float64)
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-10)
