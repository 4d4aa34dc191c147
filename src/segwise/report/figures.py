"""The report's pictures as `data:image/png;base64,...` URIs: matplotlib figures (curves, the confusion heat map,
coloured trimaps) and the PNG panels an evaluation wrote, so the page needs no other file."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

DPI = 100
LOSS_GROUP = "loss"
LR_GROUP = "learning rate"
VAL_GROUP = "validation metrics"
SKIPPED_TAGS = ("epoch",)


def png_uri(data: bytes) -> str:
    """PNG bytes as a data URI."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def file_uri(path: Path) -> str:
    """A PNG file's bytes as a data URI (embedded unchanged)."""
    return png_uri(Path(path).read_bytes())


def figure_uri(figure: Figure) -> str:
    """A matplotlib figure rendered to PNG (Agg, no window, no pyplot state) as a data URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return png_uri(buffer.getvalue())


def scalar_groups(tags: Sequence[str]) -> dict[str, list[str]]:
    """One plot per kind of scalar: every loss together, the learning rates, the validation metrics, then one per
    remaining tag prefix (per-class IoU, extra validation splits)."""
    groups: dict[str, list[str]] = {LOSS_GROUP: [], LR_GROUP: [], VAL_GROUP: []}
    for tag in tags:
        prefix, _, last = tag.rpartition("/")
        if tag in SKIPPED_TAGS:
            continue
        if last == "loss":
            groups[LOSS_GROUP].append(tag)
        elif tag.startswith("lr"):
            groups[LR_GROUP].append(tag)
        elif prefix == "val":
            groups[VAL_GROUP].append(tag)
        else:
            groups.setdefault(prefix or tag, []).append(tag)
    return {title: members for title, members in groups.items() if members}


def curve_figures(scalars: dict[str, list[tuple[int, float]]]) -> list[tuple[str, str]]:
    """(title, data URI) of one line plot per group of `scalar_groups`, value against training step."""
    figures = []
    for title, tags in scalar_groups(sorted(scalars)).items():
        figure = Figure(figsize=(6, 3.6))
        axes = figure.add_subplot()
        for tag in tags:
            steps, values = zip(*scalars[tag])
            axes.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=tag)
        axes.set(title=title, xlabel="step")
        axes.grid(alpha=0.3)
        if title == LR_GROUP:
            axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        axes.legend(fontsize="small")
        figures.append((title, figure_uri(figure)))
    return figures


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each ground-truth row divided by its pixel count (a row without pixels stays 0)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str]) -> str:
    """Heat map of the row-normalised confusion matrix (ground truth down, prediction across), cells annotated in
    percent while the classes are few enough to read them."""
    shares = row_normalised(matrix)
    size = len(class_names)
    side = min(14.0, 2.5 + 0.45 * size)
    figure = Figure(figsize=(side + 1.2, side))
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(size), class_names, rotation=45, ha="right")
    axes.set_yticks(range(size), class_names)
    axes.set(xlabel="prediction", ylabel="ground truth", title="confusion matrix (each row sums to 100 %)")
    if size <= 20:
        for (row, column), share in np.ndenumerate(shares):
            axes.text(column, row, f"{100 * share:.0f}", ha="center", va="center", fontsize="small",
                      color="white" if share > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the row's pixels")
    return figure_uri(figure)


def class_images_figure(images: Sequence[np.ndarray], titles: Sequence[str], class_names: Sequence[str],
                        palette: np.ndarray) -> str:
    """Coloured class maps (`H×W×3` uint8) side by side with a legend of the classes' colours."""
    columns = min(len(images), 3)
    rows = -(-len(images) // columns)
    figure = Figure(figsize=(3.2 * columns, 3.2 * rows + 0.6))
    for index, (image, title) in enumerate(zip(images, titles)):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(image, interpolation="nearest")
        axes.set_title(title, fontsize="small")
        axes.axis("off")
    handles = [Patch(facecolor=np.asarray(colour) / 255, edgecolor="grey", label=name)
               for name, colour in zip(class_names, palette)]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    return figure_uri(figure)
