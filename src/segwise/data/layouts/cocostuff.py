"""COCO-Stuff as it ships, in either release. 164k: `images/{train2017,val2017}/*.jpg` with index PNGs of the same
stem in `stuffthingmaps/<split>/` (or `annotations/<split>/`): 182 classes 0-181, 255 unlabelled. 10k:
`images/*.jpg`, `annotations/*.mat` (variable `S`, labels 1-182, 0 unlabelled) and split lists
`imageLists/{train,test,all}.txt` of image ids."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

import numpy as np

from segwise.data.folder import Sample, read_index_mask
from segwise.data.layouts.common import (find_root, image_files, known_split, list_entries, no_extra_channels,
                                         paired_samples, split_of)
from segwise.errors import DataError

CLASS_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana",
    "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "mirror", "dining table", "window", "desk", "toilet", "door", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "blender", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush", "banner", "blanket", "branch",
    "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile",
    "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence",
    "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light", "mat", "metal",
    "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other",
    "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad",
    "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete",
    "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind",
    "window-other", "wood",
)
"""COCO-Stuff's labels 1-182 (labels.txt), 0-based here; the 11 thing ids COCO never annotated keep their slots."""
CLASS_OPTIONS = {"class_names": list(CLASS_NAMES), "ignore_index": 255}
MASK_TREES = ("stuffthingmaps", "annotations")
ALIASES_164K = {"train": "train2017", "val": "val2017"}
ALIASES_10K = {"val": "test"}  # the 10k release has no val list; its test list is the one evaluated on


def is_10k(root: Path) -> bool:
    return (root / "imageLists").is_dir()


def stuff_root(path: Path) -> Path:
    root = find_root(path, "cocostuff", ["images"])
    if not is_10k(root) and not any((root / tree).is_dir() for tree in MASK_TREES):
        raise DataError(f"{path} is not a cocostuff data set: {path / MASK_TREES[0]} is missing (nor "
                        f"{path / MASK_TREES[1]}, nor the 10k release's {path / 'imageLists'}); pass the folder that "
                        "holds images/ and stuffthingmaps/, or another --format")
    return root


def cocostuff_splits(path: Path) -> list[str]:
    root = stuff_root(path)
    if is_10k(root):
        return sorted(p.stem for p in (root / "imageLists").glob("*.txt"))
    return sorted(p.name for p in (root / "images").iterdir() if p.is_dir())


def read_stuff_mat(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """A 10k `.mat` annotation as 164k values: labels 1-182 become 0-181 and 0 (unlabelled) becomes 255."""
    import scipy.io

    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error}); check the path and permissions") from None
    problem = mat_problem(data)
    if problem is None:
        try:
            labels = scipy.io.loadmat(BytesIO(data), variable_names=["S"]).get("S")
        except Exception as error:  # scipy raises many types for damaged files
            problem = f"{type(error).__name__}: {error}"
    if problem is not None:
        raise DataError(f"{path}: not a readable MATLAB .mat file ({problem}); re-download the annotation or remove "
                        "its id from the split list")
    if labels is None or not (np.issubdtype(labels.dtype, np.integer) or np.isfinite(labels).all()
                              and (labels == np.round(labels)).all()):
        raise DataError(f"{path}: no 2-D label array 'S' of whole numbers in the .mat file (COCO-Stuff 10k keeps the "
                        "labels there); check that it is a COCO-Stuff annotation")
    labels = labels.astype(np.int64) - 1
    labels[labels < 0] = 255
    return labels.astype(np.uint16) if labels.max() > 255 else labels.astype(np.uint8)


MAT_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 14, 15, 16, 17, 18})  # MAT v5 data types, miINT8 .. miUTF32
MAT_ITEM_BYTES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8}  # numeric data types
MAX_INFLATED = 2**30  # a compressed element inflating past 1 GiB is damaged (an annotation is a few MB)


class _Malformed(Exception):
    pass


def mat_problem(data: bytes) -> str | None:
    """What is malformed in a MAT v5 file, else None: scipy's reader trusts the sizes and types of its data elements
    and can crash the process on a damaged file, so every variable's header and the labels `S` are checked first."""
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        return "no MAT v5 header (MATLAB v7.3 files are HDF5: save them with -v7)"
    order = ">" if data[126:128] == b"MI" else "<"
    try:
        for offset, kind, body in _elements(data[128:], order):
            if kind == 15:  # miCOMPRESSED: a zlib stream holding the variable
                inflater = zlib.decompressobj()
                body = inflater.decompress(body, MAX_INFLATED)
                if inflater.unconsumed_tail:
                    raise _Malformed(f"the compressed variable at byte {offset} inflates past {MAX_INFLATED} bytes")
                inner = _elements(body, order)
                if len(inner) != 1:
                    raise _Malformed(f"the compressed variable at byte {offset} holds {len(inner)} elements")
                kind, body = inner[0][1:]
            if kind != 14:
                raise _Malformed(f"the element at byte {offset} is not a variable (type {kind})")
            _check_array(body, order)
    except _Malformed as error:
        return str(error)
    except zlib.error as error:
        return f"a compressed variable is damaged ({error})"
    return None


def _elements(data: bytes, order: str) -> list[tuple[int, int, bytes]]:
    """(offset, type, body) of each data element, each of a known type and inside `data`."""
    found, offset = [], 0
    while offset + 8 <= len(data):
        kind, size = struct.unpack_from(order + "II", data, offset)
        header = 8
        if kind >> 16:  # small data element: type and size share the first word, the data the second
            kind, size, header = kind & 0xFFFF, kind >> 16, 4
        end = offset + header + size
        if kind not in MAT_TYPES or end > len(data) or (header == 4 and size > 4):
            raise _Malformed(f"the data element at byte {offset} (type {kind}, {size} bytes) is damaged")
        found.append((offset, kind, data[offset + header:end]))
        offset = end if kind == 15 else offset + (8 if header == 4 else 8 + size + -size % 8)  # 8-byte aligned
    return found


def _check_array(body: bytes, order: str) -> None:
    """An miMATRIX opens with flags (miUINT32 ×2), dimensions (miINT32) and name (miINT8); the labels `S` must be
    one real integer-or-float part filling its two dimensions."""
    parts = _elements(body, order)
    heads = [(kind, len(data)) for _, kind, data in parts[:3]]
    if len(heads) < 3 or heads[0] != (6, 8) or heads[1][0] != 5 or heads[1][1] < 8 or heads[1][1] % 4 \
            or heads[2][0] != 1:
        raise _Malformed(f"a variable's header is damaged ({heads})")
    for _, kind, data in parts[3:]:
        if kind == 14:  # cells and structs hold arrays
            _check_array(data, order)
    if parts[2][2] != b"S":
        return
    flags = struct.unpack(order + "I", parts[0][2][:4])[0]
    dims = struct.unpack(f"{order}{len(parts[1][2]) // 4}i", parts[1][2])
    real = parts[3] if len(parts) == 4 else (0, 0, b"")
    if not 6 <= flags & 0xFF <= 15 or flags & 0xE00 or len(dims) != 2 or min(dims) < 1 \
            or real[1] not in MAT_ITEM_BYTES or len(real[2]) != dims[0] * dims[1] * MAT_ITEM_BYTES[real[1]]:
        raise _Malformed(f"the labels S are not one real numeric {dims} array")


def find_cocostuff(split: Path, extra_channels: Sequence[str], require_masks: bool) -> list[Sample]:
    """164k: every image of images/<split>/ with its PNG; 10k: the ids of imageLists/<split>.txt with their .mat."""
    path, name = split_of(split)
    no_extra_channels("cocostuff", split, extra_channels)
    root = stuff_root(path)
    known = cocostuff_splits(root)
    name = name if name in known else (ALIASES_10K if is_10k(root) else ALIASES_164K).get(name, name)
    if is_10k(root):
        lists = root / "imageLists" / f"{name}.txt"
        known_split(name, known, "cocostuff (10k)", lists)
        pairs = [(fields[0], root / "images" / f"{fields[0]}.jpg", root / "annotations" / f"{fields[0]}.mat")
                 for _, fields in list_entries(lists)]
        return paired_samples(lists, pairs, require_masks, read_stuff_mat)
    known_split(name, known, "cocostuff", root / "images" / name)
    trees = [root / tree / name for tree in MASK_TREES]
    masks = next((tree for tree in trees if tree.is_dir()), trees[0])
    pairs = [(image.stem, image, masks / f"{image.stem}.png") for image in image_files(root / "images" / name)]
    return paired_samples(root / "images" / name, pairs, require_masks, read_index_mask)
