"""PASCAL VOC 2012 as it ships: `JPEGImages/`, `SegmentationClass/` palette PNGs whose stored index is the class
(255 = void, the object borders), split lists `ImageSets/Segmentation/<split>.txt` of image ids, and the SBD-augmented
lists (`train_aug.txt`, ...: "image_path label_path" lines, labels in `SegmentationClassAug/`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segwise.data.folder import Sample, read_index_mask
from segwise.data.layouts.common import (find_root, known_split, list_entries, no_extra_channels, pair_samples,
                                         paired_samples, split_of)

CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
LISTS = Path("ImageSets") / "Segmentation"
NESTS = ("VOC2012", "VOCdevkit/VOC2012")  # the root may be VOC2012, VOCdevkit or the folder holding VOCdevkit


def voc_colormap(count: int) -> list[tuple[int, int, int]]:
    """The VOC colormap: bit 3i+c of a class index becomes bit 7-i of colour channel c (R, G, B)."""
    return [tuple(sum(((j >> (3 * i + c)) & 1) << (7 - i) for i in range(8)) for c in range(3))  # type: ignore[misc]
            for j in range(count)]


CLASS_OPTIONS = {"class_names": list(CLASS_NAMES), "palette": [list(c) for c in voc_colormap(len(CLASS_NAMES))],
                 "ignore_index": 255}


def voc_root(path: Path) -> Path:
    return find_root(path, "voc", ["JPEGImages", str(LISTS)], NESTS)


def voc_splits(path: Path) -> list[str]:
    """The split lists the data set holds (train, val, trainval, train_aug, ...)."""
    return sorted(p.stem for p in (voc_root(path) / LISTS).glob("*.txt"))


def find_voc(split: Path, extra_channels: Sequence[str], require_masks: bool) -> list[Sample]:
    """A split list's samples: lines of image ids (JPEGImages/<id>.jpg, SegmentationClass/<id>.png) or, in the
    SBD-augmented lists, of two paths relative to the VOC2012 folder."""
    path, name = split_of(split)
    no_extra_channels("voc", split, extra_channels)
    root = voc_root(path)
    listed = root / LISTS / f"{name}.txt"
    known_split(name, voc_splits(root), "voc", listed)
    entries = list_entries(listed)
    if any(len(fields) > 1 for _, fields in entries):
        return pair_samples(listed, root, require_masks, read_index_mask)
    pairs = [(fields[0], root / "JPEGImages" / f"{fields[0]}.jpg", root / "SegmentationClass" / f"{fields[0]}.png")
             for _, fields in entries]
    return paired_samples(listed, pairs, require_masks, read_index_mask)
