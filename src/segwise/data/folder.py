"""Folder data sets (`<split>/{images,masks,<extra>...}`): discovery, a torch Dataset and a padding collate."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from segwise.data.classmap import ClassMap
from segwise.data.io import IMAGE_EXTENSIONS, is_image_file, read_image, read_mask
from segwise.data.transforms import apply_transform, dtype_max, mix_seed, normalize, same_pixel_type, seed_transform
from segwise.errors import DataError

if TYPE_CHECKING:
    import albumentations as A

# Folder names each layout accepts, first name preferred (and suggested in messages); every reader uses these.
IMAGE_DIR_NAMES: tuple[str, ...] = ("images", "imgs", "image")
MASK_DIR_NAMES: tuple[str, ...] = ("masks", "gt", "labels", "annotations")
MATTING_IMAGE_DIR_NAMES: tuple[str, ...] = ("original", "image", "images")
MATTING_ALPHA_DIR_NAMES: tuple[str, ...] = ("mask", "alpha")
MAX_LISTED_PROBLEMS = 50


MaskReader = Callable[[Path, tuple[int, int]], np.ndarray]
"""(the file holding a sample's mask, its image's H×W) → the raw mask, for layouts whose masks are not plain image
files (an RLE row of a CSV, a `.mat` array, palette PNGs read as indices). Module-level functions or partials of
them, so that samples reach data-loader worker processes."""


@dataclass(frozen=True)
class Sample:
    """One image with its mask (None when unlabelled) and extra single-channel planes, matched by file stem.

    `mask` is the file the mask comes from; `mask_reader`, when set, is how the layout reads it (else the file is an
    image read by `read_mask`). Every reader of masks goes through `read_raw_mask`.
    """

    name: str
    image: Path
    mask: Path | None
    extras: tuple[Path, ...] = ()
    mask_reader: MaskReader | None = None


def problems_error(title: str, problems: Sequence[str], fix: str = "") -> DataError:
    """One DataError listing every problem (at most MAX_LISTED_PROBLEMS lines, then a count of the rest)."""
    lines = [f"{title}: {len(problems)} problem{'s' if len(problems) != 1 else ''}"]
    lines += [f"  - {problem}" for problem in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
    if fix:
        lines.append(fix)
    return DataError("\n".join(lines))


def display_path(path: Path, root: Path | None = None) -> str:
    """Path relative to root (default: the split folder two levels up, e.g. 'masks/a.png'), for messages."""
    root = path.parent.parent if root is None else root
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def find_samples(
    split_dir: str | Path, extra_channels: Sequence[str] = (), require_masks: bool = True
) -> list[Sample]:
    """Match `images/` with `masks/` (or gt/, labels/, annotations/) and extra planes by stem, sorted by name.

    Every problem in the split (orphan files, missing planes, duplicate stems, missing folders) is raised in one
    DataError. With require_masks=False (prediction) the split may be a plain image folder or a single image file.
    """
    split_dir = Path(split_dir)
    if not require_masks and is_image_file(split_dir):
        return [Sample(split_dir.stem, split_dir, None, ())]
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: folder not found; check the data path.")
    problems: list[str] = []
    image_dir = first_image_dir(split_dir, IMAGE_DIR_NAMES)
    if image_dir is None and not require_masks and _image_files(split_dir):
        image_dir = split_dir
    if image_dir is None:
        problems.append(f"no image folder; put the images in {split_dir / IMAGE_DIR_NAMES[0]}/")
    mask_dir = first_image_dir(split_dir, MASK_DIR_NAMES)
    if mask_dir is None and require_masks:
        problems.append(
            f"no mask folder; put the masks in {split_dir / MASK_DIR_NAMES[0]}/ (or one of {list(MASK_DIR_NAMES)})"
        )
    images = index_by_stem(image_dir, split_dir, problems) if image_dir is not None else {}
    if image_dir is not None and not images:
        problems.append(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir}")
    masks = index_by_stem(mask_dir, split_dir, problems) if mask_dir is not None else {}
    planes: list[tuple[str, dict[str, Path]]] = []
    for name in extra_channels:
        if (split_dir / name).is_dir():
            planes.append((name, index_by_stem(split_dir / name, split_dir, problems)))
        else:
            problems.append(
                f"extra channel folder {name}/ is missing; add it or remove {name!r} from data.extra_channels"
            )
    samples = []
    for stem, image in sorted(images.items()):
        if require_masks and mask_dir is not None and stem not in masks:
            problems.append(f"{display_path(image, split_dir)} has no mask in {mask_dir.name}/")
        for name, plane_index in planes:
            if stem not in plane_index:
                problems.append(f"{display_path(image, split_dir)} has no extra plane in {name}/")
        extras = tuple(plane_index[stem] for _, plane_index in planes if stem in plane_index)
        samples.append(Sample(stem, image, masks.get(stem), extras))
    if require_masks and image_dir is not None:
        problems += [
            f"{display_path(mask, split_dir)} has no image in {image_dir.name}/"
            for stem, mask in sorted(masks.items())
            if stem not in images
        ]
    if problems:
        raise problems_error(
            str(split_dir),
            problems,
            "Fix: give every image exactly one mask and one file per extra channel with the same file stem "
            "(any image extension), and remove or rename the rest.",
        )
    return samples


class SegmentationDataset(Dataset):
    """Reads image (+ extra planes) and mask, augments them together, and normalises the image.

    Augmentation randomness depends only on (seed, epoch, index), never on worker processes or order, so an
    interrupted run resumes bit-exactly. The epoch comes from the key (epoch, index) or from set_epoch, which
    lives in shared memory so that persistent workers see it.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        class_map: ClassMap,
        transform: A.BaseCompose | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.class_map = class_map
        self.transform = transform
        self.mean = mean
        self.std = std
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of an epoch (call before iterating over it)."""
        self._epoch.fill_(int(epoch))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item `index` augmented for the current epoch, or for an explicit epoch with key (epoch, index)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        sample = self.samples[index]
        image = read_sample_image(sample)
        mask = read_sample_mask(sample, self.class_map, image.shape[:2]) if sample.mask is not None else None
        if self.transform is not None:
            seed_transform(self.transform, mix_seed(self.seed, epoch, index))
        full_scale = dtype_max(image.dtype)
        pixels, mask = apply_transform(self.transform, image, mask)
        pixels = normalize(pixels, self.mean, self.std, max_value=full_scale)
        chw = np.ascontiguousarray(pixels.transpose(2, 0, 1))
        item: dict[str, Any] = {"image": torch.from_numpy(chw), "name": sample.name}
        if mask is not None:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))
        return item


def read_sample_image(sample: Sample) -> np.ndarray:
    """The image with its extra planes appended as channels; each plane must be single-channel and the same size.

    Planes of another pixel type than the image make the stack float32, each plane divided by its full scale.
    """
    image = read_image(sample.image)
    planes = [image]
    problems = []
    for path in sample.extras:
        plane = read_image(path)
        if plane.shape[2] != 1:
            problems.append(f"{display_path(path)}: extra plane has {plane.shape[2]} channels; save it as one channel")
        elif plane.shape[:2] != image.shape[:2]:
            problems.append(
                f"{display_path(path)}: extra plane is {_hw(plane)} but image {display_path(sample.image)} is "
                f"{_hw(image)}; resample it to the image grid"
            )
        planes.append(plane)
    if problems:
        raise DataError("\n".join(problems))
    if len(planes) == 1:
        return image
    return np.concatenate(same_pixel_type(planes), axis=2)


def read_sample_mask(sample: Sample, class_map: ClassMap, image_size: tuple[int, int]) -> np.ndarray:
    """The sample's mask encoded to class indices; it must have the image's height and width."""
    raw = read_raw_mask(sample, colours=class_map.palette is not None, image_size=image_size)
    where = display_path(sample.mask)
    if raw.shape[:2] != tuple(image_size):
        raise DataError(
            f"{where}: mask is {_hw(raw)} but image {display_path(sample.image)} is {image_size[0]}×{image_size[1]}; "
            "masks must match their image pixel for pixel"
        )
    try:
        return class_map.encode(raw)
    except DataError as error:
        raise DataError(f"{where}: {error}") from None


def read_raw_mask(sample: Sample, colours: bool = False, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """A sample's mask as stored (values, or RGB), before class mapping: the one way masks are read.

    The layout's `mask_reader` when it has one (given the image size, read from the image when not passed), else
    the image file, palette PNGs as their displayed colours when `colours` (a class map given by colours).
    """
    if sample.mask is None:
        raise DataError(f"{display_path(sample.image)} has no mask; labelled data needs one per image")
    if sample.mask_reader is None:
        return read_mask(sample.mask, colours=colours)
    size = tuple(image_size) if image_size is not None else read_image(sample.image).shape[:2]
    return sample.mask_reader(sample.mask, size)


def read_index_mask(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """A `MaskReader` for layouts whose palette PNGs hold class indices whatever colours they show (VOC)."""
    return read_mask(path)


def collate_pad(batch: Sequence[dict[str, Any]], ignore_index: int = 255, multiple: int = 1) -> dict[str, Any]:
    """Stack samples of different sizes: pad bottom/right to the largest H/W (rounded up to multiple).

    Images are padded with 0 and masks with ignore_index; `sizes` keeps each sample's own (H, W).
    """
    height = _round_up(max(item["image"].shape[-2] for item in batch), multiple)
    width = _round_up(max(item["image"].shape[-1] for item in batch), multiple)
    first = batch[0]["image"]
    images = first.new_zeros((len(batch), first.shape[0], height, width))
    for row, item in enumerate(batch):
        h, w = item["image"].shape[-2:]
        images[row, :, :h, :w] = item["image"]
    out: dict[str, Any] = {
        "image": images,
        "names": [item["name"] for item in batch],
        "sizes": [tuple(item["image"].shape[-2:]) for item in batch],
    }
    if all("mask" in item for item in batch):
        masks = torch.full((len(batch), height, width), ignore_index, dtype=torch.int64)
        for row, item in enumerate(batch):
            h, w = item["mask"].shape
            masks[row, :h, :w] = item["mask"]
        out["mask"] = masks
    return out


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple) if multiple > 1 else value


def _hw(array: np.ndarray) -> str:
    return f"{array.shape[0]}×{array.shape[1]}"


def first_image_dir(root: Path, names: Sequence[str]) -> Path | None:
    """The first named sub-folder that holds image files (or merely exists when none does)."""
    existing = [root / name for name in names if (root / name).is_dir()]
    with_images = [path for path in existing if _image_files(path)]
    return (with_images or existing or [None])[0]


def _image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if is_image_file(path))


def index_by_stem(folder: Path, split_dir: Path, problems: list[str]) -> dict[str, Path]:
    """Map file stem → path for the image files in folder, reporting stems that occur twice."""
    index: dict[str, Path] = {}
    for path in _image_files(folder):
        if path.stem in index:
            problems.append(
                f"{display_path(index[path.stem], split_dir)} and {display_path(path, split_dir)} share the name "
                f"{path.stem!r}; keep one of them"
            )
            continue
        index[path.stem] = path
    return index
