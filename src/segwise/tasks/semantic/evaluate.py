"""Evaluation of a trained pixel model on a labelled folder: confusion-matrix metrics, saved predictions, plots of
the worst images."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import replace
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segwise.data.folder import read_sample_image, read_sample_mask
from segwise.data.readers import default_split, find_split
from segwise.data.io import write_png
from segwise.data.validate import validate_samples
from segwise.errors import CheckpointError
from segwise.inference.onnx_backend import Runtime
from segwise.inference.whole import InferenceMode
from segwise.io_utils import ensure_writable_dir
from segwise.metrics import ConfusionMatrix, per_image_iou, per_image_miou, write_metrics
from segwise.metrics.boundary import BoundaryIoU
from segwise.metrics.tables import PER_IMAGE_FILES, table_path, write_table
from segwise.models.spec import ModelSpec, resolve_model_path
from segwise.progress import track
from segwise.tasks.semantic.predict import Predictor, save_prediction, spec_class_map, with_ensemble
from segwise.visualize import colorize, side_by_side, to_display_rgb


def evaluate(model_path: Path, data_dir: Path, out_dir: Path | None = None, *, threshold: float | None = None,
             save: set[str] = frozenset(), plots: int = 0, device: str | None = None,
             ensemble: Sequence[Path] = (), ensemble_method: str | None = None,
             ensemble_weights: Sequence[float] | None = None, mode: InferenceMode | None = None,
             background_index: int | None = None, format: str = "folder",
             absent_classes: str = "nan", per_image: str | None = None,
             input_size: Sequence[int] | None = None, runtime: Runtime | None = None) -> dict[str, Any]:
    """Dataset-level confusion-matrix metrics of a trained model on a folder; writes metrics.json/csv to out_dir.

    `mode`: whole image (default), sliding windows and/or TTA (`segwise.inference.build_mode`).
    `background_index`: also report the mIoU without that class (`miou_foreground`). `format`: the data set's
    layout (a key of `segwise.data.readers.READERS`). `absent_classes`: "nan" or "zero" (see `compute_metrics`).
    `plots`: panels of the N worst images, or of every image when negative (written as they come).
    `per_image`: also write the per-image table (`per_image_rows`) in this style (`segwise.metrics.tables`).
    `input_size`: resize inputs to [H, W] for the model instead of its training size (the smp trainer's
    --tile-size). `runtime`: what runs the forward pass (`inference.onnx_backend.Runtime`; default eager torch).
    """
    predictor = Predictor.from_path(model_path, device, mode, runtime)
    if input_size is not None:
        predictor.spec = replace(predictor.spec, image_size=list(input_size))
    predictor = with_ensemble(predictor, model_path, ensemble, ensemble_method, ensemble_weights)
    spec = predictor.spec
    samples = find_split(format, default_split(format, data_dir), spec.extra_channels)  # a split, or a root's val
    class_map = spec_class_map(spec)
    report = validate_samples(samples, class_map)
    if report.channels != spec.in_channels:
        raise CheckpointError(f"{model_path} takes {spec.in_channels} channels but {data_dir} has {report.channels}; "
                              "evaluate on data with the bands the model was trained on")
    onnx_file = Path(model_path).suffix == ".onnx"
    model_dir = Path(model_path).parent if onnx_file else resolve_model_path(model_path)[0].parent
    out_dir = ensure_writable_dir(out_dir or model_dir / "eval")
    matrix = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    boundary = BoundaryIoU(spec.num_classes, spec.ignore_index)
    worst: list[tuple[float, int, str, np.ndarray]] = []
    counter = itertools.count()
    rows: list[list[Any]] = []
    for sample in track(samples, "evaluating", unit="images"):
        image = read_sample_image(sample)
        target = read_sample_mask(sample, class_map, image.shape[:2])
        probs = predictor.predict_proba(image, str(sample.image))
        pred = predictor.labels(probs, threshold)
        matrix.update(torch.from_numpy(pred), torch.from_numpy(target))
        boundary.update(pred, target)
        if save:
            save_prediction(out_dir / "predictions", sample.name, image, pred, probs, spec, set(save))
        if per_image:
            rows.append([sample.image.name, *image_scores(pred, target, spec)])
        if plots < 0:
            write_plot(out_dir / "plots" / f"{sample.name}.png", sample.name, image, target, pred, spec)
        elif plots:
            miou = per_image_miou(torch.from_numpy(pred)[None], torch.from_numpy(target)[None], spec.num_classes,
                                  spec.ignore_index).item()
            item = (-miou, next(counter), sample.name, pred)
            (heapq.heappush if len(worst) < plots else heapq.heappushpop)(worst, item)
    metrics = boundary.add_to(matrix.compute(spec.class_names, background_index, absent_classes))
    metrics["confusion_matrix"] = matrix.matrix.cpu().tolist()  # rows = ground truth, columns = prediction
    metrics["threshold"] = threshold
    metrics["out_dir"] = str(out_dir)
    write_metrics(metrics, out_dir)
    if per_image:
        header = ["file", "iou", "accuracy"] + ([f"iou_{name}" for name in spec.class_names] if per_image == "plain"
                                                else [])
        table = table_path(out_dir, PER_IMAGE_FILES, per_image)
        write_table(table, header, [row[:len(header)] for row in rows], per_image)
        metrics["per_image_table"] = str(table)
    if plots > 0:
        by_name = {s.name: s for s in samples}
        for rank, (_, _, name, pred) in enumerate(sorted(worst, reverse=True)):  # read again: only labels were kept
            image = read_sample_image(by_name[name])
            target = read_sample_mask(by_name[name], class_map, image.shape[:2])
            write_plot(out_dir / "plots" / f"{rank:03d}_{name}.png", name, image, target, pred, spec)
    return metrics


def image_scores(pred: np.ndarray, target: np.ndarray, spec: ModelSpec) -> list[float]:
    """One image's row of the per-image table: its IoU (of class 1 for a two-class model, as the smp trainer's
    single-class IoU; else the mean over the classes it shows), pixel accuracy over labelled pixels, and each
    class's IoU (NaN where a class is in neither prediction nor ground truth)."""
    ious = per_image_iou(torch.from_numpy(pred)[None], torch.from_numpy(target)[None], spec.num_classes,
                         spec.ignore_index)[0]
    score = ious[1] if spec.num_classes == 2 else ious.nanmean()
    labelled = (target != spec.ignore_index) & (target >= 0) & (target < spec.num_classes)
    accuracy = float((pred[labelled] == target[labelled]).mean()) if labelled.any() else float("nan")
    return [float(score), accuracy, *ious.tolist()]


def write_plot(path: Path, name: str, image: np.ndarray, target: np.ndarray, pred: np.ndarray,
               spec: ModelSpec) -> None:
    """An image | ground truth | prediction panel captioned with the image's mIoU and pixel accuracy."""
    palette = np.asarray(spec.palette, dtype=np.uint8)
    miou = per_image_miou(torch.from_numpy(pred)[None], torch.from_numpy(target)[None], spec.num_classes,
                          spec.ignore_index).item()
    accuracy = image_scores(pred, target, spec)[1]
    panel = side_by_side([to_display_rgb(image), colorize(target, palette, spec.ignore_index),
                          colorize(pred, palette, spec.ignore_index)], ["image", "ground truth", "prediction"],
                         f"{name}  mIoU {100 * miou:.1f}%  accuracy {100 * accuracy:.1f}%")
    write_png(path, panel)
