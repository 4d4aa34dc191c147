"""Decoding of TianChi run-length masks (pytorch-segmentation's `name<TAB>rle` CSV files), pure numpy.

It lives in `data` because the `tianchi` reader decodes masks on the fly; `segwise.inference.rle` adds the encoders,
COCO RLE and the CSV writer. Runs are column-major (Fortran order), "start length" pairs with 1-based starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segwise.errors import DataError


def runs_to_mask(starts: np.ndarray, ends: np.ndarray, shape: Sequence[int], value: int = 1) -> np.ndarray:
    """Paint 0-based column-major runs [start, end) with `value` into a uint8 H×W mask (runs may overlap)."""
    height, width = (int(s) for s in shape)
    if not 0 <= value <= 255:
        raise DataError(f"foreground value {value} does not fit a uint8 mask (use 1 or 255)")
    size = height * width
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    if starts.size:  # merge overlapping or touching runs so the segments below have non-negative lengths
        reach = np.maximum.accumulate(ends)
        first = np.flatnonzero(np.r_[True, starts[1:] > reach[:-1]])
        last = np.r_[first[1:] - 1, starts.size - 1]
        starts, ends = starts[first], reach[last]
    bounds = np.empty(2 * starts.size + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, size
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    values = np.zeros(bounds.size - 1, dtype=np.uint8)
    values[1::2] = value
    flat = np.repeat(values, np.diff(bounds))
    return np.ascontiguousarray(flat.reshape((height, width), order="F"))


def _parse_ints(text: str) -> np.ndarray:
    """Whitespace-separated non-negative ints → int64 array, parsed digit by digit without Python objects."""
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    digit = (raw >= 48) & (raw <= 57)
    bad = ~digit & ~np.isin(raw, (9, 10, 11, 12, 13, 32))
    if bad.any():
        token = next((t for t in text.split() if not (t.isascii() and t.isdigit())), text)
        raise DataError(f"RLE value {token[:40]!r} is not a whole number of pixels")
    starts = np.flatnonzero(digit & ~np.r_[False, digit[:-1]])
    lengths = np.flatnonzero(digit & ~np.r_[digit[1:], False]) + 1 - starts
    if lengths.size and lengths.max() > 18:
        raise DataError(f"RLE value of {int(lengths.max())} digits is too large")
    values = np.zeros(starts.size, dtype=np.int64)
    for position in range(int(lengths.max()) if lengths.size else 0):
        live = lengths > position
        values[live] = values[live] * 10 + (raw[starts[live] + position] - 48)
    return values


def parse_rle(rle: str, shape: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check a TianChi RLE string and return its 0-based runs (starts, ends); with `shape`, runs must fit it."""
    values = _parse_ints(rle)
    if values.size % 2:
        raise DataError(f"RLE has an odd number of values ({values.size}); it must be 'start length' pairs")
    starts, lengths = values[0::2] - 1, values[1::2]
    if (starts < 0).any():
        raise DataError(f"RLE start {int(starts.min()) + 1} is below 1 (starts are 1-based)")
    if (lengths < 0).any():
        raise DataError(f"RLE length {int(lengths.min())} is negative")
    ends = starts + lengths
    if shape is not None and ends.size and ends.max() > shape[0] * shape[1]:
        raise DataError(f"RLE run ends at pixel {int(ends.max())}, beyond the {shape[0]}×{shape[1]} mask "
                        f"({shape[0] * shape[1]} pixels); check --shape (H×W)")
    return starts, ends


def rle_decode(rle: str, shape: Sequence[int], value: int = 1) -> np.ndarray:
    """TianChi RLE → uint8 H×W mask with `value` on the runs and 0 elsewhere."""
    starts, ends = parse_rle(rle, shape)
    return runs_to_mask(starts, ends, shape, value)


def read_rle_csv(path: Path, shape: Sequence[int] | None = None) -> list[tuple[str, str]]:
    """Read `name<TAB>rle` lines (no header; an empty or missing RLE means all background), checking every RLE
    (and, with `shape`, that its runs fit an H×W mask); errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; pass the name<TAB>rle CSV file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read as a UTF-8 text file ({exc})") from None
    rows: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, tab, rle = line.partition("\t")
        name = name.strip()
        if not tab and (len(name.split()) > 1 or "," in name):
            raise DataError(f"{path}, line {number}: no tab between name and RLE (expected name<TAB>rle, no header)")
        if not name:
            raise DataError(f"{path}, line {number}: the line has an RLE but no name before the tab")
        if name in seen:
            raise DataError(f"{path}, line {number}: {name!r} already appeared on line {seen[name]}")
        try:
            parse_rle(rle, shape)
        except DataError as exc:
            raise DataError(f"{path}, line {number} ({name}): {exc}") from None
        seen[name] = number
        rows.append((name, rle.strip()))
    return rows
