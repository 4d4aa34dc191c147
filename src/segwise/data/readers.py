"""The reader table: `data.format` → how a data-set layout is read, used by every command that finds samples.

A reader finds a split's samples (image, mask, extra planes) where the layout keeps them, and may bring the layout's
own class mapping (names, palette, ignore, unmatched values) as defaults of the `data.*` options. A split is always
given as a path ROOT/SPLIT: a folder of its own in the folder layouts (`folder`, `isaid`), a name the reader resolves
under ROOT in the standard layouts (`voc`: ROOT/ImageSets/Segmentation/SPLIT.txt, ...), which also say which splits a
root holds (`Reader.splits`). Adding a layout is one function here or in its own module (`segwise.data.layouts`),
registered with `register_reader`, and a fake-data test (tests/test_readers_standard.py).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segwise.data import isaid
from segwise.data.folder import IMAGE_DIR_NAMES, Sample, find_samples
from segwise.data.layouts import ade20k, camvid, cityscapes, cocostuff, lists, tianchi, voc
from segwise.errors import ConfigError, DataError

SplitFinder = Callable[[Path, Sequence[str], bool], list[Sample]]
"""(split ROOT/SPLIT, extra channel folders, masks required) → the split's samples, every problem reported at once."""
SplitNames = Callable[[Path], list[str]]
"""A data-set root → the names of its splits; a DataError naming the expected path that is missing when the folder
is not a root of the layout."""


@dataclass(frozen=True)
class Reader:
    """One data-set layout: how to find a split's samples and the class options the layout implies.

    `splits`: the split names of a root, for layouts that name their splits (None: the folder layouts, whose splits
    are the sub-folders holding images/).
    """

    find: SplitFinder
    class_options: dict[str, Any] = field(default_factory=dict)  # data.* defaults, e.g. class_names, palette
    splits: SplitNames | None = None


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
    """The samples of one split (ROOT/SPLIT) in the layout `format`."""
    return reader(format).find(Path(split), tuple(extra_channels), require_masks)


def split_dir(root: Path | None, split: str) -> Path:
    """A split given as a name under `root`, or as a path of its own."""
    path = Path(split)
    if path.is_absolute() or root is None or (path.exists() and not (Path(root) / split).exists()):
        return path
    return Path(root) / split


def split_path(format: str, root: Path | None, split: str) -> Path:
    """Where the split `split` of the data set at `root` is read: ROOT/SPLIT for a split name of a layout that names
    its splits (the folder need not exist), else `split_dir` (a name under the root, or a path of its own)."""
    if reader(format).splits is not None and root is not None and len(Path(split).parts) == 1:
        return Path(root) / split
    return split_dir(root, split)


def holds_images(folder: Path) -> bool:
    """Whether `folder` is a split folder: it has an image folder under one of the accepted names."""
    return any((Path(folder) / name).is_dir() for name in IMAGE_DIR_NAMES)


def root_splits(format: str, path: Path) -> list[str] | None:
    """The split names when `path` is a data-set root of the layout, None when it is one split (ROOT/SPLIT);
    a DataError naming the missing expected path when it is neither."""
    path = Path(path)
    names = reader(format).splits
    if names is None:
        if holds_images(path):
            return None
        found = [p.name for p in sorted(path.iterdir()) if p.is_dir() and holds_images(p)] if path.is_dir() else []
        if not found:
            raise DataError(f"{path} holds no split folder with images/ (expected {path}/train/images, ...)")
        return found
    try:
        return names(path)
    except DataError:
        try:
            names(path.absolute().parent)
        except DataError:
            pass
        else:
            return None
        raise


def data_splits(format: str, path: Path) -> list[Path]:
    """What `data check` validates: every split of a data-set root, or the one split `path` is."""
    path = Path(path)
    names = root_splits(format, path)
    return [path] if names is None else [path / name for name in names]


def default_split(format: str, path: Path, name: str = "val") -> Path:
    """A path given to `eval` or `predict`: a split itself, or a data-set root standing for its split `name`."""
    path = Path(path)
    if reader(format).splits is None:  # folder layouts: a root only when it has that split folder
        return path / name if not holds_images(path) and (path / name).is_dir() else path
    return path if root_splits(format, path) is None else path / name


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
# The standard data sets as they ship (segwise.data.layouts), each with its class mapping built in.
register_reader("voc", Reader(voc.find_voc, voc.CLASS_OPTIONS, voc.voc_splits))
register_reader("cityscapes", Reader(cityscapes.find_cityscapes, cityscapes.CLASS_OPTIONS,
                                     cityscapes.cityscapes_splits))
register_reader("ade20k", Reader(ade20k.find_ade20k, ade20k.CLASS_OPTIONS, ade20k.ade_splits))
register_reader("cocostuff", Reader(cocostuff.find_cocostuff, cocostuff.CLASS_OPTIONS, cocostuff.cocostuff_splits))
register_reader("camvid", Reader(camvid.find_camvid, camvid.CLASS_OPTIONS, camvid.camvid_splits))
register_reader("tianchi", Reader(tianchi.find_tianchi, tianchi.CLASS_OPTIONS, tianchi.tianchi_splits))
register_reader("meter", Reader(lists.find_meter, lists.METER_OPTIONS, lists.list_splits))
register_reader("list", Reader(lists.find_listed, splits=lists.list_splits))
