"""ADE20K as the scene-parsing benchmark ships it: `ADEChallengeData2016/images/{training,validation}/*.jpg` with
`annotations/<split>/*.png`, 150 classes stored as 1-150; 0 ("other") is ignored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segwise.data.folder import Sample, read_index_mask
from segwise.data.layouts.common import (find_root, image_files, known_split, no_extra_channels, paired_samples,
                                         split_of)

CLASS_NAMES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock",
    "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers",
    "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway",
    "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table",
    "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land",
    "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall",
    "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase",
    "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)
CLASS_OPTIONS = {"class_names": list(CLASS_NAMES), "class_values": list(range(1, len(CLASS_NAMES) + 1)),
                 "unmapped": "ignore", "ignore_index": 255}
ALIASES = {"train": "training", "val": "validation", "test": "testing"}  # segwise's default split names


def ade_root(path: Path) -> Path:
    return find_root(path, "ade20k", ["images", "annotations"], ["ADEChallengeData2016"])


def ade_splits(path: Path) -> list[str]:
    return sorted(p.name for p in (ade_root(path) / "images").iterdir() if p.is_dir())


def find_ade20k(split: Path, extra_channels: Sequence[str], require_masks: bool) -> list[Sample]:
    """Every image of images/<split>/ with annotations/<split>/<stem>.png (split train/val mean training/validation)."""
    path, name = split_of(split)
    no_extra_channels("ade20k", split, extra_channels)
    root = ade_root(path)
    known = ade_splits(root)
    name = name if name in known else ALIASES.get(name, name)
    known_split(name, known, "ade20k", root / "images" / name)
    pairs = [(image.stem, image, root / "annotations" / name / f"{image.stem}.png")
             for image in image_files(root / "images" / name)]
    return paired_samples(root / "images" / name, pairs, require_masks, read_index_mask)
