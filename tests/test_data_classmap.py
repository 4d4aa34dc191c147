"""ClassMap: raw mask values and colours to class indices, and the option checks."""

import numpy as np
import pytest

from segwise.data.classmap import ClassMap
from segwise.errors import ConfigError, DataError


def test_index_mask_keeps_values_and_ignore():
    cm = ClassMap(num_classes=3)
    raw = np.array([[0, 1, 2], [255, 2, 0]], np.uint8)
    out = cm.encode(raw)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, raw.astype(np.int64))
    assert cm.invalid_values(raw) == []


def test_index_mask_out_of_range_errors_or_ignores():
    raw = np.array([[0, 7, 2], [9, 7, 254]], np.uint16)
    strict = ClassMap(num_classes=6)
    assert strict.invalid_values(raw) == [7, 9, 254]
    with pytest.raises(DataError, match=r"values \[7, 9, 254\] are not classes 0\.\.5.*data\.unmapped: ignore"):
        strict.encode(raw)
    lenient = ClassMap(num_classes=6, unmapped="ignore")
    np.testing.assert_array_equal(lenient.encode(raw), [[0, 255, 2], [255, 255, 255]])


def test_class_values_map_raw_values_in_order():
    cm = ClassMap.from_options(class_values=[10, 0, 20])
    assert cm.num_classes == 3
    raw = np.array([[0, 10, 20, 255, 5]], np.uint8)
    assert cm.invalid_values(raw) == [5]
    np.testing.assert_array_equal(ClassMap(3, values=(10, 0, 20), unmapped="ignore").encode(raw), [[1, 0, 2, 255, 255]])


def test_max_mask_value_and_wide_integer_masks():
    cm = ClassMap.from_options(max_mask_value=4)
    assert cm.num_classes == 5 and cm.values is None
    raw = np.array([[0, 4, 5, -3]], np.int32)
    assert cm.invalid_values(raw) == [-3, 5]
    float_raw = np.array([[1.0, 2.5, 4.0]], np.float32)
    assert cm.invalid_values(float_raw) == [2.5]


def test_binary_maps_0_255_masks():
    cm = ClassMap.from_options(binary=True)
    assert cm.num_classes == 2
    raw = np.array([[0, 255, 1, 128]], np.uint8)
    np.testing.assert_array_equal(cm.encode(raw), [[0, 1, 1, 1]])


def test_palette_maps_colours_and_reports_unknown_colours():
    cm = ClassMap.from_options(palette=[[0, 0, 0], "#ff0000", (0, 255, 0)])
    assert cm.num_classes == 3
    raw = np.array([[[0, 0, 0], [255, 0, 0], [0, 255, 0], [1, 2, 3]]], np.uint8)
    assert cm.invalid_values(raw) == [(1, 2, 3)]
    with pytest.raises(DataError, match=r"colours \[\(1, 2, 3\)\] are not in data\.palette"):
        cm.encode(raw)
    ignoring = ClassMap(3, palette=cm.palette, unmapped="ignore")
    np.testing.assert_array_equal(ignoring.encode(raw), [[0, 1, 2, 255]])


def test_rgb_mask_without_palette_asks_for_palette():
    with pytest.raises(DataError, match="set data.palette"):
        ClassMap(3).encode(np.zeros((2, 2, 3), np.uint8))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_classes": 4, "class_values": [1, 2, 3]}, "disagree"),
        ({"num_classes": 3, "binary": True}, "disagree"),
        ({"class_values": [1, 2], "max_mask_value": 2}, "keep only one"),
        ({"palette": [[0, 0, 0], [300, 0, 0]]}, r"data\.palette\[1\]"),
        ({"palette": [[0, 0, 0], [0, 0, 0]]}, "repeats"),
        ({"class_values": [1, 1, 2]}, "repeats"),
        ({}, "set data.num_classes"),
        ({"num_classes": 3, "ignore_index": 1}, "ignore_index 1 is a class index"),
        ({"num_classes": 3, "unmapped": "drop"}, "data.unmapped"),
        ({"class_values": [0, 255]}, "contains ignore_index"),
    ],
)
def test_conflicting_options_raise_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        ClassMap.from_options(**options)


def test_encode_is_vectorised_for_16_bit_masks():
    cm = ClassMap(num_classes=1000, ignore_index=65535)
    raw = np.random.default_rng(0).integers(0, 1000, (512, 512)).astype(np.uint16)
    np.testing.assert_array_equal(cm.encode(raw), raw)
