"""Cityscapes as it ships: `leftImg8bit/<split>/<city>/<name>_leftImg8bit.png` with `gtFine/<split>/<city>/
<name>_gtFine_labelIds.png` (or `gtCoarse`, `_gtCoarse_labelIds`), also inside the `*_trainvaltest` folders of the
zip files. The label ids of the 19 evaluated classes become train ids 0-18; every other id is ignored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segwise.data.folder import Sample, read_index_mask
from segwise.data.layouts.common import known_split, no_extra_channels, paired_samples, split_of
from segwise.errors import DataError

CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
LABEL_IDS: tuple[int, ...] = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
"""The label id of each train id (cityscapesScripts' labels.py); the others (void, license plate, ...) are ignored."""
PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
CLASS_OPTIONS = {"class_names": list(CLASS_NAMES), "palette": [list(c) for c in PALETTE],
                 "class_values": list(LABEL_IDS), "unmapped": "ignore", "ignore_index": 255}
IMAGE_TREES = ("leftImg8bit", "leftImg8bit_trainvaltest/leftImg8bit")
LABEL_TREES = ("gtFine", "gtFine_trainvaltest/gtFine", "gtCoarse", "gtCoarse/gtCoarse")


def image_tree(path: Path) -> Path:
    found = next((path / tree for tree in IMAGE_TREES if (path / tree).is_dir()), None)
    if found is None:
        raise DataError(f"{path} is not a cityscapes data set: {path / IMAGE_TREES[0]} is missing (nor "
                        f"{path / IMAGE_TREES[1]}); pass the folder that holds leftImg8bit/ and gtFine/, or another "
                        "--format")
    return found


def cityscapes_splits(path: Path) -> list[str]:
    return sorted(p.name for p in image_tree(path).iterdir() if p.is_dir())


def find_cityscapes(split: Path, extra_channels: Sequence[str], require_masks: bool) -> list[Sample]:
    """Every `<city>/*_leftImg8bit.png` of the split with its labelIds PNG (fine annotations when the split has
    them, else coarse)."""
    path, name = split_of(split)
    no_extra_channels("cityscapes", split, extra_channels)
    images = image_tree(path)
    known_split(name, cityscapes_splits(path), "cityscapes", images / name)
    labels = next((path / tree / name for tree in LABEL_TREES if (path / tree / name).is_dir()), None)
    if labels is None and require_masks:
        raise DataError(f"{path / LABEL_TREES[0] / name} is missing (nor {path / LABEL_TREES[2] / name}): the "
                        f"cityscapes split {name!r} has no labels; add gtFine/ (or gtCoarse/) beside leftImg8bit/")
    kind = labels.parent.name if labels is not None else "gtFine"  # gtFine or gtCoarse, as in the file names
    pairs = []
    for image in sorted(images.glob(f"{name}/*/*_leftImg8bit.png")):
        stem = image.name.removesuffix("_leftImg8bit.png")
        mask = labels / image.parent.name / f"{stem}_{kind}_labelIds.png" if labels is not None else None
        pairs.append((stem, image, mask))
    return paired_samples(images / name, pairs, require_masks, read_index_mask)
