"""Trimap metrics of the trimap ViT: background / unknown / foreground IoU averaged per image, the dataset-level
confusion-matrix IoU, the reference's per-row averaging as a named compatibility option, and matting errors of an
alpha matte.

Per image (the trimap ViT's intended definition): IoU_c = |P_c ∩ G_c| / |P_c ∪ G_c|, skipped when the union is
empty, averaged over images; mean IoU is the mean of the three, averaged over the images where all three are defined.
`averaging="per_row_reference"` applies the averaging of the trimap ViT's published numbers, whose evaluation fed
H×W maps to a routine that kept dim 0, so each image scored the mean of its per-row IoUs (its labels were also
resized and padded to 448 px, which segwise does not do: the option matches the averaging, not the protocol).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy.ndimage import gaussian_gradient_magnitude
from torch import Tensor

from segwise.metrics.confusion import ConfusionMatrix, per_image_iou

TRIMAP_CLASSES = ("background", "unknown", "foreground")
Averaging = Literal["image", "per_row_reference"]
AVERAGINGS = ("image", "per_row_reference")
GRADIENT_SIGMA = 1.4  # Rhemann et al. 2009: Gaussian first-derivative filters with sigma 1.4


def image_trimap_iou(pred: Tensor, target: Tensor, ignore_index: int = 255,
                     averaging: Averaging = "image") -> Tensor:
    """The 3 class IoUs of one H×W prediction (NaN where a class is in neither map)."""
    if averaging == "image":
        return per_image_iou(pred[None], target[None], 3, ignore_index)[0]
    if averaging == "per_row_reference":
        return per_image_iou(pred, target, 3, ignore_index).nanmean(0)  # rows play the role of images
    raise ValueError(f"averaging must be one of {AVERAGINGS}, got {averaging!r}")


class TrimapMeter:
    """Accumulates per-image IoUs and one confusion matrix over a data set."""

    def __init__(self, ignore_index: int = 255, averaging: Averaging = "image") -> None:
        if averaging not in AVERAGINGS:
            raise ValueError(f"averaging must be one of {AVERAGINGS}, got {averaging!r}")
        self.ignore_index, self.averaging = ignore_index, averaging
        self.matrix = ConfusionMatrix(3, ignore_index)
        self.ious: list[Tensor] = []

    def update(self, pred: Tensor, target: Tensor) -> Tensor:
        """Add one H×W prediction; returns its 3 class IoUs."""
        ious = image_trimap_iou(pred, target, self.ignore_index, self.averaging).double()
        self.ious.append(ious)
        self.matrix.update(pred[None], target[None])
        return ious

    def compute(self) -> dict[str, float | int]:
        """Per-image means of each class IoU and of mIoU, and the dataset-level IoUs of the confusion matrix."""
        table = torch.stack(self.ious) if self.ious else torch.full((0, 3), torch.nan, dtype=torch.float64)
        complete = table[~table.isnan().any(1)]
        result: dict[str, float | int] = {"images": len(self.ious), "averaging": self.averaging}
        for c, name in enumerate(TRIMAP_CLASSES):
            result[f"iou_{name}"] = table[:, c].nanmean().item()
        result["miou"] = complete.mean(1).mean().item() if len(complete) else float("nan")
        dataset = self.matrix.compute(TRIMAP_CLASSES)
        for row in dataset["per_class"]:
            result[f"dataset_iou_{row['name']}"] = row["iou"]
        result["dataset_miou"] = dataset["miou"]
        return result


def matting_errors(alpha: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> dict[str, float]:
    """SAD (Σ|α − α*| / 1000), MSE and gradient error (Σ(|∇α| − |∇α*|)² / 1000, Gaussian derivatives σ = 1.4) of
    alpha mattes in [0, 1], over `region` (a boolean map, default the whole image)."""
    alpha, truth = np.asarray(alpha, np.float64), np.asarray(truth, np.float64)
    region = np.ones(alpha.shape, bool) if region is None else np.asarray(region, bool)
    diff = (alpha - truth)[region]
    gradient = (gaussian_gradient_magnitude(alpha, GRADIENT_SIGMA) - gaussian_gradient_magnitude(truth, GRADIENT_SIGMA))
    return {"sad": float(np.abs(diff).sum() / 1000), "mse": float((diff ** 2).mean()) if diff.size else float("nan"),
            "grad": float((gradient[region] ** 2).sum() / 1000)}


def format_trimap_table(results: dict[str, dict[str, float]], columns: Sequence[str] | None = None) -> str:
    """Per-dataset table like the trimap ViT's evaluation log: BG / Unknown / FG / mIoU in percent (+ any extra
    columns)."""
    base = [("BG", "iou_background"), ("Unknown", "iou_unknown"), ("FG", "iou_foreground"), ("mIoU", "miou"),
            ("mIoU (dataset)", "dataset_miou")]
    extra = [(name.upper(), name) for name in (columns or ()) if any(name in r for r in results.values())]
    header = ["Dataset", "images", *(label for label, _ in base + extra)]

    def cell(result: dict[str, float], key: str) -> str:
        value = result.get(key, float("nan"))
        if value is None or np.isnan(value):
            return "n/a"
        return f"{100 * value:.2f}" if key in dict(base).values() else f"{value:.4g}"

    rows = [[name, str(r["images"]), *(cell(r, key) for _, key in base + extra)] for name, r in results.items()]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
