"""The `segwise sketch prepare` cache: sketches as compact ``.npz`` files (vectors only, no images), one per split
and category, ``<folder>/<split>/<category>.npz``.

Images are cheap to rasterise on the fly (well under a millisecond per sketch), while a file per sample or stored
256×256×S stacks (as in ContextSeg's ``.pt`` sets) cost gigabytes and hours of disk I/O. A file holds
concatenated points, stroke and sketch offsets, labels, categories, part names and keys; it is written atomically
and read back without unpickling. Keyed by split and category, preparing one category (say one file of a data set
that ships a file per category) replaces that category only and leaves the others in the folder.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segwise.data.sketch.formats import Sketch, SketchDataError, category_parts, normalize
from segwise.io_utils import atomic_write_stream
from segwise.progress import track

__all__ = ["CACHE_VERSION", "load_prepared", "load_prepared_split", "prepare", "prepared_splits",
           "write_prepared"]

CACHE_VERSION = 1
_FIELDS = ("version", "points", "stroke_offsets", "sketch_offsets", "labels", "category_index", "categories",
           "part_names", "keys")


def prepare(
    sketches: Sequence[Sketch], out_file: str | os.PathLike, *, canvas: int | None = 256, box: int = 156
) -> Path:
    """Write ``sketches`` (normalised into a ``canvas`` square with larger side ``box``; ``canvas=None`` keeps the
    coordinates) to one ``.npz`` and return its path."""
    if not sketches:
        raise SketchDataError(f"{out_file}: nothing to prepare (no sketches); check the input files and split")
    out = Path(out_file)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    if canvas is not None:
        sketches = [normalize(sketch, canvas=canvas, box=box)
                    for sketch in track(sketches, f"normalising {out.stem}", unit="sketches")]
    categories = sorted({sketch.category for sketch in sketches})
    part_names = category_parts(sketches)
    strokes = [stroke for sketch in sketches for stroke in sketch.strokes]
    arrays = {
        "version": np.array(CACHE_VERSION),
        "points": np.concatenate(strokes).astype(np.float32),
        "stroke_offsets": np.concatenate([[0], np.cumsum([len(stroke) for stroke in strokes])]).astype(np.int64),
        "sketch_offsets": np.concatenate([[0], np.cumsum([s.num_strokes for s in sketches])]).astype(np.int64),
        "labels": np.concatenate([sketch.labels for sketch in sketches]).astype(np.int64),
        "category_index": np.array([categories.index(sketch.category) for sketch in sketches], dtype=np.int32),
        "categories": np.array(categories, dtype=str),
        "part_names": np.array(json.dumps(part_names)),
        "keys": np.array([sketch.key for sketch in sketches], dtype=str),
    }
    atomic_write_stream(out, lambda handle: np.savez_compressed(handle, **arrays))
    return out


def load_prepared(path: str | os.PathLike) -> list[Sketch]:
    """Read a file written by `prepare` back into sketches (same order, coordinates, labels and names)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in _FIELDS if name not in data.files]
            if missing:
                raise SketchDataError(f"{path}: not a sketch cache (missing {', '.join(missing)}); run "
                                      "`segwise sketch prepare` to build one")
            arrays = {name: data[name] for name in _FIELDS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SketchDataError(f"{path}: cannot read the sketch cache ({exc}); run `segwise sketch prepare` "
                              "again") from None
    if int(arrays["version"]) != CACHE_VERSION:
        raise SketchDataError(f"{path}: cache version {int(arrays['version'])}, this segwise reads {CACHE_VERSION}; "
                              "run `segwise sketch prepare` again")
    part_names = json.loads(str(arrays["part_names"]))
    categories = [str(name) for name in arrays["categories"]]
    strokes = np.split(arrays["points"], arrays["stroke_offsets"][1:-1])
    offsets = arrays["sketch_offsets"]
    sketches = []
    for index, (start, stop) in enumerate(zip(offsets[:-1], offsets[1:])):
        category = categories[arrays["category_index"][index]]
        sketches.append(Sketch(strokes[start:stop], arrays["labels"][start:stop], category,
                               list(part_names[category]), str(arrays["keys"][index])))
    return sketches


def write_prepared(sketches: Sequence[Sketch], folder: str | os.PathLike, split: str) -> list[Path]:
    """Write ``sketches`` (normalised as `prepare` does) as ``folder/<split>/<category>.npz``, one file per category;
    other categories' files in the folder stay."""
    by_category: dict[str, list[Sketch]] = {}
    for sketch in sketches:
        by_category.setdefault(sketch.category, []).append(sketch)
    if not by_category:
        raise SketchDataError(f"{folder}: nothing to prepare for split {split} (no sketches); check the input")
    for name in (split, *by_category):
        if not name or name in (".", "..") or any(sep in name for sep in ("/", "\\")):
            raise SketchDataError(f"{name!r} cannot name a cache file in {folder}; give splits and categories plain "
                                  "names (no path separators)")
    return [prepare(members, Path(folder) / split / f"{category}.npz") for category, members in by_category.items()]


def prepared_splits(folder: str | os.PathLike) -> list[str]:
    """The splits of a prepared folder: its subfolders that hold ``.npz`` files."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(sub.name for sub in folder.iterdir() if sub.is_dir() and any(sub.glob("*.npz")))


def load_prepared_split(folder: str | os.PathLike, split: str, categories: Sequence[str] | None = None
                        ) -> list[Sketch]:
    """The sketches of ``folder/<split>/*.npz`` (``categories``: only those files), category by category in name
    order."""
    files = {path.stem: path for path in sorted((Path(folder) / split).glob("*.npz"))}
    missing = [name for name in categories or () if name not in files]
    if missing:
        raise SketchDataError(f"{Path(folder) / split}: no prepared {', '.join(missing)} (it has "
                              f"{', '.join(files) or 'nothing'}); run `segwise sketch prepare` with those categories")
    return [sketch for name, path in files.items() if categories is None or name in categories
            for sketch in load_prepared(path)]
