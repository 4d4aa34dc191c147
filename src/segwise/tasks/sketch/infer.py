"""Using trained sketch segmenters: `prepare_splits` (the `sketch prepare` cache), `segment_sketches`, `evaluate`
(P/C/SAcc/CAcc on a split) and `predict` (coloured SVG/PNG and labels.json per sketch)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from segwise.data.io import write_png
from segwise.config import load_config
from segwise.data.sketch.cache import write_prepared
from segwise.data.sketch.datasets import SketchDataset, collate_sketches, load_sketches, read_splits
from segwise.data.sketch.formats import SPLITS, Sketch, read_sketches
from segwise.data.sketch.splits import DEFAULT_SCHEME
from segwise.data.sketch.synthetic import SYNTHETIC_CATEGORIES, make_synthetic_sketches
from segwise.errors import CheckpointError, ConfigError, DataError
from segwise.io_utils import atomic_write_text, ensure_writable_dir
from segwise.metrics.sketch import sketch_metrics, write_sketch_metrics
from segwise.models.contextseg import ContextSeg, StrokeClassifier
from segwise.models.spec import ModelSpec, load_model, resolve_model_path
from segwise.progress import progress, track
from segwise.tasks.sketch.config import SketchConfig
from segwise.tasks.sketch.draw import draw_parts, sketch_svg
from segwise.visualize import side_by_side


def prepare_splits(out_dir: Path, splits: list[str] | None, source: Path | None = None,
                   categories: list[str] | None = None, synthetic: int | None = None, seed: int = 0,
                   scheme: str = DEFAULT_SCHEME) -> list[Path]:
    """Write `<out>/<split>/<category>.npz` for each split (None: every split of the source), from any sketch source
    `read_splits` reads (a folder of per-category files split by `scheme` and `seed`), or (with `synthetic` = N
    training sketches per category; N/5 for the other splits) from the procedural generator."""
    if (source is None) == (synthetic is None):
        raise ConfigError("give either a SOURCE (SPG folder or sketch file) or --synthetic N, not both or neither")
    if source is not None and Path(source).is_file() and len(splits or ()) != 1:
        raise ConfigError(f"{source} is one file: name the one split it becomes, e.g. --splits test")
    out_dir = ensure_writable_dir(out_dir)
    if synthetic is not None:
        sets = {split: make_synthetic_sketches(synthetic if split == "train" else max(1, synthetic // 5),
                                               categories=categories or len(SYNTHETIC_CATEGORIES), seed=seed + number)
                for number, split in enumerate(splits or SPLITS)}
    else:
        sets = read_splits(source, splits, categories, scheme=scheme, seed=seed)
    return [path for split, sketches in sets.items() for path in write_prepared(sketches, out_dir, split)]


def run_split(model_path: Path) -> tuple[str, int]:
    """The split scheme and seed a run was trained with (its config.yaml), else the defaults: evaluating on a folder
    that is split on the fly must use the training run's split, or test sketches may have been trained on."""
    config_file = resolve_model_path(Path(model_path))[0].parent / "config.yaml"
    if not config_file.is_file():
        return DEFAULT_SCHEME, 0
    data = load_config(config_file, schema=SketchConfig).data
    return data.split_scheme, data.split_seed


def load_segmenter(model_path: Path, device: str | None = None) -> tuple[ContextSeg | StrokeClassifier, ModelSpec]:
    """The stage-2 network of a run directory (or its model.yaml / .ckpt), on `device` (default: CUDA if available)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, spec = load_model(Path(model_path), device)
    if not isinstance(model, (ContextSeg, StrokeClassifier)):
        raise CheckpointError(f"{model_path} holds a {spec.name} model; pass a run directory made by "
                              "`segwise sketch train`")
    return model, spec


def segment_sketches(model: ContextSeg | StrokeClassifier, sketches: list[Sketch],
                     batch_size: int = 16) -> list[np.ndarray]:
    """Part label of every stroke of every sketch (auto-regressive decoding with last-wins for ContextSeg)."""
    device = next(model.parameters()).device
    dataset = SketchDataset(sketches, model.categories, model.embedder.image_size, model.embedder.line_width)
    labels: list[np.ndarray] = []
    with progress(len(sketches), "segmenting", "sketches") as counter:
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_sketches):
            out = model.segment(batch["strokes"].to(device).float(), batch["stroke_valid"].to(device),
                                batch["group_valid"].to(device)).cpu()
            rows = enumerate(batch["index"].tolist())
            labels += [out[row, : sketches[index].num_strokes].numpy() for row, index in rows]
            counter.advance(len(batch["index"]))
    return labels


def evaluate(model_path: Path, data_root: Path, split: str = "test", categories: list[str] | None = None,
             out_dir: Path | None = None, limit: int | None = None, device: str | None = None,
             scheme: str | None = None, seed: int | None = None, plots: int = 0) -> dict[str, Any]:
    """P/C/SAcc/CAcc per category and their mean on a split; written to `<out>/metrics.json` and `.csv`.

    `scheme`/`seed` split a folder of per-category files (default: as the run was trained, see `run_split`).
    `plots`: ground truth | prediction drawings (strokes in their parts' colours) of the N sketches with the lowest
    stroke accuracy, `<out>/plots/NNN_<key>.png`, worst first."""
    model, spec = load_segmenter(model_path, device)
    trained_scheme, trained_seed = run_split(model_path)
    sketches = load_sketches(data_root, split, categories or list(model.categories), limit,
                             scheme=scheme or trained_scheme, seed=trained_seed if seed is None else seed)
    predictions = segment_sketches(model, sketches)
    metrics = sketch_metrics(sketches, predictions)
    out_dir = ensure_writable_dir(out_dir or Path(model_path) / "eval")
    metrics = {**metrics, "split": split, "model": str(model_path)}
    write_sketch_metrics(metrics, out_dir)
    if plots:
        write_worst_sketches(out_dir / "plots", sketches, predictions, plots, model.embedder.image_size,
                             model.embedder.line_width)
    return {**metrics, "out_dir": str(out_dir)}


def write_worst_sketches(folder: Path, sketches: list[Sketch], predictions: list[np.ndarray], count: int,
                         size: int, width: int) -> list[Path]:
    """ground truth | prediction panels of the `count` sketches with the lowest stroke accuracy, worst first."""
    accuracy = [float(np.mean(np.asarray(pred) == np.asarray(sketch.labels))) if len(sketch.labels) else 1.0
                for sketch, pred in zip(sketches, predictions)]
    worst = sorted(range(len(sketches)), key=lambda i: (accuracy[i], i))[:count]
    written = []
    for rank, index in enumerate(worst):
        sketch, pred = sketches[index], np.asarray(predictions[index])
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", sketch.key) or f"sketch_{index:05d}"  # keys may hold '/'
        panel = side_by_side([draw_parts(sketch, np.asarray(sketch.labels), size, width),
                              draw_parts(sketch, pred, size, width)], ["ground truth", "prediction"],
                             f"{sketch.category} {name}  stroke accuracy {100 * accuracy[index]:.1f}%")
        written.append(write_png(folder / f"{rank:03d}_{name}.png", panel))
    return written


def predict(model_path: Path, input_path: Path, out_dir: Path, category: str | None = None,
            device: str | None = None) -> list[Path]:
    """Colour each stroke by its predicted part: `<out>/<key>.svg` and `.png`, plus `labels.json`."""
    model, spec = load_segmenter(model_path, device)
    if category is not None and category not in model.categories:
        raise ConfigError(f"--category {category!r} is not one of the model's: {', '.join(model.categories)}")
    sketches = read_sketches(input_path, category=category)
    unknown = sorted({s.category for s in sketches} - set(model.categories))
    if unknown:  # segmenting faces with an airplane model gives airplane parts: never silently
        raise DataError(f"{input_path} holds sketches of {', '.join(map(repr, unknown))} (from its file name or "
                        f"records) but the model was trained on {', '.join(model.categories)}; pass --category NAME "
                        "to segment them as one of those anyway")
    sketches = [replace(s, part_names=model.categories[s.category]) for s in sketches]
    out_dir = ensure_writable_dir(out_dir)
    canvas, width = model.embedder.image_size, model.embedder.line_width
    written, table = [], {}
    drawn = enumerate(zip(sketches, segment_sketches(model, sketches)))
    for number, (sketch, labels) in track(drawn, "drawing", unit="sketches", total=len(sketches)):
        name = sketch.key or f"sketch_{number:05d}"
        atomic_write_text(out_dir / f"{name}.svg", sketch_svg(sketch, labels, canvas, width))
        written.append(write_png(out_dir / f"{name}.png", draw_parts(sketch, labels, canvas, width)))
        table[name] = {"category": sketch.category, "labels": labels.tolist(),
                       "parts": [sketch.part_names[int(k)] for k in labels]}
    atomic_write_text(out_dir / "labels.json", json.dumps(table, indent=1))
    return written
