"""Trimap IoU (per image, dataset-level, the trimap ViT's per-row averaging) and matting errors on crafted cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segwise.metrics.trimap import TrimapMeter, format_trimap_table, image_trimap_iou, matting_errors

T = torch.tensor


def test_per_image_iou_by_hand() -> None:
    target = T([[0, 0, 1, 1], [0, 1, 1, 2], [2, 2, 2, 2]])
    pred = T([[0, 1, 1, 1], [0, 1, 2, 2], [2, 2, 2, 2]])
    # BG: ∩ 2, ∪ 3; unknown: ∩ 3, ∪ 5; FG: ∩ 5, ∪ 6
    assert image_trimap_iou(pred, target).tolist() == pytest.approx([2 / 3, 3 / 5, 5 / 6])


def test_ignored_pixels_count_nowhere_and_absent_classes_are_nan() -> None:
    target = T([[0, 0, 255], [2, 2, 255]])
    pred = T([[0, 0, 1], [2, 2, 1]])
    ious = image_trimap_iou(pred, target)
    assert ious[0] == 1 and ious[2] == 1 and math.isnan(ious[1])


def test_mean_iou_only_over_images_with_all_three_classes() -> None:
    meter = TrimapMeter()
    meter.update(T([[0, 1, 2, 2]]), T([[0, 1, 1, 2]]))  # 1, 1/2, 1/2
    meter.update(T([[0, 0, 2, 2]]), T([[0, 0, 2, 2]]))  # unknown absent: NaN, excluded from mIoU
    result = meter.compute()
    assert result["images"] == 2
    assert result["iou_background"] == pytest.approx(1.0)
    assert result["iou_unknown"] == pytest.approx(0.5)
    assert result["iou_foreground"] == pytest.approx(0.75)
    assert result["miou"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # dataset level: BG 3/3, unknown 1/2, FG ∩ 3, ∪ 4
    assert result["dataset_iou_unknown"] == pytest.approx(0.5)
    assert result["dataset_iou_foreground"] == pytest.approx(0.75)
    assert result["dataset_miou"] == pytest.approx((1 + 0.5 + 0.75) / 3)


def test_per_row_reference_averaging_differs_and_is_named() -> None:
    """The trimap ViT's published numbers averaged per-row IoUs: a row with a tiny unknown error weighs as much as
    a big one."""
    target = T([[1, 1, 1, 1], [0, 0, 0, 1]])
    pred = T([[1, 1, 1, 1], [0, 0, 0, 0]])
    image = image_trimap_iou(pred, target)
    rows = image_trimap_iou(pred, target, averaging="per_row_reference")
    assert image[1].item() == pytest.approx(4 / 5)  # unknown: ∩ 4, ∪ 5 over the image
    assert rows[1].item() == pytest.approx((1 + 0) / 2)  # row 1: 1, row 2: 0
    assert rows[0].item() == pytest.approx(3 / 4)  # BG only in row 2: 3/4
    assert TrimapMeter(averaging="per_row_reference").averaging == "per_row_reference"
    with pytest.raises(ValueError, match="averaging"):
        TrimapMeter(averaging="rows")


def test_matting_errors_by_hand() -> None:
    truth = np.zeros((10, 10))
    alpha = np.full((10, 10), 0.1)
    errors = matting_errors(alpha, truth)
    assert errors["sad"] == pytest.approx(100 * 0.1 / 1000)
    assert errors["mse"] == pytest.approx(0.01)
    assert errors["grad"] == pytest.approx(0.0, abs=1e-12)  # a constant offset has no gradient
    edge = np.zeros((10, 10))
    edge[:, 5:] = 1
    assert matting_errors(edge, truth)["grad"] > 0
    region = np.zeros((10, 10), bool)
    region[0, 0] = True
    assert matting_errors(alpha, truth, region)["sad"] == pytest.approx(0.1 / 1000)


def test_table_lists_every_dataset() -> None:
    results = {"comp1k": {"images": 3, "iou_background": 0.9, "iou_unknown": 0.5, "iou_foreground": 0.8,
                          "miou": 0.7333, "dataset_miou": 0.75, "sad": 12.5},
               "am200": {"images": 1, "iou_background": 1.0, "iou_unknown": float("nan"), "iou_foreground": 1.0,
                         "miou": float("nan"), "dataset_miou": 1.0}}
    table = format_trimap_table(results, columns=("sad",))
    lines = table.splitlines()
    assert lines[0].split()[:6] == ["Dataset", "images", "BG", "Unknown", "FG", "mIoU"]
    assert "comp1k" in lines[2] and "50.00" in lines[2] and "12.5" in lines[2]
    assert "am200" in lines[3] and "n/a" in lines[3]
