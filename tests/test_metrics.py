"""Confusion-matrix metrics: agreement with torchmetrics, hand-computed values, NaN policy, table and files; boundary
IoU by hand, its streaming and its place in `segwise eval`."""

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
    BoundaryIoU,
    ConfusionMatrix,
    compute_metrics,
    confusion_matrix,
    format_table,
    metrics_to_rows,
    per_image_iou,
    write_metrics,
)
from segwise.metrics.boundary import boundary_region, boundary_width

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


# ---- boundary IoU ---------------------------------------------------------------------------------------------------
def _squares(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """20×20 label maps: a 6×6 square of class 1 (rows and columns 2..7) on class 0, and the same square moved
    ``shift`` columns to the right."""
    target = np.zeros((20, 20), np.int64)
    target[2:8, 2:8] = 1
    pred = np.zeros_like(target)
    pred[2:8, 2 + shift:8 + shift] = 1
    return pred, target


def test_boundary_width_is_two_percent_of_the_diagonal() -> None:
    assert boundary_width(20, 20) == 1  # 0.02 × 28.3 = 0.57 → 1
    assert boundary_width(3, 2) == 1  # 0.07 rounds to 0: at least 1
    assert boundary_width(100, 100) == 3  # 2.83
    assert boundary_width(512, 1024) == 23  # 22.9


def test_boundary_iou_of_a_shifted_square_by_hand() -> None:
    pred, target = _squares(shift=1)
    boundary = BoundaryIoU(2)
    boundary.update(pred, target)
    # d = 1, so a region's boundary is its pixels with a non-member among their 8 neighbours or on the image edge.
    # Class 1: each square's boundary is its 1-pixel ring, 36 - 16 = 20 pixels. The rings share 5 pixels on the
    # top row (columns 3..7) and 5 on the bottom row; on rows 3..6 the GT ring has columns 2 and 7, the predicted
    # one 3 and 8: nothing shared. Intersection 10, union 20 + 20 - 10 = 30 → 1/3.
    # Class 0: its boundary is the image frame (76 pixels, the edge counts as contour) plus the ring of pixels
    # around the square (8×8 - 6×6 = 28): 104 pixels, in GT and prediction alike. They share the frame, and of the
    # rings rows 1 and 8 (columns 2..8, 7 pixels each); on rows 2..7 the GT ring has columns 1 and 8, the predicted
    # one 2 and 9 (GT column 8 lies inside the predicted square there). Intersection 76 + 14 = 90, union
    # 104 + 104 - 90 = 118.
    assert boundary.intersection.tolist() == [90, 10] and boundary.union.tolist() == [118, 30]
    np.testing.assert_allclose(boundary.per_class(), [90 / 118, 1 / 3])
    metrics = boundary.add_to(compute_metrics(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 2)))
    assert metrics["per_class"][1]["boundary_iou"] == pytest.approx(1 / 3)
    assert metrics["boundary_miou"] == pytest.approx((90 / 118 + 1 / 3) / 2)
    assert metrics["per_class"][1]["iou"] == pytest.approx(30 / 42)  # mIoU is far kinder to the same error


def test_boundary_iou_is_one_for_a_perfect_prediction_and_nan_for_absent_classes() -> None:
    target = np.random.default_rng(0).integers(0, 3, (2, 37, 23))
    target[0, :5] = IGNORE
    boundary = BoundaryIoU(4, IGNORE)
    boundary.update(torch.from_numpy(target), torch.from_numpy(target))
    scores = boundary.per_class()
    np.testing.assert_array_equal(scores[:3], [1.0, 1.0, 1.0])
    assert math.isnan(scores[3])  # class 3 in neither: left out of the mean
    assert boundary.add_to(compute_metrics(np.eye(4)))["boundary_miou"] == 1.0


def test_boundary_region_matches_a_chessboard_distance_transform() -> None:
    from scipy import ndimage

    mask = np.random.default_rng(1).random((30, 41)) < 0.7
    for width in (1, 2, 4):
        padded = np.pad(mask, 1)  # the image edge is contour
        distance = ndimage.distance_transform_cdt(padded, metric="chessboard")[1:-1, 1:-1]
        np.testing.assert_array_equal(boundary_region(mask, width), mask & (distance <= width))


def test_boundary_iou_streams_and_skips_ignored_pixels() -> None:
    pred, target = _squares(shift=1)
    whole = BoundaryIoU(2, IGNORE)
    whole.update(np.stack([pred, target]), np.stack([target, target]))
    one_by_one = BoundaryIoU(2, IGNORE)
    one_by_one.update(pred, target)
    one_by_one.update(target, target)
    assert whole.intersection.tolist() == one_by_one.intersection.tolist()
    assert whole.union.tolist() == one_by_one.union.tolist()
    ignored = target.copy()
    ignored[10:] = IGNORE  # the lower half: whatever is predicted there does not count
    noisy = pred.copy()
    noisy[12:, :] = 1
    a, b = BoundaryIoU(2, IGNORE), BoundaryIoU(2, IGNORE)
    a.update(pred, ignored)
    b.update(noisy, ignored)
    np.testing.assert_array_equal(a.per_class(), b.per_class())
    with pytest.raises(ValueError, match="differs"):
        a.update(pred[:5], target)


def test_boundary_iou_in_table_and_files(tmp_path) -> None:
    pred, target = _squares(shift=1)
    boundary = BoundaryIoU(2)
    boundary.update(pred, target)
    metrics = boundary.add_to(compute_metrics(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 2),
                                              ["ground", "square"]))
    table = format_table(metrics)
    assert "Boundary IoU %" in table and "33.33" in table and "Boundary mIoU" in table
    header, rule, *rows = table.splitlines()[:4]
    assert len({len(line) for line in (header, rule, *rows)}) == 1
    _, csv_path = write_metrics(metrics, tmp_path)
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[1]["boundary_iou"]) == pytest.approx(1 / 3)
    summary = {row["name"]: row["value"] for row in rows if row["kind"] == "summary"}
    assert float(summary["boundary_miou"]) == pytest.approx(metrics["boundary_miou"])
    assert "Boundary" not in format_table(compute_metrics(TINY))  # only when it was computed


def test_semantic_eval_reports_boundary_iou(synthetic_root, one_thread, tmp_path, capsys) -> None:
    from segwise.cli import main
    from tests.helpers import save_untrained_unet_run

    save_untrained_unet_run(tmp_path / "run")
    out = tmp_path / "eval"
    assert main(["eval", str(tmp_path / "run"), str(synthetic_root / "test"), "-o", str(out), "--device", "cpu"]) == 0
    assert "Boundary mIoU" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["boundary_miou"] <= 1 and "boundary_iou" in metrics["per_class"][0]
    assert "boundary_iou" in (out / "metrics.csv").read_text().splitlines()[0]
