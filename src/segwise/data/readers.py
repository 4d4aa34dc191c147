"""The reader table: `data.format` → how a data-set layout is read, used by every command that finds samples.

A reader finds a split's samples (image, mask, extra planes) where the layout keeps them, and may bring the layout's
own class mapping (names, palette, ignore, unmatched values) as defaults of the `data.*` options. Adding a layout is one function here
or in its own module, registered with `register_reader`, and one row of tests/test_readers.py.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segwise.data import isaid
from segwise.data.folder import IMAGE_DIR_NAMES, Sample, find_samples
from segwise.errors import ConfigError, DataError

SplitFinder = Callable[[Path, Sequence[str], bool], list[Sample]]
"""(split folder, extra channel folders, masks required) → the split's samples, every problem reported at once."""


@dataclass(frozen=True)
class Reader:
    """One data-set layout: how to find a split's samples and the class options the layout implies."""

    find: SplitFinder
    class_options: dict[str, Any] = field(default_factory=dict)  # data.* defaults, e.g. class_names, palette


READERS: dict[str, Reader] = {}


def register_reader(name: str, reader: Reader) -> Reader:
    if name in READERS:
        raise ValueError(f"data.format {name!r} is registered twice")
    READERS[name] = reader
    return reader


def reader(name: str) -> Reader:
    """The reader of a `data.format` value; an unknown value names the known ones."""
    if name not in READERS:
        close = difflib.get_close_matches(name, list(READERS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"data.format: unknown layout {name!r}.{hint} Known: {', '.join(sorted(READERS))}")
    return READERS[name]


def find_split(format: str, split: Path, extra_channels: Sequence[str] = (), require_masks: bool = True) -> list[Sample]:
    """The samples of one split folder in the layout `format`."""
    return reader(format).find(Path(split), tuple(extra_channels), require_masks)


def split_dir(root: Path | None, split: str) -> Path:
    """A split given as a name under `root`, or as a path of its own."""
    path = Path(split)
    if path.is_absolute() or root is None or (path.exists() and not (Path(root) / split).exists()):
        return path
    return Path(root) / split


def holds_images(folder: Path) -> bool:
    """Whether `folder` is a split folder: it has an image folder under one of the accepted names."""
    return any((Path(folder) / name).is_dir() for name in IMAGE_DIR_NAMES)


def _find_isaid(split: Path, extra_channels: Sequence[str], require_masks: bool) -> list[Sample]:
    if extra_channels:
        raise DataError(f"{split}: the isaid layout has no extra channel planes; drop data.extra_channels "
                        f"({list(extra_channels)}) or tile the data into the folder layout first")
    if not require_masks:
        return find_samples(split, (), require_masks=False)
    return isaid.find_isaid_samples(split)


register_reader("folder", Reader(lambda split, extras, masks: find_samples(split, extras, require_masks=masks)))
# iSAID: colour masks (unmatched colours are background, as the official RemoveColorMap does) or 0-15/255 indices.
register_reader("isaid", Reader(_find_isaid, class_options={
    "class_names": list(isaid.CLASS_NAMES), "palette": [list(c) for c in isaid.PALETTE],
    "ignore_index": isaid.IGNORE_INDEX, "unmapped": "background"}))
