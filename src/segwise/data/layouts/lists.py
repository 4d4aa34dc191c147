"""Data sets described by list files: `list`, any text file of "image mask" path pairs (whitespace or comma
separated, relative to the list file's folder), and `meter`, Baidu's meter_seg (`<split>.txt` of such lines, index
masks of background / pointer / scale)."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from segwise.data.folder import MaskReader, Sample, read_index_mask
from segwise.data.layouts.common import list_entries, missing_split, no_extra_channels, pair_samples, split_of
from segwise.errors import DataError, SegwiseError

LIST_SUFFIXES = (".txt", ".csv", ".lst")
METER_OPTIONS = {"class_names": ["background", "pointer", "scale"], "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
                 "ignore_index": 255}


def list_file(root: Path, name: str) -> Path | None:
    """The list file of a split: ROOT/NAME itself, or ROOT/NAME.txt (.csv, .lst, in any case)."""
    if (root / name).is_file():
        return root / name
    found = [p for p in sorted(root.glob(f"{glob.escape(name)}.*")) if p.suffix.lower() in LIST_SUFFIXES]
    return next((p for p in found if p.is_file()), None)


def list_splits(path: Path) -> list[str]:
    """The list files in `path` whose first line is an image/mask pair (other text files are not splits)."""
    path = Path(path)
    files = sorted(path.iterdir()) if path.is_dir() else []
    names = sorted({p.stem for p in files if p.suffix.lower() in LIST_SUFFIXES and p.is_file() and _pairs(p)})
    if not names:
        raise DataError(f"{path} holds no list file of image/mask pairs: {path / 'train.txt'} is missing (one "
                        "'image mask' line per sample, paths relative to the list's folder); pass the folder "
                        "holding the lists, or another --format")
    return names


def _pairs(path: Path) -> bool:
    try:
        entries = list_entries(path)
    except SegwiseError:
        return False
    return bool(entries) and len(entries[0][1]) == 2


def find_listed(split: Path, extra_channels: Sequence[str], require_masks: bool,
                mask_reader: MaskReader | None = None, layout: str = "list") -> list[Sample]:
    """The samples of the list file `split` (ROOT/NAME, NAME with or without its .txt/.csv/.lst suffix)."""
    path, name = split_of(split)
    no_extra_channels(layout, split, extra_channels)
    found = list_file(path, name)
    if found is None:
        raise missing_split(name, list_splits(path), layout, path / f"{name}.txt")
    return pair_samples(found, found.parent, require_masks, mask_reader)


def find_meter(split: Path, extra_channels: Sequence[str], require_masks: bool) -> list[Sample]:
    return find_listed(split, extra_channels, require_masks, read_index_mask, "meter")
