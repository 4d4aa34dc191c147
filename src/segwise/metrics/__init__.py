"""Metrics: the semantic confusion-matrix metrics and boundary IoU here; each task's own metrics live in a module of
their own."""

from segwise.metrics.boundary import BoundaryIoU
from segwise.metrics.confusion import (
    ConfusionMatrix,
    compute_metrics,
    confusion_matrix,
    format_table,
    metrics_to_rows,
    per_image_iou,
    per_image_miou,
    write_metrics,
)

__all__ = [
    "BoundaryIoU",
    "ConfusionMatrix",
    "compute_metrics",
    "confusion_matrix",
    "format_table",
    "metrics_to_rows",
    "per_image_iou",
    "per_image_miou",
    "write_metrics",
]
