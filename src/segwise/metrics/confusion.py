"""Semantic-segmentation metrics, all derived from one int64 confusion matrix per evaluation.

The matrix (rows = ground truth, columns = prediction) is accumulated on the device over the whole data set
and summed across DDP ranks; per-class and summary metrics are computed from it once, at the end.

Absent classes (documented choice): a ratio whose denominator is zero is undefined and reported as NaN, never
as 0 or 1. So a class absent from both ground truth and prediction has NaN IoU, Dice, precision and recall; a
class absent from the ground truth but predicted has IoU 0 and Dice 0 (its false positives count) and NaN
recall; a class present in the ground truth but never predicted has IoU 0 and NaN precision. Means skip NaN:
mIoU and mDice average over the classes present in the ground truth or the prediction, and mean accuracy
(mean recall) over the classes present in the ground truth. fwIoU weights each class's IoU by its share of
labelled ground-truth pixels. (pytorch-segmentation counted absent classes as IoU 0 in its mean instead.)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from segwise.errors import ConfigError
from segwise.io_utils import atomic_write_text

_PER_CLASS_KEYS = ("iou", "dice", "precision", "recall", "pixel_share")
_SUMMARY_LABELS = {
    "pixel_accuracy": "Pixel accuracy (labelled pixels)",
    "mean_accuracy": "Mean accuracy (mean recall over classes in GT)",
    "miou": "mIoU (mean over classes present)",
    "fwiou": "fwIoU (IoU weighted by GT pixel share)",
    "mdice": "mDice (mean over classes present)",
    "miou_foreground": "mIoU without the background class",
    "boundary_miou": "Boundary mIoU (d = 2 % of the diagonal; classes present)",
}
_BOUNDARY_KEY = "boundary_iou"  # per class, present when `segwise.metrics.boundary.BoundaryIoU` added it
_TABLE_HEADERS = {"iou": "IoU %", "dice": "Dice %", "precision": "Precision %", "recall": "Recall %",
                  "pixel_share": "Pixel share %", _BOUNDARY_KEY: "Boundary IoU %"}


def _pair_counts(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int, per_image: bool) -> Tensor:
    """Count (target, pred) pairs into ``[N×]K×K`` bins on the device; unlabelled targets add nothing."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    pred, target = pred.long(), target.long()
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    index = target.masked_fill(~valid, 0) * num_classes + pred.masked_fill(~valid, 0)
    bins = num_classes * num_classes
    if per_image:
        index = index + torch.arange(index.shape[0], device=index.device).view(-1, *[1] * (index.ndim - 1)) * bins
        bins *= index.shape[0]
    # scatter_add_ rather than torch.bincount: CUDA bincount reads the input's max back to the host.
    counts = torch.zeros(bins, dtype=torch.int64, device=index.device)
    counts.scatter_add_(0, index.flatten(), valid.flatten().long())
    return counts.view(-1, num_classes, num_classes) if per_image else counts.view(num_classes, num_classes)


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """K×K int64 matrix (rows = ground truth, cols = prediction) of label maps; ``pred`` must lie in ``[0, K)``.

    Pixels whose target is ``ignore_index`` or outside ``[0, K)`` are skipped; nothing is copied to the host.
    """
    return _pair_counts(pred, target, num_classes, ignore_index, per_image=False)


def _nan_ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """Element-wise ratio that is NaN where the denominator is zero."""
    return torch.where(denominator > 0, numerator / denominator, torch.nan)


def _class_scores(cm: Tensor) -> dict[str, Tensor]:
    """Per-class counts and ratios of a float ``[..]×K×K`` confusion matrix."""
    tp = cm.diagonal(dim1=-2, dim2=-1)
    gt = cm.sum(-1)
    pr = cm.sum(-2)
    return {
        "tp": tp,
        "support": gt,
        "iou": _nan_ratio(tp, gt + pr - tp),
        "dice": _nan_ratio(2 * tp, gt + pr),
        "precision": _nan_ratio(tp, pr),
        "recall": _nan_ratio(tp, gt),
    }


def per_image_iou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """``N×K`` IoU of each image and class (NaN where the class is in neither), e.g. to find the worst images."""
    return _class_scores(_pair_counts(pred, target, num_classes, ignore_index, per_image=True).double())["iou"]


def per_image_miou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Mean IoU of each image over the classes it shows (in prediction or ground truth); 1.0 if it shows none."""
    return per_image_iou(pred, target, num_classes, ignore_index).nanmean(dim=1).nan_to_num(1.0)


def compute_metrics(cm: np.ndarray | Tensor, class_names: Sequence[str] | None = None,
                    background_index: int | None = None, absent_classes: str = "nan") -> dict:
    """Per-class IoU/Dice/precision/recall and summary metrics from a K×K confusion matrix (plain Python values).

    With `background_index`, also `miou_foreground`: the mIoU without that class (iSAID/FactSeg report both).
    `absent_classes`: "nan" (default) leaves a class absent from both prediction and ground truth out of the
    means; "zero" counts its IoU and Dice as 0, as pytorch-segmentation did, so old numbers can be compared.
    """
    if absent_classes not in ("nan", "zero"):
        raise ConfigError(f"absent_classes must be 'nan' or 'zero', got {absent_classes!r}")
    cm = (cm.detach().cpu() if isinstance(cm, Tensor) else torch.from_numpy(np.asarray(cm))).double()
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square K×K, got shape {tuple(cm.shape)}")
    num_classes = cm.shape[0]
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(
            f"class_names: got {len(names)} names {names} for a {num_classes}-class confusion matrix; "
            "give exactly one name per class"
        )
    scores = _class_scores(cm)
    if absent_classes == "zero":
        scores["iou"], scores["dice"] = scores["iou"].nan_to_num(0.0), scores["dice"].nan_to_num(0.0)
    total = scores["support"].sum()
    share = _nan_ratio(scores["support"], total)
    per_class = [
        {
            "name": name,
            "iou": scores["iou"][c].item(),
            "dice": scores["dice"][c].item(),
            "precision": scores["precision"][c].item(),
            "recall": scores["recall"][c].item(),
            "pixel_share": share[c].item(),
            "support": int(scores["support"][c].item()),
        }
        for c, name in enumerate(names)
    ]
    metrics = {
        "per_class": per_class,
        "pixel_accuracy": _nan_ratio(scores["tp"].sum(), total).item(),
        "mean_accuracy": scores["recall"].nanmean().item(),
        "miou": scores["iou"].nanmean().item(),
        "fwiou": _nan_ratio((scores["support"] * scores["iou"].nan_to_num()).sum(), total).item(),
        "mdice": scores["dice"].nanmean().item(),
        "num_pixels": int(total.item()),
        "absent_classes": absent_classes,
    }
    if background_index is not None:
        if not 0 <= background_index < num_classes:
            raise ConfigError(f"background index {background_index} is not a class (0..{num_classes - 1})")
        foreground = torch.ones(num_classes, dtype=torch.bool)
        foreground[background_index] = False
        metrics["miou_foreground"] = scores["iou"][foreground].nanmean().item()
    return metrics


class ConfusionMatrix:
    """Accumulates one confusion matrix over an evaluation, on the device of the data, without host syncs."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None) -> None:
        if num_classes < 2:
            raise ConfigError(f"num_classes: got {num_classes}; use K >= 2 (a binary problem uses K = 2)")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` is labels ``N×H×W`` or logits ``N×K×H×W`` (argmax over K)."""
        if pred.ndim == target.ndim + 1:
            pred = pred.argmax(dim=1)
        if self.matrix.device != pred.device:
            self.matrix = self.matrix.to(pred.device)
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def reset(self) -> None:
        """Zero the matrix for a new evaluation."""
        self.matrix.zero_()

    def all_reduce(self) -> None:
        """Sum the matrix over all torch.distributed ranks; does nothing when not running distributed."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.matrix, op=torch.distributed.ReduceOp.SUM)

    def compute(self, class_names: Sequence[str] | None = None, background_index: int | None = None,
                absent_classes: str = "nan") -> dict:
        """Metrics of the accumulated matrix (see ``compute_metrics``)."""
        return compute_metrics(self.matrix, class_names, background_index, absent_classes)


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def _per_class_keys(metrics: dict) -> tuple[str, ...]:
    """The per-class columns of a metrics dict: the confusion-matrix ones, and boundary IoU when it was added."""
    rows = metrics["per_class"]
    return _PER_CLASS_KEYS + ((_BOUNDARY_KEY,) if rows and _BOUNDARY_KEY in rows[0] else ())


def format_table(metrics: dict) -> str:
    """Aligned text table of per-class metrics in percent, then the summary lines naming their averaging."""
    keys = _per_class_keys(metrics)
    header = ["class", *(_TABLE_HEADERS[key] for key in keys)]
    rows = [[row["name"], *(_percent(row[key]) for key in keys)] for row in metrics["per_class"]]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        for line in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    labels = dict(_SUMMARY_LABELS)
    if metrics.get("absent_classes") == "zero":  # name the averaging the numbers used
        labels.update(miou="mIoU (mean over all classes, absent = 0)", mdice="mDice (mean over all, absent = 0)")
    label_width = max(len(label) for label in labels.values())
    lines += [f"{label.ljust(label_width)}  {_percent(metrics[key])} %" for key, label in labels.items()
              if key in metrics]
    lines.append(f"{'Labelled pixels'.ljust(label_width)}  {metrics['num_pixels']:,}")
    return "\n".join(lines)


def metrics_to_rows(metrics: dict) -> list[dict]:
    """Flat rows for CSV: one ``kind="class"`` row per class, then one ``kind="summary"`` row per summary value."""
    rows: list[dict] = [{"kind": "class", **row} for row in metrics["per_class"]]
    rows += [{"kind": "summary", "name": key, "value": metrics[key]} for key in (*_SUMMARY_LABELS, "num_pixels")
             if key in metrics]
    return rows


def nan_to_none(value: object) -> object:
    """Replace float NaN by None recursively so that JSON gets ``null``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [nan_to_none(item) for item in value]
    return value


def write_metrics(metrics: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``metrics.json`` (NaN as null) and ``metrics.csv`` (NaN as empty) into ``out_dir``, atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / "metrics.json", out / "metrics.csv"
    atomic_write_text(json_path, json.dumps(nan_to_none(metrics), indent=2, allow_nan=False) + "\n")
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=("kind", "name", *_per_class_keys(metrics), "support", "value"))
    writer.writeheader()
    writer.writerows(nan_to_none(metrics_to_rows(metrics)))
    atomic_write_text(csv_path, table.getvalue())
    return json_path, csv_path
