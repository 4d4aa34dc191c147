"""Score tables other tools read (per-image metrics, per-epoch validation scores), in two styles: segwise's plain
CSV (a header, commas, dot decimals, empty cells for missing values) or the smp trainer's (`; `-separated, four
decimals with a decimal comma, under the file names its scripts wrote), so that spreadsheets and scripts made for
the smp trainer's files read segwise's unchanged."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from segwise.io_utils import atomic_write_text

STYLES = ("plain", "smp")
# (plain name, the smp trainer's name) of each table
PER_IMAGE_FILES = ("per_image_metrics.csv", "_metrics.csv")
PER_EPOCH_FILES = ("val_per_epoch.csv", "_iou_per_epoch_val.csv")


def table_path(folder: Path, names: tuple[str, str], style: str) -> Path:
    """Where a table of this style goes: its plain name, or the smp trainer's."""
    return Path(folder) / names[STYLES.index(style)]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain_cell(value: Any) -> Any:
    return "" if _missing(value) else round(value, 6) if isinstance(value, float) else value


def _smp_cell(value: Any) -> str:
    if _missing(value):
        return ""
    return f"{value:.4f}".replace(".", ",") if isinstance(value, float) else str(value)


def format_table(header: Sequence[str] | None, rows: Iterable[Sequence[Any]], style: str = "plain") -> str:
    """The table as text; `header` None writes none (the smp trainer's per-epoch file has none)."""
    if style not in STYLES:
        raise ValueError(f"table style must be one of {STYLES}, got {style!r}")
    if style == "smp":
        lines = ["; ".join(header)] if header else []
        lines += ["; ".join(_smp_cell(v) for v in row) for row in rows]
        return "".join(line + "\n" for line in lines)
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    if header:
        writer.writerow(header)
    writer.writerows([_plain_cell(v) for v in row] for row in rows)
    return text.getvalue()


def write_table(path: Path, header: Sequence[str] | None, rows: Iterable[Sequence[Any]], style: str = "plain") -> Path:
    """Write the table atomically (a reader never sees half of it)."""
    atomic_write_text(Path(path), format_table(header, rows, style))
    return Path(path)
