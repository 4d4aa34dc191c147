"""Run-length encoding of binary masks: TianChi "start length" strings, COCO RLE, and `name<TAB>rle` CSV files.

The TianChi strings and the CSV files are those of pytorch-segmentation's png2rle.py.

All formats flatten the mask column-major (Fortran order: down the first column, then the next), as the
competitions and pycocotools do. Foreground is one class (`foreground=K`) or, by default, every non-zero pixel.
Encoding and decoding are vectorised with numpy, so a 5000×5000 mask takes well under a second; a class raster
larger than memory is encoded strip by strip (`raster_rle_encode`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from segwise.data.io import is_image_file, read_mask, write_png
from segwise.data.rle import read_rle_csv, rle_decode, runs_to_mask  # decoding lives in data (the tianchi reader)
from segwise.errors import ConfigError, DataError
from segwise.inference.raster import GDAL_CACHE_MB, open_raster
from segwise.io_utils import atomic_write_text

_COCO_MAX_CHARS = 7  # 7 × 5 bits hold any count delta of an image below 2**34 pixels
_MAX_NAME_BYTES = 255  # the longest file name Linux, macOS and Windows file systems take


# ---- runs -------------------------------------------------------------------------------------------------
def foreground_mask(mask: np.ndarray, foreground: int | None = None) -> np.ndarray:
    """H×W bool: `mask == foreground`, or `mask != 0` when no class is given."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"RLE encodes one H×W mask; got an array of shape {mask.shape} "
                        "(take one channel or class first)")
    return mask != 0 if foreground is None else mask == foreground


def mask_runs(mask: np.ndarray, foreground: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """0-based column-major start and end (exclusive) of every foreground run, in order."""
    return _flat_runs(foreground_mask(mask, foreground).ravel(order="F"))


def _flat_runs(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based start and end (exclusive) of every run of True in a 1-D bool array."""
    padded = np.zeros(pixels.size + 2, dtype=np.int8)
    padded[1:-1] = pixels
    edges = np.flatnonzero(padded[1:] != padded[:-1])  # change between pixel j-1 and j, j in 0..n
    return edges[0::2], edges[1::2]


def _format_ints(values: np.ndarray) -> str:
    """Non-negative ints → "a b c", written digit by digit into one byte buffer (millions of runs in a second)."""
    if not values.size:
        return ""
    widths = np.ones(values.size, dtype=np.int64)
    while (live := values >= 10 ** np.minimum(widths, 18)).any() and widths.max() < 19:
        widths += live
    ends = np.cumsum(widths + 1) - 1  # index of the space after each number
    out = np.full(int(ends[-1]), ord(" "), dtype=np.uint8)
    rest = values.copy()
    for digit in range(int(widths.max())):
        live = widths > digit
        out[ends[live] - 1 - digit] = 48 + rest[live] % 10
        rest //= 10
    return out.tobytes().decode("ascii")


# ---- TianChi (pytorch-segmentation) -----------------------------------------------------------------------
def rle_encode(mask: np.ndarray, foreground: int | None = None) -> str:
    """H×W mask → TianChi RLE: space-separated 1-based column-major "start length" pairs; "" = no foreground."""
    return _format_runs(*mask_runs(mask, foreground))


def _format_runs(starts: np.ndarray, ends: np.ndarray) -> str:
    """0-based runs [start, end) → the TianChi "start length" string."""
    pairs = np.empty(2 * starts.size, dtype=np.int64)
    pairs[0::2], pairs[1::2] = starts + 1, ends - starts
    return _format_ints(pairs)


def raster_rle_encode(path: Path, foreground: int | None = None, strip: int = 256) -> str:
    """`rle_encode` of a single-band class raster larger than memory, read `strip` columns at a time.

    Nodata pixels are never foreground. Memory is one strip of pixels plus the runs; tiled files read fastest.
    """
    if strip < 1:
        raise ConfigError(f"strip must be at least 1 column, got {strip}")
    path = Path(path)
    all_starts, all_ends = [], []
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), open_raster(path) as src:
        if src.count != 1:
            raise DataError(f"{path}: has {src.count} bands; RLE encodes a single-band class raster, so pass the "
                            "class map (e.g. `segwise predict` output) or extract one band (gdal_translate -b 1)")
        height, width, nodata = src.height, src.width, src.nodata
        for col_off in range(0, width, strip):
            columns = min(strip, width - col_off)
            try:
                pixels = src.read(1, window=Window(col_off, 0, columns, height))
            except Exception as exc:
                raise DataError(f"{path}: columns {col_off}..{col_off + columns} cannot be read ({exc}); the file "
                                "may be damaged") from None
            wanted = foreground_mask(pixels, foreground)
            if nodata is not None:
                wanted &= ~np.isnan(pixels) if np.isnan(nodata) else pixels != nodata
            starts, ends = _flat_runs(wanted.ravel(order="F"))
            all_starts.append(starts + col_off * height)
            all_ends.append(ends + col_off * height)
    starts, ends = np.concatenate(all_starts), np.concatenate(all_ends)
    joined = np.flatnonzero(starts[1:] == ends[:-1])  # runs in a strip never touch; across strips they join
    return _format_runs(np.delete(starts, joined + 1), np.delete(ends, joined))


# ---- COCO -------------------------------------------------------------------------------------------------
def coco_counts(mask: np.ndarray, foreground: int | None = None) -> np.ndarray:
    """Alternating background/foreground run lengths in column-major order, starting with background."""
    starts, ends = mask_runs(mask, foreground)
    size = int(np.asarray(mask).size)
    edges = np.empty(2 * starts.size, dtype=np.int64)
    edges[0::2], edges[1::2] = starts, ends
    inner = edges[(edges > 0) & (edges < size)]
    counts = np.diff(np.r_[0, inner, size])
    return np.r_[0, counts] if starts.size and starts[0] == 0 else counts


def coco_counts_to_string(counts: Sequence[int] | np.ndarray) -> str:
    """pycocotools' compressed counts: each count minus the one two before (from the 4th on), 5 bits per char
    from ASCII 48, bit 0x20 = more chars follow, bit 0x10 of the last char = sign."""
    counts = np.asarray(counts, dtype=np.int64)
    deltas = counts.copy()
    deltas[3:] -= counts[1:-2]
    digits = np.empty((deltas.size, _COCO_MAX_CHARS), dtype=np.int64)
    more = np.empty((deltas.size, _COCO_MAX_CHARS), dtype=bool)
    rest = deltas
    for k in range(_COCO_MAX_CHARS):
        chunk = rest & 0x1F
        rest = rest >> 5
        more[:, k] = np.where(chunk & 0x10, rest != -1, rest != 0)
        digits[:, k] = chunk | (more[:, k].astype(np.int64) << 5)
    if more[:, -1].any():
        raise DataError("a COCO RLE count is too large to encode (2**34 pixels or more)")
    used = np.ones_like(more)
    used[:, 1:] = np.logical_and.accumulate(more[:, :-1], axis=1)
    return (digits[used] + 48).astype(np.uint8).tobytes().decode("ascii")


def coco_string_to_counts(text: str | bytes) -> np.ndarray:
    """Inverse of `coco_counts_to_string` (pycocotools' rleFrString)."""
    raw = text.encode("ascii", errors="replace") if isinstance(text, str) else bytes(text)
    chars = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if ((chars < 0) | (chars > 63)).any():
        bad = raw[int(np.flatnonzero((chars < 0) | (chars > 63))[0])]
        raise DataError(f"COCO RLE string holds {chr(bad)!r}; compressed counts use ASCII characters '0'..'o'")
    if not chars.size:
        return np.zeros(0, dtype=np.int64)  # no counts: only a 0×0 mask has them
    more = (chars & 0x20) != 0
    if more[-1]:
        raise DataError("COCO RLE string is cut off (its last character says more follow)")
    last = np.flatnonzero(~more)
    first = np.r_[0, last[:-1] + 1].astype(np.int64)
    length = last - first + 1
    if length.size and length.max() > _COCO_MAX_CHARS:
        raise DataError(f"COCO RLE string has a count of {int(length.max())} characters (at most "
                        f"{_COCO_MAX_CHARS}); it is not a pycocotools counts string")
    position = np.arange(chars.size) - np.repeat(first, length)
    deltas = np.add.reduceat((chars & 0x1F) << (5 * position), first) if first.size else first
    negative = (chars[last] & 0x10) != 0
    deltas[negative] -= np.left_shift(1, 5 * length[negative])
    counts = deltas.copy()
    counts[1::2] = np.cumsum(deltas[1::2])
    counts[2::2] = np.cumsum(deltas[2::2])
    return counts


def coco_rle_encode(mask: np.ndarray, foreground: int | None = None, compressed: bool = True) -> dict[str, Any]:
    """H×W mask → {"size": [h, w], "counts": ...}: a pycocotools string (as str, JSON-ready) or a list of ints."""
    counts = coco_counts(mask, foreground)
    height, width = np.asarray(mask).shape
    return {"size": [int(height), int(width)],
            "counts": coco_counts_to_string(counts) if compressed else [int(c) for c in counts]}


def coco_rle_decode(rle: dict[str, Any], value: int = 1) -> np.ndarray:
    """COCO RLE (compressed str/bytes or uncompressed list counts) → uint8 H×W mask."""
    try:
        height, width = (int(s) for s in rle["size"])
        raw = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise DataError("a COCO RLE is a dict {'size': [h, w], 'counts': ...}") from None
    counts = coco_string_to_counts(raw) if isinstance(raw, (str, bytes)) else np.asarray(raw, dtype=np.int64)
    if (counts < 0).any():
        raise DataError(f"COCO RLE has a negative count ({int(counts.min())})")
    if int(counts.sum()) != height * width:
        raise DataError(f"COCO RLE counts add up to {int(counts.sum())} pixels but its size {height}×{width} "
                        f"has {height * width}")
    edges = np.cumsum(counts)  # runs of foreground lie between edges 0-1, 2-3, ...
    ends = edges[1::2]
    return runs_to_mask(edges[0::2][:ends.size], ends, (height, width), value)


# ---- CSV ----------------------------------------------------------------------------------------------------
def write_rle_csv(path: Path, rows: Iterable[tuple[str, str]]) -> Path:
    """Write `name<TAB>rle` lines without a header (pytorch-segmentation's png2rle / TianChi submission), atomically."""
    path = Path(path)
    lines = []
    for name, rle in rows:
        if not name or any(c in name for c in "\t\r\n"):
            raise DataError(f"{path}: name {name!r} cannot go in a name<TAB>rle file (empty, or holds a tab/newline)")
        lines.append(f"{name}\t{rle}\n")
    atomic_write_text(path, "".join(lines))
    return path


def check_mask_shape(shape: Sequence[int], max_pixels: int) -> None:
    """A decode shape must be H×W positive sides of at most `max_pixels` pixels (a typo must not allocate
    gigabytes)."""
    if len(shape) != 2 or min(shape) < 1:
        raise ConfigError(f"--shape {'x'.join(map(str, shape))}: give the mask size as H x W of positive whole pixels, "
                          "e.g. 512x512")
    if shape[0] * shape[1] > max_pixels:
        raise ConfigError(f"--shape {shape[0]}x{shape[1]} is {shape[0] * shape[1]:,} pixels, more than --max-pixels "
                          f"{max_pixels:,}; check --shape (H x W of one mask), or raise --max-pixels")


def _output_name(path: Path, name: str) -> str:
    """`<name stem>.png`, refused when no file system could hold it (NUL, over 255 bytes)."""
    file_name = Path(name).stem + ".png"
    if "\0" in name or len(file_name.encode("utf-8")) > _MAX_NAME_BYTES or Path(name).stem in ("", ".", ".."):
        shown = name if len(name) <= 60 else f"{name[:40]}... ({len(name.encode('utf-8'))} bytes)"
        raise DataError(f"{path}: the name {shown!r} cannot be a file name (it holds a NUL character, is empty, or "
                        f"makes a name over {_MAX_NAME_BYTES} bytes); rename that row")
    return file_name


def decode_rle_csv(path: Path, shape: Sequence[int], out_dir: Path, value: int = 255) -> list[Path]:
    """Turn every row of a `name<TAB>rle` file into `out_dir/<name stem>.png` (0 and `value`)."""
    rows = read_rle_csv(path, shape)
    owners: dict[str, str] = {}
    for name, _ in rows:  # every name is checked before any file is written
        file_name = _output_name(path, name)
        if file_name in owners:
            raise DataError(f"{path}: {name!r} and {owners[file_name]!r} would both be written to {file_name}")
        owners[file_name] = name
    return [write_png(Path(out_dir) / _output_name(path, name), rle_decode(rle, shape, value)) for name, rle in rows]


def encode_rle_csv(masks: Path, out_csv: Path, foreground: int | None = None) -> Path:
    """Write a `name<TAB>rle` file for a mask file or every mask in a folder (name = the mask's file name)."""
    masks = Path(masks)
    files = sorted(p for p in masks.iterdir() if is_image_file(p)) if masks.is_dir() else [masks]
    if not files:
        raise DataError(f"{masks} holds no mask files (PNG/TIF); give a mask file or a folder of masks")
    return write_rle_csv(out_csv, ((path.name, rle_encode(_index_mask(path), foreground)) for path in files))


def _index_mask(path: Path) -> np.ndarray:
    mask = read_mask(path)
    if mask.ndim != 2:
        raise DataError(f"{path}: an RGB colour mask; RLE encodes index masks (one value per pixel), so save the "
                        "mask as a single-channel PNG (e.g. `segwise predict --save index`)")
    return mask
