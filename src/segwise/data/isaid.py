"""iSAID semantic labels (FactSeg's data set): class names, palette and normalisation preset, the official colour-mask
decoding and the pairing of `images/X.png` with `masks/X_instance_color_RGB.png` (or index masks `masks/X.png`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segwise.data.classmap import ClassMap
from segwise.data.folder import IMAGE_DIR_NAMES, MASK_DIR_NAMES, Sample, display_path, problems_error
from segwise.data.io import is_image_file

CLASS_NAMES: tuple[str, ...] = (
    "background", "ship", "storage_tank", "baseball_diamond", "tennis_court", "basketball_court",
    "ground_track_field", "bridge", "large_vehicle", "small_vehicle", "helicopter", "swimming_pool", "roundabout",
    "soccer_ball_field", "plane", "harbor",
)
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (0, 0, 63), (0, 191, 127), (0, 63, 0), (0, 63, 127), (0, 63, 191), (0, 63, 255), (0, 127, 63),
    (0, 127, 127), (0, 0, 127), (0, 0, 191), (0, 0, 255), (0, 63, 63), (0, 127, 191), (0, 127, 255), (0, 100, 155),
)
MEAN: tuple[float, ...] = (123.675, 116.28, 103.53)  # FactSeg's normalisation, raw 0..255 pixel units
STD: tuple[float, ...] = (58.395, 57.12, 57.375)
MASK_SUFFIX = "_instance_color_RGB"
IGNORE_INDEX = 255

_COLOURS = ClassMap(len(CLASS_NAMES), IGNORE_INDEX, palette=PALETTE, unmapped="ignore")
_INDICES = ClassMap(len(CLASS_NAMES), IGNORE_INDEX)


def decode_isaid_mask(raw: np.ndarray) -> np.ndarray:
    """An iSAID mask → int64 class ids: RGB colours by exact match with unmatched colours → 0 (background), as the
    official `RemoveColorMap` does; single-channel masks must already hold ids 0–15 or 255 (ignore)."""
    if raw.ndim == 3:
        ids = _COLOURS.encode(raw)
        ids[ids == IGNORE_INDEX] = 0
        return ids
    return _INDICES.encode(raw)


def _files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.rglob("*")) if is_image_file(p)}


def _first(split_dir: Path, names: tuple[str, ...]) -> Path | None:
    return next((split_dir / n for n in names if (split_dir / n).is_dir()), None)


def find_isaid_samples(split_dir: str | Path) -> list[Sample]:
    """Pair every image under `images/` with its mask under `masks/` (searched recursively, as iSAID nests them),
    named `<stem>_instance_color_RGB.*` or `<stem>.*`; every unpaired file is reported at once."""
    split_dir = Path(split_dir)
    image_dir, mask_dir = _first(split_dir, IMAGE_DIR_NAMES), _first(split_dir, MASK_DIR_NAMES)
    if image_dir is None or mask_dir is None:
        raise problems_error(str(split_dir), [f"expected {split_dir}/images/ and {split_dir}/masks/"],
                             "Fix: put the iSAID images in images/ and the *_instance_color_RGB.png masks in masks/.")
    images = _files(image_dir)
    masks = {stem.removesuffix(MASK_SUFFIX): path for stem, path in _files(mask_dir).items()}
    problems = [f"{display_path(p, split_dir)} has no mask" for s, p in images.items() if s not in masks]
    problems += [f"{display_path(p, split_dir)} has no image" for s, p in masks.items() if s not in images]
    if not images:
        problems.append(f"no images in {image_dir}")
    if problems:
        raise problems_error(str(split_dir), problems,
                             f"Fix: name each mask after its image: X.png ↔ X{MASK_SUFFIX}.png (or X.png).")
    return [Sample(stem, images[stem], masks[stem]) for stem in sorted(images)]
