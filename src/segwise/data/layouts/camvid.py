"""CamVid as SegNet ships it: `train/`, `trainannot/`, `val/`, `valannot/`, `test/`, `testannot/` with list files
`train.txt`, ... of "image annotation" lines (written with SegNet's own absolute paths, found here by their tail).
Masks hold class indices 0-10 and 11 = void (ignored). A copy whose folders were renamed to `<split>/images` and
`<split>/masks` (as ../shared/datasets/camvid) reads too."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segwise.data.folder import Sample, find_samples
from segwise.data.layouts.common import (image_files, known_split, no_extra_channels, pair_samples, paired_samples,
                                         split_of)
from segwise.errors import DataError

CLASS_NAMES: tuple[str, ...] = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                                "Pedestrian", "Bicyclist")
PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0), (192, 128, 128),
    (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
"""SegNet's display colours (Scripts/test_segmentation_camvid.py)."""
VOID = 11  # SegNet's ignore_label
CLASS_OPTIONS = {"class_names": list(CLASS_NAMES), "palette": [list(c) for c in PALETTE], "ignore_index": VOID}


def camvid_splits(path: Path) -> list[str]:
    """Splits in either layout: `<split>/` beside `<split>annot/`, or `<split>/images/`."""
    path = Path(path)
    folders = [p for p in path.iterdir() if p.is_dir()] if path.is_dir() else []
    names = sorted(p.name for p in folders if (path / f"{p.name}annot").is_dir() or (p / "images").is_dir())
    if not names:
        raise DataError(f"{path} is not a camvid data set: {path / 'trainannot'} is missing (SegNet's layout: "
                        f"train/ beside trainannot/, ...; or {path / 'train' / 'images'}); pass the CamVid folder, or "
                        "another --format")
    return names


def find_camvid(split: Path, extra_channels: Sequence[str], require_masks: bool) -> list[Sample]:
    """The split's list file when there is one, else `<split>/` paired with `<split>annot/` by file name, else the
    renamed `<split>/{images,masks}` folders."""
    path, name = split_of(split)
    no_extra_channels("camvid", split, extra_channels)
    known_split(name, camvid_splits(path), "camvid", path / name)
    if (path / f"{name}.txt").is_file():
        return pair_samples(path / f"{name}.txt", path, require_masks)
    if (path / name / "images").is_dir():
        return find_samples(path / name, (), require_masks)
    pairs = [(image.stem, image, path / f"{name}annot" / image.name) for image in image_files(path / name)]
    return paired_samples(path / name, pairs, require_masks)
