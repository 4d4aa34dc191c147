"""Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation Evaluation", CVPR 2021):
the IoU of the pixels near the contours only, so that it rewards well-placed edges, which mIoU, dominated by the
interiors of large regions, barely sees.

Per image and class c, G = (ground truth == c) and P = (prediction == c). The boundary region of a mask is its
pixels within d of its contour: the mask minus its erosion by a 3×3 square repeated d times, the image edge counting
as contour (zero padding), as in the authors' code; d = round(0.02 × image diagonal), at least 1. Per class,
|G_d ∩ P_d| and |G_d ∪ P_d| are summed over the data set (pixels whose ground truth is ignored are skipped, as for
mIoU) and divided once at the end; a class whose union is empty is NaN and left out of the mean, which is therefore
over the classes present in the ground truth or the prediction. Only two counts per class are kept, never masks.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

__all__ = ["DILATION_RATIO", "BoundaryIoU", "boundary_region", "boundary_width"]

DILATION_RATIO = 0.02
"""Boundary width as a fraction of the image diagonal (the value Cheng et al. use for semantic segmentation)."""
_SQUARE = np.ones((3, 3), np.uint8)


def boundary_width(height: int, width: int) -> int:
    """d in pixels: the dilation ratio times the image diagonal, rounded, at least 1."""
    return max(1, int(round(DILATION_RATIO * math.hypot(height, width))))


def boundary_region(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels of a boolean H×W mask within ``width`` (chessboard distance) of its contour or of the image edge."""
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    interior = cv2.erode(padded, _SQUARE, iterations=width)[1:-1, 1:-1].astype(bool)
    return mask & ~interior


def _as_numpy(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    return labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)


class BoundaryIoU:
    """Accumulates per-class boundary intersections and unions over an evaluation, image by image."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.intersection = np.zeros(num_classes, np.int64)
        self.union = np.zeros(num_classes, np.int64)

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """Add label maps: one H×W image or a batch N×H×W; ``pred`` must lie in [0, K)."""
        pred, target = _as_numpy(pred), _as_numpy(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
        if pred.ndim == 2:
            pred, target = pred[None], target[None]
        for image_pred, image_target in zip(pred, target):
            self._add_image(image_pred, image_target)

    def _add_image(self, pred: np.ndarray, target: np.ndarray) -> None:
        valid = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        width = boundary_width(*target.shape)
        shown = (np.bincount(target[valid].astype(np.int64), minlength=self.num_classes)
                 + np.bincount(pred[valid].astype(np.int64), minlength=self.num_classes))
        for c in np.flatnonzero(shown[: self.num_classes]):
            truth = boundary_region(target == c, width) & valid
            guess = boundary_region(pred == c, width) & valid
            self.intersection[c] += np.count_nonzero(truth & guess)
            self.union[c] += np.count_nonzero(truth | guess)

    def per_class(self) -> np.ndarray:
        """Boundary IoU of each class (NaN where the class has no boundary pixel in GT or prediction)."""
        return np.where(self.union > 0, self.intersection / np.maximum(self.union, 1), np.nan)

    def add_to(self, metrics: dict) -> dict:
        """Put ``boundary_iou`` into each row of ``metrics["per_class"]`` and their mean, ``boundary_miou``, into
        ``metrics`` (the dict of `compute_metrics`), in place; returns ``metrics``."""
        scores = self.per_class()
        for row, score in zip(metrics["per_class"], scores):
            row["boundary_iou"] = float(score)
        present = scores[~np.isnan(scores)]
        metrics["boundary_miou"] = float(present.mean()) if present.size else math.nan
        return metrics
