"""Assemble the report: read the run and the evaluation, draw the figures, fill the template, write one file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from segwise.io_utils import atomic_write_text
from segwise.metrics import metrics_to_rows
from segwise.metrics.sketch import SKETCH_METRICS
from segwise.report.figures import class_images_figure, confusion_figure, curve_figures, file_uri
from segwise.report.sources import Evaluation, RunSource, holds_results, read_evaluation, read_run
from segwise.report.template import PAGE

REPORT_FILE = "report.html"
MODEL_FIELDS = ("name", "encoder", "in_channels", "extra_channels", "num_classes", "image_size", "ignore_index",
                "binary")
PER_CLASS_COLUMNS = {"iou": "IoU", "dice": "Dice", "precision": "Precision", "recall": "Recall",
                     "pixel_share": "Pixel share", "boundary_iou": "Boundary IoU"}
SKETCH_LABELS = {"p_metric": "P", "c_metric": "C", "sacc": "SAcc", "cacc": "CAcc"}
TRIMAP_COLUMNS = {"iou_background": "BG %", "iou_unknown": "Unknown %", "iou_foreground": "FG %", "miou": "mIoU %",
                  "dataset_miou": "mIoU (data set) %", "sad": "SAD", "mse": "MSE", "grad": "Grad"}
TRIMAP_IOUS = ("iou_background", "iou_unknown", "iou_foreground", "miou", "dataset_miou")
CONFUSION_MISSING = ("this metrics.json holds no confusion matrix (written by an older segwise); run `segwise eval` "
                     "again to add it")


def default_eval_dir(run: Path) -> Path | None:
    """RUN/eval when an evaluation wrote its metrics there (where `segwise eval` writes by default), else None."""
    folder = Path(run) / "eval"
    return folder if holds_results(folder) else None


def build_report(run: Path, eval_dir: Path | None = None, out: Path | None = None) -> Path:
    """Write the HTML report of a run (and of the evaluation in `eval_dir`) to `out`, by default
    EVAL_DIR/report.html (RUN/report.html without an evaluation); returns its path."""
    source = read_run(run)
    evaluation = read_evaluation(eval_dir) if eval_dir is not None else None
    out = Path(out) if out is not None else (evaluation.directory if evaluation else source.directory) / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render(source, evaluation))
    return out


def render(source: RunSource, evaluation: Evaluation | None) -> str:
    """The page's HTML (every value escaped by jinja2's autoescape)."""
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters["pct"] = percent
    context: dict[str, Any] = {
        "title": source.directory.resolve().name, "run": str(source.directory),
        "eval_dir": str(evaluation.directory) if evaluation else None,
        "model": model_summary(source.model), "classes": class_swatches(source.model),
        "config_text": source.config_text, "curves": curve_figures(source.scalars),
        "semantic": None, "sketch": None, "trimap": None,
    }
    if evaluation is not None:
        context.update(semantic=evaluation.semantic and semantic_context(evaluation),
                       sketch=evaluation.sketch and {**sketch_context(evaluation.sketch),
                                                     "panels": embedded_panels(evaluation)},
                       trimap=evaluation.trimap and trimap_context(evaluation))
    return environment.from_string(PAGE).render(context)


def percent(value: float | None) -> str:
    """A ratio in percent with two decimals; 'n/a' for a missing value (null in the JSON, NaN)."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def model_summary(model: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The model.yaml fields a reader wants first (architecture, encoder, bands, classes, input size)."""
    return [(key, model[key]) for key in MODEL_FIELDS if model and model.get(key) not in (None, [], {})]


def class_swatches(model: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(class name, #rrggbb of its palette colour) of each class of model.yaml."""
    if not model or not model.get("class_names") or not model.get("palette"):
        return []
    return [(name, "#{:02x}{:02x}{:02x}".format(*colour)) for name, colour in zip(model["class_names"],
                                                                                   model["palette"])]


def semantic_context(evaluation: Evaluation) -> dict[str, Any]:
    """Per-class table, summary values, the confusion matrix (figure + raw counts) and the worst-image panels."""
    metrics = evaluation.semantic
    first = metrics["per_class"][0] if metrics["per_class"] else {}
    keys = [key for key in PER_CLASS_COLUMNS if key in first]
    names = [row["name"] for row in metrics["per_class"]]
    context: dict[str, Any] = {
        "columns": [PER_CLASS_COLUMNS[key] for key in keys],
        "rows": [{"name": row["name"], "values": [row[key] for key in keys], "support": row["support"]}
                 for row in metrics["per_class"]],
        "summary": [(row["name"], row["value"]) for row in metrics_to_rows(metrics)
                    if row["kind"] == "summary" and row["name"] != "num_pixels"],
        "confusion": None, "confusion_missing": CONFUSION_MISSING,
        "panels": embedded_panels(evaluation),
        "more_panels": evaluation.more_panels,
    }
    matrix = metrics.get("confusion_matrix")
    if matrix:
        context["confusion"] = {"uri": confusion_figure(np.asarray(matrix), names), "classes": names,
                                "classes_json": json.dumps(names), "matrix_json": json.dumps(matrix),
                                "rows": list(zip(names, matrix))}
    return context


def embedded_panels(evaluation: Evaluation) -> list[dict[str, Any]]:
    """The panels `eval --plots` / `sketch eval --plots` wrote, as data URIs with their names (and mIoU)."""
    return [{"name": panel.name, "miou": panel.miou, "uri": file_uri(panel.path)} for panel in evaluation.panels]


def sketch_context(metrics: dict[str, Any]) -> dict[str, Any]:
    """Per-category P/C/SAcc/CAcc rows (then the category mean and the pooled overall row) and per-part accuracy."""
    keys = list(SKETCH_METRICS)
    rows = [(name, [m[key] for key in keys], m["num_sketches"], m["num_strokes"])
            for name, m in metrics["per_category"].items()]
    rows.append(("mean (categories)", [metrics["mean"][key] for key in keys], "", ""))
    overall = metrics["overall"]
    rows.append(("overall (pooled)", [overall[key] for key in keys], overall["num_sketches"], overall["num_strokes"]))
    return {"split": metrics.get("split", "?"), "model": metrics.get("model", "?"),
            "columns": [SKETCH_LABELS.get(key, key) for key in keys], "rows": rows,
            "parts": [(name, list(m.get("per_part", {}).items())) for name, m in metrics["per_category"].items()]}


def trimap_context(evaluation: Evaluation) -> dict[str, Any]:
    """BG/Unknown/FG IoU table per data set (+ matting errors when measured) and the saved trimaps, coloured."""
    results = evaluation.trimap
    keys = [key for key in TRIMAP_COLUMNS if any(key in result for result in results.values())]

    def cell(key: str, value: float | None) -> str:
        if key in TRIMAP_IOUS or value is None or math.isnan(value):
            return percent(value)
        return f"{value:.4g}"

    rows = [(name, result.get("images", ""), [cell(key, result.get(key)) for key in keys])
            for name, result in results.items()]
    figures = [(name, trimap_figure(paths)) for name, paths in evaluation.trimaps.items() if paths]
    overlays = [(name, [{"name": path.stem, "uri": file_uri(path)} for path in paths])
                for name, paths in evaluation.overlays.items() if paths]
    return {"columns": [TRIMAP_COLUMNS[key] for key in keys], "rows": rows, "figures": figures,
            "overlays": overlays}


def trimap_figure(paths: list[Path]) -> str:
    """Saved 0/128/255 trimaps coloured by class (the colours of `segwise trimap predict --save overlay`)."""
    from segwise.data.io import read_mask
    from segwise.data.matting import trimap_classes
    from segwise.metrics.trimap import TRIMAP_CLASSES
    from segwise.tasks.trimap.infer import OVERLAY_PALETTE
    from segwise.visualize import colorize

    images = [colorize(trimap_classes(read_mask(path)), OVERLAY_PALETTE) for path in paths]
    return class_images_figure(images, [path.stem for path in paths], TRIMAP_CLASSES, OVERLAY_PALETTE)
