"""What a report reads: a run's settings and TensorBoard scalars, and what an evaluation wrote into its folder
(semantic or sketch `metrics.json`, `trimap_metrics.json`, the panels of `eval --plots`, saved trimaps)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segwise.errors import DataError
from segwise.metrics.tables import PER_IMAGE_FILES

EVENTS_PATTERN = "events.out.tfevents.*"
SEMANTIC_FILE = "metrics.json"
TRIMAP_FILE = "trimap_metrics.json"
MAX_PANELS = 12  # worst-image panels embedded (eval --plots -1 writes one per image)
MAX_TRIMAPS = 6  # saved trimaps shown per data set


@dataclass
class RunSource:
    """A run's settings (config.yaml as written, model.yaml parsed) and its scalars: tag → [(step, value)]."""

    directory: Path
    config_text: str | None
    model: dict[str, Any] | None
    scalars: dict[str, list[tuple[int, float]]]


@dataclass
class Panel:
    """One image | ground truth | prediction panel that `eval --plots` wrote, with the image's mIoU when known."""

    path: Path
    name: str
    miou: float | None


@dataclass
class Evaluation:
    """An evaluation folder's results; each part is None (or empty) when that kind of eval did not write it."""

    directory: Path
    semantic: dict[str, Any] | None = None
    sketch: dict[str, Any] | None = None
    trimap: dict[str, dict[str, Any]] | None = None
    panels: list[Panel] = field(default_factory=list)
    more_panels: int = 0
    trimaps: dict[str, list[Path]] = field(default_factory=dict)
    overlays: dict[str, list[Path]] = field(default_factory=dict)  # trimap eval --save: images with their classes


def run_directory(model_path: Path) -> Path:
    """The run folder of a model argument: the run itself, or the folder of its model.yaml/.safetensors, or the run
    above `RUN/checkpoints/*.ckpt`."""
    path = Path(model_path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def event_dirs(run: Path) -> list[Path]:
    """Folders under the run holding TensorBoard event files; a DataError naming the run when there are none."""
    run = Path(run)
    if not run.is_dir():
        raise DataError(f"run directory {run} does not exist; give the folder `segwise train` wrote (it holds "
                        "config.yaml, model.yaml and tensorboard/)")
    found = sorted({path.parent for path in run.rglob(EVENTS_PATTERN)})
    if not found:
        raise DataError(f"{run} holds no TensorBoard event files ({EVENTS_PATTERN}), so there are no training curves "
                        "to plot; give the run directory `segwise train` wrote (it logs to RUN/tensorboard/), or "
                        "train the run first")
    return found


def check_run(run: Path) -> None:
    """Fail at once, before any long work, when the run cannot be reported on."""
    event_dirs(run)


def read_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of every event file under the run (a resumed run continues its steps), by tag, step order."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for folder in event_dirs(run):
        events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep every point
        events.Reload()
        for tag in events.Tags()[SCALARS]:
            scalars.setdefault(tag, {}).update((e.step, e.value) for e in events.Scalars(tag))
    return {tag: sorted(points.items()) for tag, points in scalars.items()}


def read_run(run: Path) -> RunSource:
    """Settings and scalars of a run directory."""
    run = Path(run)
    scalars = read_scalars(run)
    config = run / "config.yaml"
    model = run / "model.yaml"
    return RunSource(run, config.read_text() if config.is_file() else None,
                     yaml.safe_load(model.read_text()) if model.is_file() else None, scalars)


def holds_results(folder: Path) -> bool:
    """Whether an evaluation wrote its metrics into the folder."""
    return (Path(folder) / SEMANTIC_FILE).is_file() or (Path(folder) / TRIMAP_FILE).is_file()


def read_evaluation(folder: Path) -> Evaluation:
    """The results of `segwise eval`, `segwise sketch eval` and/or `segwise trimap eval` in one folder."""
    folder = Path(folder)
    if not holds_results(folder):
        raise DataError(f"{folder} holds no {SEMANTIC_FILE} or {TRIMAP_FILE}; evaluate first (`segwise eval RUN DATA "
                        f"-o {folder} --plots 8`, `segwise sketch eval` or `segwise trimap eval`), or give the folder "
                        "an evaluation wrote (default RUN/eval)")
    evaluation = Evaluation(folder)
    if (folder / SEMANTIC_FILE).is_file():
        metrics = read_json(folder / SEMANTIC_FILE)
        if "per_category" in metrics:
            evaluation.sketch = metrics
        else:
            evaluation.semantic = metrics
        evaluation.panels, evaluation.more_panels = worst_panels(folder)  # semantic or sketch `eval --plots`
    if (folder / TRIMAP_FILE).is_file():
        evaluation.trimap = read_json(folder / TRIMAP_FILE)
        evaluation.trimaps = {name: sorted((folder / name).glob("*.png"))[:MAX_TRIMAPS]
                              for name in evaluation.trimap if (folder / name).is_dir()}
        evaluation.overlays = {name: sorted((folder / name / "overlay").glob("*.png"))[:MAX_TRIMAPS]
                               for name in evaluation.trimap if (folder / name / "overlay").is_dir()}
    return evaluation


def read_json(path: Path) -> Any:
    """A JSON file an evaluation wrote, or a DataError naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read as JSON ({exc}); run the evaluation again to rewrite it") from exc


def worst_panels(folder: Path) -> tuple[list[Panel], int]:
    """The panels of OUT/plots/ (`NNN_<name>.png` worst first, else every image's `<name>.png`), at most
    MAX_PANELS, and how many more there are."""
    files = sorted((folder / "plots").glob("*.png"))
    ranked = [path for path in files if path.stem[:3].isdigit() and path.stem[3:4] == "_"]
    files = ranked or files
    mious = per_image_miou(folder)
    names = [path.stem[4:] if ranked else path.stem for path in files]
    panels = [Panel(path, name, mious.get(name)) for path, name in zip(files, names)]
    return panels[:MAX_PANELS], max(0, len(panels) - MAX_PANELS)


def per_image_miou(folder: Path) -> dict[str, float]:
    """Each image's mIoU from the plain per-image table of `eval --per-image`: the mean IoU over the classes the image
    shows (the panel captions' number), by image name; empty without that table."""
    table = folder / PER_IMAGE_FILES[0]
    if not table.is_file():
        return {}
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    mious = {}
    for row in rows:
        ious = [float(value) for key, value in row.items() if key.startswith("iou_") and value]
        if any(key.startswith("iou_") for key in row):
            mious[Path(row["file"]).stem] = sum(ious) / len(ious) if ious else 1.0
    return {name: value for name, value in mious.items() if not math.isnan(value)}
