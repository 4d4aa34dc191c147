"""Confusion-matrix metrics: agreement with torchmetrics, hand-computed values, NaN policy, table and files."""

import csv
import json
import math
import warnings

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from segwise.errors import ConfigError
from segwise.metrics import (
    ConfusionMatrix,
    compute_metrics,
    confusion_matrix,
    format_table,
    metrics_to_rows,
    per_image_iou,
    write_metrics,
)

K = 5
IGNORE = 255

# Tiny matrix (rows = GT, cols = prediction): class "c" is in neither GT nor prediction.
TINY = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])


@pytest.fixture
def random_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and targets over K classes with about 20 % ignored pixels."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, K, (4, 32, 32), generator=gen)
    pred = torch.where(torch.rand(target.shape, generator=gen) < 0.6, target, torch.randint(0, K, target.shape))
    target[torch.rand(target.shape, generator=gen) < 0.2] = IGNORE
    return pred, target


def test_matches_torchmetrics(random_batch) -> None:
    pred, target = random_batch
    metrics = compute_metrics(confusion_matrix(pred, target, K, IGNORE))
    iou_ref = MulticlassJaccardIndex(num_classes=K, average=None, ignore_index=IGNORE)(pred, target)
    np.testing.assert_allclose([row["iou"] for row in metrics["per_class"]], iou_ref.numpy(), rtol=1e-6)
    miou_ref = MulticlassJaccardIndex(num_classes=K, average="macro", ignore_index=IGNORE)(pred, target)
    assert metrics["miou"] == pytest.approx(miou_ref.item(), rel=1e-6)
    acc_ref = MulticlassAccuracy(num_classes=K, average="micro", ignore_index=IGNORE)(pred, target)
    assert metrics["pixel_accuracy"] == pytest.approx(acc_ref.item(), rel=1e-6)
    assert metrics["num_pixels"] == int((target != IGNORE).sum())


def test_matrix_layout_and_out_of_range_targets() -> None:
    pred = torch.tensor([[0, 1, 1, 2, 0, 1]])
    target = torch.tensor([[0, 0, 1, 2, IGNORE, 9]], dtype=torch.uint8)
    cm = confusion_matrix(pred, target, 3, IGNORE)
    assert cm.dtype == torch.int64
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]  # rows = GT, cols = prediction; 255 and 9 skipped


def test_accumulator_takes_labels_or_logits_and_batches(random_batch) -> None:
    pred, target = random_batch
    whole = confusion_matrix(pred, target, K, IGNORE)
    acc = ConfusionMatrix(K, IGNORE)
    logits = torch.nn.functional.one_hot(pred, K).permute(0, 3, 1, 2).float()
    acc.update(logits[:2], target[:2])
    acc.update(pred[2:], target[2:])
    assert torch.equal(acc.matrix, whole)
    acc.all_reduce()  # not distributed: no-op
    assert torch.equal(acc.matrix, whole)
    assert acc.compute(list("abcde"))["miou"] == compute_metrics(whole)["miou"]
    acc.reset()
    assert acc.matrix.sum() == 0


def test_all_reduce_sums_over_a_process_group(random_batch, tmp_path) -> None:
    pred, target = random_batch
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        acc = ConfusionMatrix(K, IGNORE)
        acc.update(pred, target)
        acc.all_reduce()
        assert torch.equal(acc.matrix, confusion_matrix(pred, target, K, IGNORE))
    finally:
        torch.distributed.destroy_process_group()


def test_hand_computed_dice_fwiou_and_accuracies() -> None:
    m = compute_metrics(TINY, ["a", "b", "c"])
    a, b, c = m["per_class"]
    assert a["iou"] == pytest.approx(5 / 8) and b["iou"] == pytest.approx(3 / 6)
    assert a["dice"] == pytest.approx(10 / 13) and b["dice"] == pytest.approx(6 / 9)
    assert a["precision"] == pytest.approx(5 / 7) and a["recall"] == pytest.approx(5 / 6)
    assert (a["support"], a["pixel_share"]) == (6, pytest.approx(6 / 11))
    assert m["fwiou"] == pytest.approx(6 / 11 * 5 / 8 + 5 / 11 * 3 / 6)
    assert m["pixel_accuracy"] == pytest.approx(8 / 11)
    assert m["mean_accuracy"] == pytest.approx((5 / 6 + 3 / 5) / 2)
    assert m["mdice"] == pytest.approx((10 / 13 + 6 / 9) / 2)
    assert m["num_pixels"] == 11


def test_absent_classes_are_nan_and_left_out_of_means() -> None:
    m = compute_metrics(TINY)
    absent = m["per_class"][2]
    assert all(math.isnan(absent[key]) for key in ("iou", "dice", "precision", "recall"))
    assert absent["name"] == "class_2" and absent["support"] == 0
    assert m["miou"] == pytest.approx((5 / 8 + 3 / 6) / 2)

    # Class 2 predicted but not in GT: IoU 0, counted in mIoU; recall undefined (NaN).
    # Class 1 in GT but never predicted: IoU 0, precision undefined (NaN).
    cm = np.array([[4, 0, 1], [2, 0, 0], [0, 0, 0]])
    m = compute_metrics(cm)
    c0, c1, c2 = m["per_class"]
    assert c2["iou"] == 0.0 and c2["dice"] == 0.0 and math.isnan(c2["recall"]) and c2["precision"] == 0.0
    assert c1["iou"] == 0.0 and math.isnan(c1["precision"]) and c1["recall"] == 0.0
    assert m["miou"] == pytest.approx((4 / 7 + 0 + 0) / 3)
    assert m["mean_accuracy"] == pytest.approx((4 / 5 + 0) / 2)


def test_empty_matrix_gives_nan_summaries_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(torch.zeros(3, 3, dtype=torch.int64))
    assert m["num_pixels"] == 0
    assert all(math.isnan(m[key]) for key in ("pixel_accuracy", "mean_accuracy", "miou", "fwiou", "mdice"))


def test_class_name_count_must_match() -> None:
    with pytest.raises(ConfigError, match="class_names"):
        compute_metrics(TINY, ["a", "b"])


def test_per_image_iou_matches_per_image_confusion(random_batch) -> None:
    pred, target = random_batch
    per_image = per_image_iou(pred, target, K, IGNORE)
    assert per_image.shape == (4, K)
    for i in range(4):
        expected = [row["iou"] for row in compute_metrics(confusion_matrix(pred[i], target[i], K, IGNORE))["per_class"]]
        np.testing.assert_allclose(per_image[i].numpy(), expected)


def test_format_table_names_classes_and_averaging() -> None:
    table = format_table(compute_metrics(TINY, ["road", "building", "water"]))
    for text in ("road", "building", "water", "IoU", "Dice", "Precision", "Recall", "Pixel share", "n/a"):
        assert text in table
    assert "mIoU (mean over classes present)" in table
    assert "62.50" in table  # IoU of "road" in percent with two decimals
    header, rule, *rows = table.splitlines()[:5]
    assert len({len(line) for line in (header, rule, *rows)}) == 1  # columns aligned


def test_write_metrics_round_trips(tmp_path) -> None:
    metrics = compute_metrics(TINY, ["a", "b", "c"])
    json_path, csv_path = write_metrics(metrics, tmp_path / "eval")
    loaded = json.loads(json_path.read_text())
    assert loaded["per_class"][2]["iou"] is None
    assert loaded["miou"] == pytest.approx(metrics["miou"])
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(metrics_to_rows(metrics))
    assert [row["name"] for row in rows if row["kind"] == "class"] == ["a", "b", "c"]
    assert rows[2]["iou"] == ""
    summary = {row["name"]: row["value"] for row in rows if row["kind"] == "summary"}
    assert float(summary["fwiou"]) == pytest.approx(metrics["fwiou"])
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["metrics.csv", "metrics.json"]


def test_absent_classes_can_count_as_zero_as_pytorch_segmentation_did() -> None:
    cm = torch.tensor([[3, 1, 0], [1, 5, 0], [0, 0, 0]])  # class 2 in neither prediction nor ground truth
    nan, zero = compute_metrics(cm, absent_classes="nan"), compute_metrics(cm, absent_classes="zero")
    assert math.isnan(nan["per_class"][2]["iou"]) and zero["per_class"][2]["iou"] == 0.0
    assert zero["miou"] == pytest.approx(nan["miou"] * 2 / 3) and zero["pixel_accuracy"] == nan["pixel_accuracy"]
    assert "absent = 0" in format_table(zero) and "absent = 0" not in format_table(nan)
    with pytest.raises(ConfigError, match="absent_classes must be 'nan' or 'zero'"):
        compute_metrics(cm, absent_classes="skip")
