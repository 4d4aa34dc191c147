"""Sketch data sets laid out as they ship, each read as one data set.

* A folder of per-category sketch files, as SketchX-PRIS ships SPG: ``Perceptual Grouping/<category>.ndjson``
  (each one JSON object with ``train_data``; any format `read_sketches` reads works), part names from
  ``Group ID/<category>.txt`` when present (beside the files or one level up). It has no split of its own:
  `segwise.data.sketch.splits` makes a seeded one.
* CreativeSketch's ``raw_data/`` as DoodlerGAN reads it: Creative Birds (``doodle_short_birds_{1..10}.txt`` and the
  pilot file) and Creative Creatures (``doodle_generic_{1..11}.txt``), concatenated in that order. Drawings of the
  workers listed in ``reject_*_workids_all.txt`` are dropped; the last 500 records are the test split, the rest train.

(The SketchGNN copy of SPG, ``raw/`` + ``splits.json``, is `formats.read_spg_folder`.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from segwise.data.sketch.formats import (
    CREATIVE_BIRD_PARTS,
    CREATIVE_CREATURE_PARTS,
    OnError,
    Sketch,
    SketchDataError,
    _category_from_path,
    _collect,
    _ndjson_items,
    _parse_creative,
    read_part_names,
    read_sketches,
)
from segwise.progress import notice, track

__all__ = ["CREATIVE_SETS", "CREATIVE_SPLITS", "CREATIVE_TEST_COUNT", "creative_folder", "read_creative_folder",
           "read_sketch_folder", "sketch_files"]

_SKETCH_SUFFIXES = tuple(f"{kind}{packed}" for kind in (".ndjson", ".jsonl", ".json") for packed in ("", ".gz", ".xz"))
_PART_NAME_DIRS = ("Group ID", "part_names")
CREATIVE_TEST_COUNT = 500
"""The last this many records of a CreativeSketch set are its test split (DoodlerGAN's data_process.py)."""
CREATIVE_SPLITS = ("train", "test")


@dataclass(frozen=True)
class CreativeSet:
    """One CreativeSketch data set: its raw files in reading order, its rejected-worker list and its part names."""

    files: tuple[str, ...]
    rejects: str
    parts: tuple[str, ...]


CREATIVE_SETS: dict[str, CreativeSet] = {
    "creative_birds": CreativeSet(
        tuple(f"doodle_short_birds_{i}.txt" for i in range(1, 11))
        + ("doodle_real_individual_pilot7_birds_short_initial_strokes.txt",),
        "reject_bird_short_workids_all.txt", CREATIVE_BIRD_PARTS),
    "creative_creatures": CreativeSet(tuple(f"doodle_generic_{i}.txt" for i in range(1, 12)),
                                      "reject_generic_workids_all.txt", CREATIVE_CREATURE_PARTS),
}
"""Category name → the files of that set as DoodlerGAN reads them."""


# ---------------------------------------------------------------------------------------------------- SPG folder


def sketch_files(root: Path) -> dict[str, Path]:
    """Category → sketch file of a folder of per-category files (``root`` or its ``Perceptual Grouping/``)."""
    folder = root / "Perceptual Grouping" if (root / "Perceptual Grouping").is_dir() else root
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file() and path.name.lower().endswith(_SKETCH_SUFFIXES):
            category = _category_from_path(path)
            if category in files:
                raise SketchDataError(f"{files[category]} and {path.name} both hold category {category!r}; keep one "
                                      "file per category in the folder")
            files[category] = path
    return files


def _part_names_file(path: Path) -> Path | None:
    """``Group ID/<category>.txt`` (or ``part_names/``) beside the sketch file or one folder up, if there is one."""
    category = _category_from_path(path)
    for folder in (path.parent, path.parent.parent):
        for name in _PART_NAME_DIRS:
            if (folder / name / f"{category}.txt").is_file():
                return folder / name / f"{category}.txt"
    return None


def read_sketch_folder(root: str | Path, categories: Iterable[str] | None = None, *,
                       on_error: OnError = "skip") -> list[Sketch]:
    """Every sketch of a folder of per-category files (``categories``: only those), category by category in name
    order, each in file order. Without a part-name file a category's parts are ``part_0 ...``."""
    root = Path(root)
    files = sketch_files(root)
    if not files:
        raise SketchDataError(f"{root}: no sketch files (<category>.ndjson / .json, plain, .gz or .xz); pass the "
                              "SPG 'Perceptual Grouping' folder or a folder of such files")
    wanted = sorted(files) if categories is None else list(categories)
    unknown = [name for name in wanted if name not in files]
    if unknown:
        raise SketchDataError(f"{root}: no file of category {', '.join(unknown)}; available: {', '.join(files)}")
    sketches: list[Sketch] = []
    for name in track(wanted, "reading", unit="categories"):
        names_file = _part_names_file(files[name])
        names = read_part_names(names_file) if names_file else None
        sketches += read_sketches(files[name], category=name, part_names=names, on_error=on_error)
    return sketches


# ---------------------------------------------------------------------------------------------------- CreativeSketch


def creative_folder(root: Path) -> Path | None:
    """The folder of CreativeSketch raw files (``root`` or its ``raw_data/``), or None when it holds none."""
    for folder in (root / "raw_data", root):
        if any((folder / spec.files[0]).is_file() for spec in CREATIVE_SETS.values()):
            return folder
    return None


def _rejected_workers(folder: Path, spec: CreativeSet) -> set[str]:
    path = folder / spec.rejects
    if not path.is_file():
        raise SketchDataError(f"{path}: missing; CreativeSketch's list of rejected workers, whose drawings are left "
                              "out, ships beside the doodle files (restore it from the data set's raw_data)")
    return {line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()}


def _record_count(path: Path) -> int:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return sum(1 for line in handle if line.strip())


def _read_creative_set(folder: Path, category: str, spec: CreativeSet, on_error: OnError) -> dict[str, list[Sketch]]:
    """Train and test sketches of one set, rejected workers' drawings dropped."""
    missing = [name for name in spec.files if not (folder / name).is_file()]
    if missing:
        raise SketchDataError(f"{folder}: missing {', '.join(missing)} of {category}; its test split is the last "
                              f"{CREATIVE_TEST_COUNT} records of all {len(spec.files)} files, so every one is needed")
    rejected = _rejected_workers(folder, spec)
    paths = [folder / name for name in spec.files]
    total = sum(_record_count(path) for path in paths)
    if total <= CREATIVE_TEST_COUNT:
        raise SketchDataError(f"{folder}: {category} has {total} records, but its last {CREATIVE_TEST_COUNT} are the "
                              "test split and nothing would be left to train on; use the complete raw files")
    first_test = total - CREATIVE_TEST_COUNT
    parse = partial(_parse_creative, category=category, names=list(spec.parts))
    records: dict[str, list] = {split: [] for split in CREATIVE_SPLITS}
    dropped = position = 0
    for path in paths:
        for where, raw in _ndjson_items(path):
            split = "test" if position >= first_test else "train"
            position += 1
            if isinstance(raw, dict) and str(raw.get("worker_id")) in rejected:
                dropped += 1
                continue
            records[split].append((where, partial(parse, raw)))
    if dropped:
        notice(f"{folder}: {dropped} drawings of {category} by workers in {spec.rejects} left out")
    return {split: _collect(folder / f"{category} [{split}]", items, on_error) for split, items in records.items()}


def read_creative_folder(root: str | Path, categories: Iterable[str] | None = None, *,
                         on_error: OnError = "skip") -> dict[str, list[Sketch]]:
    """Train and test sketches of the CreativeSketch sets in ``root`` (``categories``: creative_birds and/or
    creative_creatures; default every set whose files are there)."""
    root = Path(root)
    folder = creative_folder(root)
    if folder is None:
        firsts = ", ".join(spec.files[0] for spec in CREATIVE_SETS.values())
        raise SketchDataError(f"{root}: no CreativeSketch raw files ({firsts}); pass the data set's raw_data folder")
    present = [name for name, spec in CREATIVE_SETS.items() if (folder / spec.files[0]).is_file()]
    wanted = present if categories is None else list(categories)
    unknown = [name for name in wanted if name not in present]
    if unknown:
        raise SketchDataError(f"{folder}: no CreativeSketch set {', '.join(unknown)}; available: {', '.join(present)}")
    out: dict[str, list[Sketch]] = {split: [] for split in CREATIVE_SPLITS}
    for name in wanted:
        for split, sketches in _read_creative_set(folder, name, CREATIVE_SETS[name], on_error).items():
            out[split] += sketches
    return out
