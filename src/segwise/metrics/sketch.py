"""Sketch segmentation metrics of ContextSeg from per-stroke predicted part labels, per category and averaged.

* P-metric: per sketch, the share of drawn length whose label is right (a point weighs the length of the segment
  to its predecessor, a stroke's first point weighs 1, as in SketchGNN's ``eval_with_len``), averaged over sketches.
  Lengths are kept as floats (SketchGNN truncates them to integers), so the metric does not depend on the scale.
* C-metric: per sketch, the share of strokes whose length-weighted correct share is above 75 %, averaged over
  sketches. With one label per stroke this is the per-sketch stroke accuracy.
* SAcc: share of all strokes whose label is right (pooled over the sketches of a category).
* CAcc: share of all ground-truth groups (a part present in a sketch) with at least 75 % of their strokes right.

``mean`` averages each metric over categories (each category counts once); ``overall`` pools every sketch.
Each category also lists every part's stroke count and stroke accuracy (``per_part``), to show rare parts.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segwise.data.sketch.formats import Sketch
from segwise.io_utils import atomic_write_text

__all__ = ["SKETCH_METRICS", "format_sketch_table", "sketch_metrics", "stroke_weights", "write_sketch_metrics"]

SKETCH_METRICS = {
    "p_metric": "P-metric (length-weighted point accuracy, mean over sketches)",
    "c_metric": "C-metric (strokes > 75 % correct, mean over sketches)",
    "sacc": "SAcc (stroke accuracy, pooled)",
    "cacc": "CAcc (groups with >= 75 % strokes correct, pooled)",
}
_THRESHOLD = 0.75


def stroke_weights(stroke: np.ndarray) -> np.ndarray:
    """Per-point weights of a stroke: 1 for the first point, then the length of the segment to the previous one."""
    steps = np.linalg.norm(np.diff(np.asarray(stroke, dtype=np.float64), axis=0), axis=1)
    return np.concatenate([[1.0], steps])


def _sketch_scores(sketch: Sketch, predicted: np.ndarray) -> dict[str, float]:
    """Sums for one sketch: its P and C values and the counts behind SAcc and CAcc."""
    correct = predicted == sketch.labels
    lengths = np.array([stroke_weights(stroke).sum() for stroke in sketch.strokes])
    groups = np.unique(sketch.labels)
    group_ok = [correct[sketch.labels == group].mean() >= _THRESHOLD for group in groups]
    return {
        "p_metric": float((lengths * correct).sum() / lengths.sum()),
        # a stroke-level label makes a stroke's correct share 0 or 1, so "share > 75 %" is "stroke right"
        "c_metric": float(correct.mean()),
        "strokes_right": int(correct.sum()),
        "strokes": len(correct),
        "groups_right": int(np.sum(group_ok)),
        "groups": len(groups),
    }


def _summarise(scores: list[dict[str, float]]) -> dict[str, float]:
    strokes, groups = sum(s["strokes"] for s in scores), sum(s["groups"] for s in scores)
    return {
        "p_metric": float(np.mean([s["p_metric"] for s in scores])),
        "c_metric": float(np.mean([s["c_metric"] for s in scores])),
        "sacc": sum(s["strokes_right"] for s in scores) / strokes,
        "cacc": sum(s["groups_right"] for s in scores) / groups,
        "num_sketches": len(scores),
        "num_strokes": strokes,
        "num_groups": groups,
    }


def _part_accuracy(sketches: list[Sketch], predictions: list[np.ndarray]) -> dict[str, dict]:
    """Stroke count and stroke accuracy of each part of one category (accuracy None for a part without strokes)."""
    names = sketches[0].part_names
    labels = np.concatenate([sketch.labels for sketch in sketches])
    right = np.concatenate([p == sketch.labels for sketch, p in zip(sketches, predictions)])
    size = max(len(names), int(labels.max()) + 1)
    counts, hits = np.bincount(labels, minlength=size), np.bincount(labels, weights=right, minlength=size)
    return {(names[k] if k < len(names) else f"part_{k}"): {
        "strokes": int(counts[k]), "accuracy": float(hits[k] / counts[k]) if counts[k] else None} for k in range(size)}


def sketch_metrics(sketches: Sequence[Sketch], predicted_labels: Sequence[np.ndarray]) -> dict:
    """P/C-metric, SAcc and CAcc per category (with each part's stroke accuracy under ``per_part``), their mean
    over categories and the pooled ``overall`` values.

    ``predicted_labels[i]`` holds one predicted part index per stroke of ``sketches[i]``.
    """
    if len(sketches) != len(predicted_labels):
        raise ValueError(f"{len(sketches)} sketches but {len(predicted_labels)} predictions")
    if not sketches:
        raise ValueError("no sketches to evaluate")
    by_category: dict[str, tuple[list[Sketch], list[np.ndarray]]] = {}
    for sketch, predicted in zip(sketches, predicted_labels):
        predicted = np.asarray(predicted).reshape(-1)
        if len(predicted) != sketch.num_strokes:
            raise ValueError(f"sketch {sketch.key!r} has {sketch.num_strokes} strokes but {len(predicted)} "
                             "predicted labels; predict one label per stroke")
        members, predictions = by_category.setdefault(sketch.category, ([], []))
        members.append(sketch)
        predictions.append(predicted)
    scores = {name: [_sketch_scores(*pair) for pair in zip(*group)] for name, group in sorted(by_category.items())}
    per_category = {name: {**_summarise(scores[name]), "per_part": _part_accuracy(*by_category[name])}
                    for name in scores}
    mean = {key: float(np.mean([m[key] for m in per_category.values()])) for key in SKETCH_METRICS}
    overall = _summarise([score for group in scores.values() for score in group])
    return {"per_category": per_category, "mean": mean, "overall": overall}


def format_sketch_table(metrics: dict) -> str:
    """Aligned text table in percent: one row per category, then the category mean and the pooled overall row."""
    header = ["category", "P %", "C %", "SAcc %", "CAcc %", "sketches", "strokes"]
    rows = [[name, *(f"{100 * m[key]:.2f}" for key in SKETCH_METRICS), str(m["num_sketches"]), str(m["num_strokes"])]
            for name, m in metrics["per_category"].items()]
    overall = metrics["overall"]
    rows.append(["mean (categories)", *(f"{100 * metrics['mean'][key]:.2f}" for key in SKETCH_METRICS), "", ""])
    rows.append(["overall (pooled)", *(f"{100 * overall[key]:.2f}" for key in SKETCH_METRICS),
                 str(overall["num_sketches"]), str(overall["num_strokes"])])
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
             for line in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 2, "-" * len(lines[0]))
    return "\n".join(lines)


def write_sketch_metrics(metrics: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.csv`` (one row per category, then ``mean`` and ``overall``) atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / "metrics.json", out / "metrics.csv"
    atomic_write_text(json_path, json.dumps(metrics, indent=2) + "\n")
    table = io.StringIO(newline="")
    fields = ["category", *SKETCH_METRICS, "num_sketches", "num_strokes", "num_groups"]
    writer = csv.DictWriter(table, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for name, values in [*metrics["per_category"].items(), ("mean", metrics["mean"]), ("overall", metrics["overall"])]:
        writer.writerow({"category": name, **values})
    atomic_write_text(csv_path, table.getvalue())
    return json_path, csv_path
