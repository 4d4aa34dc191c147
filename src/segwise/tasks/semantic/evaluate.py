"""Evaluation of a trained pixel model on a labelled folder: confusion-matrix metrics, saved predictions, plots of
the worst images."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segwise.data.classmap import ClassMap
from segwise.data.folder import Sample, read_sample_image, read_sample_mask
from segwise.data.readers import find_split, holds_images
from segwise.data.io import write_png
from segwise.data.validate import validate_samples
from segwise.errors import CheckpointError
from segwise.inference.whole import InferenceMode
from segwise.io_utils import ensure_writable_dir
from segwise.metrics import ConfusionMatrix, per_image_miou, write_metrics
from segwise.models.spec import ModelSpec, resolve_model_path
from segwise.progress import track
from segwise.tasks.semantic.predict import Predictor, save_prediction, spec_class_map, with_ensemble
from segwise.visualize import colorize, side_by_side, to_display_rgb


def eval_split(data_dir: Path) -> Path:
    """Accept a split folder (with images/) or a data-set root (then its val/ split)."""
    data_dir = Path(data_dir)
    if not holds_images(data_dir) and (data_dir / "val").is_dir():
        return data_dir / "val"
    return data_dir


def evaluate(model_path: Path, data_dir: Path, out_dir: Path | None = None, *, threshold: float | None = None,
             save: set[str] = frozenset(), plots: int = 0, device: str | None = None,
             ensemble: Sequence[Path] = (), ensemble_method: str | None = None,
             ensemble_weights: Sequence[float] | None = None, mode: InferenceMode | None = None,
             background_index: int | None = None, format: str = "folder",
             absent_classes: str = "nan") -> dict[str, Any]:
    """Dataset-level confusion-matrix metrics of a trained model on a folder; writes metrics.json/csv to out_dir.

    `mode`: whole image (default), sliding windows and/or TTA (`segwise.inference.build_mode`).
    `background_index`: also report the mIoU without that class (`miou_foreground`). `format`: the data set's
    layout (a key of `segwise.data.readers.READERS`). `absent_classes`: "nan" or "zero" (see `compute_metrics`).
    """
    predictor = Predictor.from_path(model_path, device, mode)
    predictor = with_ensemble(predictor, model_path, ensemble, ensemble_method, ensemble_weights)
    spec = predictor.spec
    samples = find_split(format, eval_split(data_dir), spec.extra_channels)
    class_map = spec_class_map(spec)
    report = validate_samples(samples, class_map)
    if report.channels != spec.in_channels:
        raise CheckpointError(f"{model_path} takes {spec.in_channels} channels but {data_dir} has {report.channels}; "
                              "evaluate on data with the bands the model was trained on")
    out_dir = ensure_writable_dir(out_dir or resolve_model_path(model_path)[0].parent / "eval")
    matrix = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    worst: list[tuple[float, int, str, np.ndarray]] = []
    counter = itertools.count()
    for sample in track(samples, "evaluating", unit="images"):
        image = read_sample_image(sample)
        target = read_sample_mask(sample, class_map, image.shape[:2])
        probs = predictor.predict_proba(image, str(sample.image))
        pred = predictor.labels(probs, threshold)
        matrix.update(torch.from_numpy(pred), torch.from_numpy(target))
        if save:
            save_prediction(out_dir / "predictions", sample.name, image, pred, probs, spec, set(save))
        if plots:
            miou = per_image_miou(torch.from_numpy(pred)[None], torch.from_numpy(target)[None], spec.num_classes,
                                  spec.ignore_index).item()
            item = (-miou, next(counter), sample.name, pred)
            (heapq.heappush if len(worst) < plots else heapq.heappushpop)(worst, item)
    metrics = matrix.compute(spec.class_names, background_index, absent_classes)
    metrics["threshold"] = threshold
    metrics["out_dir"] = str(out_dir)
    write_metrics(metrics, out_dir)
    if plots:
        write_plots(out_dir / "plots", sorted(worst, reverse=True), samples, class_map, spec)
    return metrics


def write_plots(plot_dir: Path, worst: list[tuple[float, int, str, np.ndarray]], samples: list[Sample],
                class_map: ClassMap, spec: ModelSpec) -> None:
    """image | ground truth | prediction panels, worst image first (file names start with the rank)."""
    by_name = {s.name: s for s in samples}
    palette = np.asarray(spec.palette, dtype=np.uint8)
    for rank, (neg_iou, _, name, pred) in enumerate(worst):
        sample = by_name[name]
        image = read_sample_image(sample)
        target = read_sample_mask(sample, class_map, image.shape[:2])
        panel = side_by_side([to_display_rgb(image), colorize(target, palette, spec.ignore_index),
                              colorize(pred, palette, spec.ignore_index)], ["image", "ground truth", "prediction"],
                             f"{name}  mIoU {-100 * neg_iou:.1f}%")
        write_png(plot_dir / f"{rank:03d}_{name}.png", panel)
