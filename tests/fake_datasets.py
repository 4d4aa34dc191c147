"""Miniatures of the standard data sets as they ship (torchgeo style): each writer lays out a few 32×32 samples with
the real folder nesting, file names and label encodings, and returns the root to pass to `--format` with the class
indices every mask must decode to (255 or CamVid's 11 where ignored)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from segwise.data.io import write_png
from segwise.data.layouts.voc import voc_colormap
from segwise.inference.rle import rle_encode

SIZE = 32
CITYSCAPES_IDS = {7: 0, 8: 1, 11: 2, 26: 13, 33: 18}  # label id → train id; 0, 1, 4 and 30 below are ignored


@dataclass
class FakeSet:
    """Where a miniature lies (`root`, given to --format) and what each sample's mask decodes to, per split."""

    root: Path
    expected: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    list_entry: Path | None = None  # a file some list names, for the missing-entry test
    missing_marker: str = ""  # what an error names when given the wrong folder

    def add(self, split: str, name: str, target: np.ndarray) -> None:
        self.expected.setdefault(split, {})[name] = target.astype(np.int64)


def _image(path: Path, rng: np.random.Generator) -> Path:
    """A small RGB image (PNG, or JPEG when the name says so, as VOC, ADE20K and COCO ship)."""
    pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _values(rng: np.random.Generator, choices: list[int]) -> np.ndarray:
    """Blocks of 8×8 pixels, each one of `choices`, so every value shows up at a readable scale."""
    blocks = rng.choice(choices, size=(SIZE // 8, SIZE // 8))
    return np.kron(blocks, np.ones((8, 8), np.int64)).astype(np.int64)


def _indexed(fake: FakeSet, rng: np.random.Generator, split: str, name: str, image: Path, mask: Path,
             choices: list[int], decoded: Callable[[np.ndarray], np.ndarray] = lambda raw: raw) -> np.ndarray:
    """An image and its single-channel index PNG of `choices`; records what the mask decodes to."""
    _image(image, rng)
    raw = _values(rng, choices)
    write_png(mask, raw.astype(np.uint8))
    fake.add(split, name, decoded(raw))
    return raw


def _palette_png(path: Path, indices: np.ndarray) -> None:
    """A palette-mode PNG with the VOC colormap, as SegmentationClass/ stores masks."""
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette([channel for colour in voc_colormap(256) for channel in colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_voc(base: Path) -> FakeSet:
    """VOCdevkit/VOC2012 with id lists (train, val) and an SBD list (train_aug) of '/JPEGImages/x.jpg
    /SegmentationClassAug/x.png' lines; SegmentationClass masks are palette PNGs with 255 object borders."""
    voc = base / "VOCdevkit" / "VOC2012"
    fake = FakeSet(base, missing_marker="ImageSets/Segmentation")
    rng = np.random.default_rng(1)
    lists: dict[str, list[str]] = {"train": [], "val": [], "train_aug": []}
    for index, split in enumerate(["train", "train", "val", "train_aug", "train_aug"]):
        name = f"2007_{index:06d}"
        _image(voc / "JPEGImages" / f"{name}.jpg", rng)
        target = _values(rng, [0, 1, 15, 20])
        target[8, :] = 255  # an object border
        if split == "train_aug":  # SBD's masks are plain single-channel index PNGs
            write_png(voc / "SegmentationClassAug" / f"{name}.png", target.astype(np.uint8))
            lists[split].append(f"/JPEGImages/{name}.jpg /SegmentationClassAug/{name}.png")
        else:
            _palette_png(voc / "SegmentationClass" / f"{name}.png", target)
            lists[split].append(name)
        fake.add(split, name, target)
    for split, lines in lists.items():
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    fake.list_entry = voc / "JPEGImages" / "2007_000002.jpg"
    return fake


def write_cityscapes(root: Path) -> FakeSet:
    """leftImg8bit/<split>/<city>/ and gtFine/<split>/<city>/ with labelIds holding ids outside the 19 evaluated
    classes, and the colour/instance files that ship beside them."""
    fake = FakeSet(root, missing_marker="leftImg8bit")
    rng = np.random.default_rng(2)
    for split, city, frame in [("train", "aachen", 19), ("train", "bochum", 4), ("val", "frankfurt", 7)]:
        stem = f"{city}_000000_{frame:06d}"
        labels = root / "gtFine" / split / city
        ids = _indexed(fake, rng, split, stem, root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                       labels / f"{stem}_gtFine_labelIds.png", [0, 1, 4, 7, 8, 11, 26, 30, 33],
                       np.vectorize(lambda v: CITYSCAPES_IDS.get(v, 255)))
        write_png(labels / f"{stem}_gtFine_color.png", np.zeros((SIZE, SIZE, 3), np.uint8))
        write_png(labels / f"{stem}_gtFine_instanceIds.png", ids.astype(np.uint16) * 1000)
    return fake


def write_ade20k(base: Path) -> FakeSet:
    """ADEChallengeData2016/{images,annotations}/{training,validation}, labels 1-150 and 0 = other."""
    root = base / "ADEChallengeData2016"
    fake = FakeSet(base, missing_marker="images")
    rng = np.random.default_rng(3)
    for index, split in enumerate(["training", "training", "validation"]):
        name = f"ADE_{'train' if split == 'training' else 'val'}_{index + 1:08d}"
        _indexed(fake, rng, split, name, root / "images" / split / f"{name}.jpg",
                 root / "annotations" / split / f"{name}.png", [0, 1, 2, 75, 150],
                 lambda raw: np.where(raw == 0, 255, raw - 1))
    return fake


def write_cocostuff(root: Path) -> FakeSet:
    """The 164k release: images/{train2017,val2017}/*.jpg and stuffthingmaps/<split>/*.png (0-181, 255)."""
    fake = FakeSet(root, missing_marker="images")
    rng = np.random.default_rng(4)
    for index, split in enumerate(["train2017", "train2017", "val2017"]):
        name = f"{index + 9:012d}"
        _indexed(fake, rng, split, name, root / "images" / split / f"{name}.jpg",
                 root / "stuffthingmaps" / split / f"{name}.png", [0, 11, 91, 181, 255])
    return fake


def write_cocostuff10k(root: Path) -> FakeSet:
    """The 10k release: images/*.jpg, annotations/*.mat (S: 1-182, 0 = unlabelled), imageLists/{train,test}.txt."""
    fake = FakeSet(root, missing_marker="images")
    rng = np.random.default_rng(5)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for index, split in enumerate(["train", "train", "test"]):
        name = f"COCO_train2014_{index + 77:012d}"
        _image(root / "images" / f"{name}.jpg", rng)
        labels = _values(rng, [0, 1, 92, 182])
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / "annotations" / f"{name}.mat", {"S": labels.astype(np.uint16),
                                                                "names": np.array(["unlabeled"], dtype=object)})
        lists[split].append(name)
        fake.add(split, name, np.where(labels == 0, 255, labels - 1))
    (root / "imageLists").mkdir(parents=True, exist_ok=True)
    for split, names in lists.items():
        (root / "imageLists" / f"{split}.txt").write_text("\n".join(names) + "\n")
    fake.list_entry = root / "annotations" / f"{lists['train'][1]}.mat"
    return fake


def write_camvid(root: Path) -> FakeSet:
    """SegNet's CamVid folder: train/ trainannot/ val/ valannot/ test/ testannot/ and list files written with
    SegNet's absolute paths (/SegNet/CamVid/train/x.png /SegNet/CamVid/trainannot/x.png)."""
    fake = FakeSet(root, missing_marker="trainannot")
    rng = np.random.default_rng(6)
    for split, count in [("train", 2), ("val", 1), ("test", 1)]:
        lines = []
        for index in range(count):
            name = f"0001TP_{6690 + 30 * index:06d}" if split != "val" else f"0016E5_{7959 + index:05d}"
            _indexed(fake, rng, split, name, root / split / f"{name}.png", root / f"{split}annot" / f"{name}.png",
                     [0, 3, 8, 10, 11])
            lines.append(f"/SegNet/CamVid/{split}/{name}.png /SegNet/CamVid/{split}annot/{name}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    fake.list_entry = root / "trainannot" / "0001TP_006720.png"
    return fake


def write_tianchi(root: Path) -> FakeSet:
    """train/*.jpg with train_mask.csv (name<TAB>rle, column-major 1-based runs; one row without RLE = all
    background), and an unlabelled test_a/."""
    fake = FakeSet(root, missing_marker="train_mask.csv")
    rng = np.random.default_rng(7)
    rows = []
    for index in range(3):
        name = f"{'0A3B10OZ9S' if index == 0 else f'TC{index:08d}'}.jpg"
        _image(root / "train" / name, rng)
        target = _values(rng, [0, 1]) if index else np.zeros((SIZE, SIZE), np.int64)
        rows.append(f"{name}\t{rle_encode(target) if index else ''}")
        fake.add("train", Path(name).stem, target)
    (root / "train_mask.csv").write_text("\n".join(rows) + "\n")
    _image(root / "test_a" / "TESTA00001.jpg", rng)
    fake.list_entry = root / "train" / "TC00000002.jpg"
    return fake


def _write_pairs(base: Path, split: str, names: list[str], rng: np.random.Generator, fake: FakeSet,
                 separator: str = " ") -> None:
    lines = []
    for name in names:
        _indexed(fake, rng, split, name, base / "images" / split / f"{name}.jpg",
                 base / "annotations" / split / f"{name}.png", [0, 1, 2])
        lines.append(f"images/{split}/{name}.jpg{separator}annotations/{split}/{name}.png")
    (base / f"{split}.txt").write_text("\n".join(lines) + "\n")


def write_meter(root: Path) -> FakeSet:
    """meter_seg: images/<split>/, annotations/<split>/ (0 background, 1 pointer, 2 scale) and <split>.txt."""
    fake = FakeSet(root, missing_marker="train.txt")
    rng = np.random.default_rng(8)
    _write_pairs(root, "train", ["20190822_105", "20190822_106"], rng, fake)
    _write_pairs(root, "val", ["20190822_201"], rng, fake)
    fake.list_entry = root / "annotations" / "train" / "20190822_106.png"
    return fake


def write_list(root: Path) -> FakeSet:
    """Plain list files: train.txt comma separated, val.txt whitespace separated, paths relative to the lists."""
    fake = FakeSet(root, missing_marker="train.txt")
    rng = np.random.default_rng(9)
    _write_pairs(root, "train", ["a", "b"], rng, fake, separator=", ")
    _write_pairs(root, "val", ["c"], rng, fake)
    (root / "README.txt").write_text("not a list of pairs\n")
    fake.list_entry = root / "images" / "train" / "b.jpg"
    return fake


WRITERS: dict[str, tuple[str, Callable[[Path], FakeSet]]] = {
    "voc": ("voc", write_voc),
    "cityscapes": ("cityscapes", write_cityscapes),
    "ade20k": ("ade20k", write_ade20k),
    "cocostuff": ("cocostuff", write_cocostuff),
    "cocostuff10k": ("cocostuff", write_cocostuff10k),
    "camvid": ("camvid", write_camvid),
    "tianchi": ("tianchi", write_tianchi),
    "meter": ("meter", write_meter),
    "list": ("list", write_list),
}
"""Miniature name → (its data.format, its writer)."""

