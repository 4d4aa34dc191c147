"""Sketch sets of a split, and the datasets and collation that turn them into the two ContextSeg stages' batches.

Every item is drawn on the fly from the vectors (after `normalize` into the `FRAME`), so augmentation happens on the
strokes and a prepared set stays small.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from segwise.data.sketch.cache import load_prepared, load_prepared_split, prepared_splits
from segwise.data.sketch.formats import SPLITS, Sketch, category_parts, normalize, read_sketches, read_spg_folder
from segwise.data.sketch.layouts import (CREATIVE_SPLITS, creative_folder, read_creative_folder, read_sketch_folder,
                                         sketch_files)
from segwise.data.sketch.splits import DEFAULT_SCHEME, scheme_splits, split_sketches
from segwise.data.sketch.raster import FRAME, augment_sketch, distance_field, render_strokes, render_union
from segwise.errors import ConfigError, DataError


def read_splits(root: Path | None, splits: Sequence[str] | None = None, categories: Sequence[str] | None = None, *,
                scheme: str = DEFAULT_SCHEME, seed: int = 0) -> dict[str, list[Sketch]]:
    """Split → sketches of each of ``splits`` (None: every split the source has), reading the source once.

    ``root`` is the SketchGNN SPG folder (``splits.json``), a folder of per-category SPG files (split by ``scheme``
    and ``seed``, see `splits`), CreativeSketch's ``raw_data`` (last 500 = test), a `segwise sketch prepare` folder
    (``<split>/<category>.npz``) or one sketch or ``.npz`` file (every split name gives all of it).
    """
    if root is None:
        raise ConfigError("data.root is not set; pass the SPG folder, a `segwise sketch prepare` folder or a file")
    scheme_splits(scheme)  # a bad scheme fails before any file is read
    root = Path(root)
    # each layout: its splits, and a reader of the named splits (layouts read in one go give all of theirs)
    read: Callable[[list[str]], dict[str, list[Sketch]]]
    if root.is_file():
        available, layout = list(splits or ["all"]), "a sketch file"
        read = partial(_read_file, root)
    elif (root / "splits.json").is_file():
        available, layout = list(SPLITS), "an SPG splits.json"
        read = partial(_each_split, partial(read_spg_folder, root, categories))
    elif root.is_dir() and creative_folder(root) is not None:
        available, layout = list(CREATIVE_SPLITS), "CreativeSketch (its last 500 records are the test split)"
        read = lambda _: read_creative_folder(root, categories)
    elif prepared_splits(root):
        available, layout = prepared_splits(root), "a `segwise sketch prepare` folder"
        read = partial(_each_split, partial(load_prepared_split, root, categories=categories))
    elif root.is_dir() and sketch_files(root):
        available, layout = list(scheme_splits(scheme)), f"a folder of sketch files split {scheme}"
        read = lambda _: split_sketches(read_sketch_folder(root, categories), scheme, seed)
    elif root.is_dir() and any(root.glob("*.npz")):
        raise DataError(f"{root} was prepared by an earlier segwise (one <split>.npz per split); run `segwise sketch "
                        "prepare` on the source again: it now writes <split>/<category>.npz, so that preparing "
                        "another category never replaces the first")
    elif root.is_dir():
        raise DataError(f"{root} holds no sketch data set: expected splits.json + raw/ (SPG from SketchGNN), "
                        "<category>.ndjson files (SPG as SketchX-PRIS ships it, also inside 'Perceptual Grouping/'), "
                        "CreativeSketch's raw_data (doodle_*.txt) or <split>/<category>.npz from `segwise sketch "
                        "prepare`; pass one of those")
    else:
        raise DataError(f"{root} does not exist; pass the SPG folder, a prepared folder or a sketch file")
    unknown = [split for split in splits or () if split not in available]
    if unknown:
        raise DataError(f"{root} has no {', '.join(unknown)} split: {layout} has {', '.join(available)}; name one of "
                        "those (data.train_split, data.val_split where null trains without validation, --split or "
                        "--splits)")
    wanted = list(splits or available)
    found = read(wanted)
    return {split: _checked(found[split], root, split, categories) for split in wanted}


def _read_file(path: Path, names: list[str]) -> dict[str, list[Sketch]]:
    """One file is every split it is named as."""
    sketches = load_prepared(path) if path.suffix == ".npz" else read_sketches(path)
    return dict.fromkeys(names, sketches)


def _each_split(read_split: Callable[[str], list[Sketch]], names: list[str]) -> dict[str, list[Sketch]]:
    return {name: read_split(name) for name in names}


def _checked(sketches: list[Sketch], root: Path, split: str, categories: Sequence[str] | None) -> list[Sketch]:
    """Only the sketches of ``categories``, refusing a category the split lacks and an empty split."""
    if categories:
        present = {s.category for s in sketches}
        missing = sorted(set(categories) - present)
        if missing:
            raise DataError(f"{root} [{split}] has no sketches of {', '.join(missing)}; "
                            f"it has {', '.join(sorted(present)) or 'none'}")
        sketches = [s for s in sketches if s.category in categories]
    if not sketches:
        raise DataError(f"{root} [{split}] holds no sketches")
    return sketches


def load_sketches(root: Path | None, split: str, categories: Sequence[str] | None = None, limit: int | None = None,
                  *, scheme: str = DEFAULT_SCHEME, seed: int = 0) -> list[Sketch]:
    """Sketches of one split (see `read_splits`), the first ``limit`` of each category when given."""
    return first_per_category(read_splits(root, [split], categories, scheme=scheme, seed=seed)[split], limit)


def first_per_category(sketches: list[Sketch], limit: int | None) -> list[Sketch]:
    """The first `limit` sketches of each category, in order (a reproducible slice of a split); all without one."""
    if not limit:
        return sketches
    taken: dict[str, int] = {}
    kept = []
    for sketch in sketches:
        taken[sketch.category] = taken.get(sketch.category, 0) + 1
        if taken[sketch.category] <= limit:
            kept.append(sketch)
    return kept


def named_category_parts(sketches: list[Sketch]) -> dict[str, list[str]]:
    """Category → part names; training needs every category to name its parts."""
    parts = category_parts(sketches)
    for category, names in parts.items():
        if not names:
            raise DataError(f"category {category!r} has no part names; read it with part_names")
    return parts


def _keyed(key: int | tuple[int, int], seed: int) -> tuple[int, np.random.Generator]:
    """Item index and its augmentation randomness: the engine's sampler gives (epoch, index) keys, so the
    augmentation is a pure function of (seed, epoch, index) and a resumed run sees the same samples."""
    epoch, index = key if isinstance(key, tuple) else (0, key)
    return index, np.random.default_rng([seed, epoch, index])


class StrokeImageDataset(Dataset):
    """Stage 1: one image per stroke and one per part with ≥ 2 strokes, each with its distance-field target."""

    def __init__(self, sketches: list[Sketch], canvas: int, line_width: int, df_k: float, augment_p: float = 0.0,
                 seed: int = 0) -> None:
        self.sketches = [normalize(s, canvas=FRAME) for s in sketches]
        self.canvas, self.line_width, self.df_k = canvas, line_width, df_k
        self.augment_p, self.seed = augment_p, seed
        self.items: list[tuple[int, tuple[int, ...]]] = []
        for i, sketch in enumerate(sketches):
            self.items += [(i, (s,)) for s in range(sketch.num_strokes)]
            for part in np.unique(sketch.labels):
                ids = tuple(int(s) for s in np.flatnonzero(sketch.labels == part))
                if len(ids) >= 2:
                    self.items.append((i, ids))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        index, rng = _keyed(key, self.seed)
        i, ids = self.items[index]
        sketch = self.sketches[i]
        sketch = replace(sketch, strokes=[sketch.strokes[s] for s in ids], labels=sketch.labels[list(ids)])
        if self.augment_p:
            # ContextSeg's stage-1 augmentation: one affine (translate ±10 %, shear ±5°) on image and DF alike;
            # no stroke dropping.
            sketch = augment_sketch(sketch, rng, p=self.augment_p, drop_p=0.0, translate=0.1, shear=5.0, canvas=FRAME)
        ink = render_union(sketch, range(sketch.num_strokes), size=self.canvas, width=self.line_width, canvas=FRAME)
        return {"image": torch.from_numpy(ink > 0).float()[None],
                "df": torch.from_numpy(np.asarray(distance_field(ink > 0, self.df_k), np.float32))[None]}


class SketchDataset(Dataset):
    """Stage 2 / inference: a sketch's strokes drawn one per channel (S×H×W uint8), labels and part count."""

    def __init__(self, sketches: list[Sketch], parts: dict[str, list[str]], canvas: int, line_width: int,
                 augment_p: float = 0.0, seed: int = 0) -> None:
        unknown = sorted({s.category for s in sketches} - set(parts))
        if unknown:
            raise DataError(f"sketches of {', '.join(unknown)} but the model knows only {', '.join(parts)}; "
                            "train on those categories or pass sketches of known ones")
        self.sketches = [normalize(s, canvas=FRAME) for s in sketches]
        self.parts, self.canvas, self.line_width = parts, canvas, line_width
        self.augment_p, self.seed = augment_p, seed

    def __len__(self) -> int:
        return len(self.sketches)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = _keyed(key, self.seed)
        sketch = self.sketches[index]
        if self.augment_p:
            sketch = augment_sketch(sketch, rng, p=self.augment_p, canvas=FRAME)
        strokes = render_strokes(sketch, size=self.canvas, width=self.line_width, canvas=FRAME)
        return {"strokes": torch.from_numpy(np.ascontiguousarray(strokes > 0)),
                "labels": torch.from_numpy(sketch.labels.astype(np.int64)),
                "groups": len(self.parts[sketch.category]), "index": index}


def collate_sketches(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad to the most strokes/parts of the batch: blank images, label −1, and validity masks for both."""
    n, most = len(items), max(len(item["labels"]) for item in items)
    size = items[0]["strokes"].shape[1:]
    strokes = torch.zeros(n, most, *size, dtype=torch.bool)
    labels = torch.full((n, most), -1, dtype=torch.long)
    groups = torch.tensor([item["groups"] for item in items])
    for row, item in enumerate(items):
        count = len(item["labels"])
        strokes[row, :count] = item["strokes"]
        labels[row, :count] = item["labels"]
    group_valid = torch.arange(int(groups.max())) < groups[:, None]
    return {"strokes": strokes, "labels": labels, "stroke_valid": labels >= 0, "group_valid": group_valid,
            "index": torch.tensor([item["index"] for item in items])}
