"""Sketch metrics on hand-computed cases: P vs C with unequal stroke lengths, CAcc threshold, per-category means."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from segwise.data.sketch.formats import Sketch
from segwise.metrics.sketch import format_sketch_table, sketch_metrics, stroke_weights, write_sketch_metrics


def _sketch(lengths: list[float], labels: list[int], category: str = "c", key: str = "") -> Sketch:
    """Horizontal two-point strokes of the given lengths (weights 1 + length each)."""
    strokes = [np.array([[0, row], [length, row]]) for row, length in enumerate(lengths)]
    return Sketch(strokes, labels, category, ["a", "b", "c"], key)


def test_stroke_weights_follow_sketchgnn():
    np.testing.assert_allclose(stroke_weights(np.array([[0, 0], [3, 4], [3, 5]])), [1, 5, 1])
    np.testing.assert_allclose(stroke_weights(np.array([[2, 2]])), [1])


def test_p_and_c_differ_with_unequal_stroke_lengths():
    sketch = _sketch([10, 1], [0, 1])  # stroke weights 11 and 2
    metrics = sketch_metrics([sketch], [np.array([0, 0])])  # long stroke right, short stroke wrong
    values = metrics["per_category"]["c"]
    assert values["p_metric"] == pytest.approx(11 / 13)
    assert values["c_metric"] == pytest.approx(0.5)
    assert values["sacc"] == pytest.approx(0.5)
    assert values["cacc"] == pytest.approx(0.5)  # group 0 right, group 1 wrong
    flipped = sketch_metrics([sketch], [np.array([1, 1])])["per_category"]["c"]
    assert flipped["p_metric"] == pytest.approx(2 / 13) and flipped["c_metric"] == pytest.approx(0.5)


def test_cacc_counts_groups_with_at_least_75_percent():
    sketch = _sketch([1] * 6, [0, 0, 0, 0, 1, 1])
    # group 0: 3 of 4 right (75 %: counts); group 1: 1 of 2 right (50 %: does not)
    values = sketch_metrics([sketch], [np.array([0, 0, 0, 2, 1, 0])])["overall"]
    assert values["cacc"] == pytest.approx(0.5) and values["num_groups"] == 2
    assert values["sacc"] == pytest.approx(4 / 6)


def test_per_category_mean_and_pooled_overall():
    sketches = [
        _sketch([1, 1], [0, 1], "cat", "a"),  # all right
        _sketch([1, 1, 1, 1], [0, 0, 1, 1], "cat", "b"),  # 1 of 4 right
        _sketch([1], [2], "dog", "c"),  # wrong
    ]
    predictions = [np.array([0, 1]), np.array([0, 1, 0, 0]), np.array([0])]
    metrics = sketch_metrics(sketches, predictions)
    cat, dog = metrics["per_category"]["cat"], metrics["per_category"]["dog"]
    assert cat["c_metric"] == pytest.approx((1 + 0.25) / 2)  # mean over sketches
    assert cat["sacc"] == pytest.approx(3 / 6)  # pooled over strokes
    assert cat["cacc"] == pytest.approx(2 / 4) and cat["num_sketches"] == 2
    assert dog["p_metric"] == 0 and dog["cacc"] == 0
    assert cat["per_part"] == {"a": {"strokes": 3, "accuracy": pytest.approx(2 / 3)},
                               "b": {"strokes": 3, "accuracy": pytest.approx(1 / 3)},
                               "c": {"strokes": 0, "accuracy": None}}
    assert metrics["mean"]["sacc"] == pytest.approx((0.5 + 0) / 2)
    assert metrics["overall"]["sacc"] == pytest.approx(3 / 7)
    assert metrics["overall"]["c_metric"] == pytest.approx((1 + 0.25 + 0) / 3)


def test_bad_predictions_are_named():
    sketch = _sketch([1, 1], [0, 1], key="k9")
    with pytest.raises(ValueError, match="'k9' has 2 strokes but 3"):
        sketch_metrics([sketch], [np.array([0, 1, 1])])
    with pytest.raises(ValueError, match="1 sketches but 0 predictions"):
        sketch_metrics([sketch], [])


def test_table_and_files(tmp_path):
    sketches = [_sketch([10, 1], [0, 1], "cat"), _sketch([1], [0], "dog")]
    metrics = sketch_metrics(sketches, [np.array([0, 0]), np.array([0])])
    table = format_sketch_table(metrics)
    assert "84.62" in table and "mean (categories)" in table and "overall (pooled)" in table
    json_path, csv_path = write_sketch_metrics(metrics, tmp_path / "eval")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(metrics))
    rows = list(csv.DictReader(csv_path.open()))
    assert [row["category"] for row in rows] == ["cat", "dog", "mean", "overall"]
    assert float(rows[0]["p_metric"]) == pytest.approx(11 / 13) and rows[2]["num_sketches"] == ""
