"""TianChi building segmentation (pytorch-segmentation's TianChi loader): images in `<split>/` and their masks as
run-length rows of `<split>_mask.csv` (`name<TAB>rle`, no header; an empty RLE is all background), decoded on the
fly, so no PNG mask is ever written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from segwise.data.folder import Sample
from segwise.data.layouts.common import image_files, known_split, no_extra_channels, paired_samples, split_of
from segwise.data.rle import read_rle_csv, rle_decode
from segwise.errors import DataError

CLASS_OPTIONS = {"class_names": ["background", "building"], "palette": [[0, 0, 0], [255, 255, 255]],
                 "ignore_index": 255}
MASK_SUFFIX = "_mask.csv"


def tianchi_splits(path: Path) -> list[str]:
    """The labelled splits: `<split>_mask.csv` beside a `<split>/` image folder."""
    path = Path(path)
    names = sorted(p.name.removesuffix(MASK_SUFFIX) for p in path.glob(f"*{MASK_SUFFIX}"))
    names = [name for name in names if (path / name).is_dir()]
    if not names:
        raise DataError(f"{path} is not a tianchi data set: {path / ('train' + MASK_SUFFIX)} beside {path / 'train'}/ "
                        "is missing; pass the folder holding the images' folder and its name<TAB>rle CSV, or another "
                        "--format")
    return names


def decode_row(name: str, rle: str, csv: Path, image_size: tuple[int, int]) -> np.ndarray:
    """A `MaskReader`: one CSV row's RLE painted as class 1 on an image-sized class-0 mask."""
    try:
        return rle_decode(rle, image_size)
    except DataError as error:
        size = f"{image_size[0]}×{image_size[1]}"
        raise DataError(f"{csv} ({name}): {error}; the runs must fit its {size} image, so fix or drop the row") from None


def find_tianchi(split: Path, extra_channels: Sequence[str], require_masks: bool) -> list[Sample]:
    """One sample per CSV row (the image `<split>/<name>`); without require_masks and a CSV, the folder's images."""
    path, name = split_of(split)
    no_extra_channels("tianchi", split, extra_channels)
    csv = path / f"{name}{MASK_SUFFIX}"
    if not csv.is_file() and not require_masks:
        return paired_samples(path / name, [(p.stem, p, None) for p in image_files(path / name)], False)
    known_split(name, tianchi_splits(path), "tianchi", csv)
    rows = read_rle_csv(csv)
    pairs = [(Path(row).stem, path / name / row, csv) for row, _ in rows]
    samples = paired_samples(csv, pairs, require_masks)
    return [replace(sample, mask_reader=partial(decode_row, row, rle)) for sample, (row, rle) in zip(samples, rows)]
