"""Vector sketches with a part label per stroke: one in-memory type and readers for the SPG and CreativeSketch files.

Three source formats are read into the same `Sketch` (strokes in drawing order, absolute x/y with y downwards):

* SPG JSON: one JSON object whose ``train_data`` lists sketches of stroke-3 points ``[dx, dy, pen_state, group]``
  (``pen_state == 1`` ends a stroke);
* the per-point ndjson of SketchGNN (and ``spg_sketch/raw``): one ``{"key_id", "drawing"}`` per line, a stroke is
  ``[[x...], [y...], [label...]]`` (further lists, such as the repeated label list of a few SPG strokes, are ignored);
* CreativeSketch (Creative Birds / Creatures): one HIT per line, ``output.all_strokes`` lists drawing steps of
  strokes of segments ``[x1, y1, x2, y2]``; step 0 is ``initial``, step 1 ``eye``, step j >= 2 is
  ``partsUsed[j - 2]`` and ``none`` means ``details``.

A stroke's label is the majority label of its points (SPG labels are constant within a stroke). Files may be
plain, ``.gz`` or ``.xz``. A bad record is skipped with one line on stderr naming ``file:line``, or rejected with a
`SketchDataError` when ``on_error="raise"``; it never crashes the reader.
"""

from __future__ import annotations

import gzip
import json
import lzma
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from segwise.errors import DataError
from segwise.progress import notice, track

__all__ = [
    "CREATIVE_BIRD_PARTS",
    "CREATIVE_CREATURE_PARTS",
    "Sketch",
    "SketchDataError",
    "normalize",
    "read_part_names",
    "read_sketches",
    "read_spg_folder",
    "sketch_format",
]

CREATIVE_BIRD_PARTS: tuple[str, ...] = ("initial", "eye", "beak", "body", "head", "legs", "mouth", "tail", "wings",
                                        "details")
"""Creative Birds part names (DoodlerGAN ``part_to_id`` order, plus ``details`` for the trailing ``none`` step)."""
CREATIVE_CREATURE_PARTS: tuple[str, ...] = ("initial", "eye", "arms", "beak", "mouth", "body", "ears", "feet", "fin",
                                            "hair", "hands", "head", "horns", "legs", "nose", "paws", "tail", "wings",
                                            "details")
"""Creative Creatures part names (DoodlerGAN ``part_to_id`` order, plus ``details``)."""

SPLITS = ("train", "valid", "test")
_MAX_COORD = 1e7  # beyond this a coordinate is corrupt (and float32 loses whole pixels)
_MAX_LABEL = 2**31 - 1  # larger "labels" are corrupt values, and would not survive the cast to int64
OnError = Literal["skip", "raise"]
_JSON_ERRORS = (ValueError, RecursionError)  # bad JSON, bad UTF-8, integers of over 4300 digits, deep nesting
_NUMBER_ERRORS = (TypeError, ValueError, OverflowError)  # np.asarray of non-numbers or of integers beyond float64
_READ_ERRORS = (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError)  # damaged plain, .gz or .xz text


class SketchDataError(DataError):
    """A sketch file or record cannot be read; the message names the file, the line, the problem and the fix."""


@dataclass
class Sketch:
    """A vector sketch: ordered strokes of absolute (x, y) points (y down) and one part label per stroke."""

    strokes: list[np.ndarray]
    labels: np.ndarray
    category: str
    part_names: list[str]
    key: str = ""

    def __post_init__(self) -> None:
        self.strokes = [np.asarray(stroke, dtype=np.float32).reshape(-1, 2) for stroke in self.strokes]
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.labels) != len(self.strokes):
            raise ValueError(f"sketch {self.key!r}: {len(self.strokes)} strokes but {len(self.labels)} labels")

    @property
    def num_strokes(self) -> int:
        return len(self.strokes)

    def points(self) -> np.ndarray:
        """All points of all strokes as one (N, 2) float32 array, in drawing order."""
        return np.concatenate(self.strokes) if self.strokes else np.zeros((0, 2), np.float32)


class _BadRecord(Exception):
    """Raised inside a record parser; the reader adds file and line and decides to skip or raise."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


# ---------------------------------------------------------------------------------------------------- opening files


def _open_text(path: Path) -> IO[str]:
    """Open a plain, ``.gz`` or ``.xz`` file as UTF-8 text (chosen by suffix)."""
    suffix = path.suffix.lower()
    if suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    if suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _category_from_path(path: Path) -> str:
    """``airplane_raw.ndjson.xz`` -> ``airplane``: file name without compression/format suffixes and ``_raw``."""
    name = path.name
    for suffix in (".xz", ".gz", ".ndjson", ".jsonl", ".json", ".txt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name.removesuffix("_raw")


def sketch_format(path: str | Path, probe_lines: int = 20) -> str:
    """Detect the format of a sketch file: ``spg_json``, ``ndjson`` or ``creative``.

    The first line that parses as a JSON object decides, so a malformed first record of an ndjson file is still
    reported by line; when none of the first ``probe_lines`` parses, the file is taken as one (pretty-printed) object.
    """
    path = Path(path)
    try:
        with _open_text(path) as handle:
            lines = [line for _, line in zip(range(probe_lines), (line for line in handle if line.strip()))]
    except _READ_ERRORS as exc:
        raise SketchDataError(f"{path}: cannot read ({exc}); check that the file is a complete plain, .gz or .xz "
                              "text file") from None
    for line in lines:
        try:
            record = json.loads(line)
        except _JSON_ERRORS:
            continue
        if not isinstance(record, dict):
            continue  # a line of a pretty-printed object, or a bad record reported later with its line
        if "train_data" in record:
            return "spg_json"
        if "output" in record or "all_strokes" in record:
            return "creative"
        if "drawing" in record:
            return "ndjson"
        raise SketchDataError(f"{path}: unknown sketch format (a record has keys {_keys(record)}); expected SPG JSON "
                              "('train_data'), per-point ndjson ('drawing') or CreativeSketch ('output.all_strokes')")
    return "spg_json"


def _json_problem(exc: Exception) -> str:
    """Why a JSON text cannot be read, in words (json's own errors and Python's limits alike)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start})"
    if isinstance(exc, RecursionError):
        return "invalid JSON (nested too deeply to be a sketch)"
    return f"invalid JSON (a value cannot be read: {str(exc).split(';')[0][:100]})"


def _keys(record: Any) -> str:
    return str(sorted(record)[:8]) if isinstance(record, dict) else type(record).__name__


# ---------------------------------------------------------------------------------------------------- public readers


def read_sketches(
    path: str | Path,
    *,
    category: str | None = None,
    part_names: Sequence[str] | None = None,
    on_error: OnError = "skip",
) -> list[Sketch]:
    """Read every sketch of a file in any supported format (detected from its first record).

    ``category`` defaults to the file name (``face_raw.ndjson.xz`` -> ``face``). Without ``part_names`` the names
    are ``part_0 ... part_K`` (CreativeSketch: the bird or creature part list). Bad records are skipped with a
    line on stderr (``on_error="skip"``) or raise `SketchDataError` (``"raise"``).
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    path = Path(path)
    if not path.is_file():
        raise SketchDataError(f"{path}: no such file; pass an existing .ndjson/.json/.txt file (plain, .gz or .xz)")
    fmt = sketch_format(path)
    category = category or _category_from_path(path)
    names = list(part_names) if part_names is not None else None
    if fmt == "spg_json":  # no key in the format: the index in train_data names the sketch
        records = ((where, partial(_parse_spg_points, raw, category, names, str(index)))
                   for index, (where, raw) in enumerate(_spg_json_items(path)))
    else:
        parse = _parse_creative if fmt == "creative" else _parse_ndjson
        records = ((where, partial(parse, raw, category, names)) for where, raw in _ndjson_items(path))
    sketches = _collect(path, records, on_error)
    return _with_default_names(sketches, names, fmt)


def read_part_names(path: str | Path) -> list[str]:
    """Part names of a category, one per line (line k = label k); trailing blank lines are dropped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SketchDataError(f"{path}: cannot read the part names ({exc}); give one UTF-8 line per part "
                              "label") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def read_spg_folder(
    root: str | Path,
    categories: Iterable[str] | str | None = None,
    split: str = "train",
    *,
    on_error: OnError = "skip",
) -> list[Sketch]:
    """Read ``root/raw/<cat>_raw.ndjson.xz`` of the SPG set, keeping ``split`` of ``splits.json`` in its order.

    ``split`` is ``train``, ``valid``, ``test`` or ``all``; ``categories`` defaults to every category in
    ``splits.json``. Part names come from ``root/part_names/<cat>.txt``.
    """
    root = Path(root)
    splits_file = root / "splits.json"
    if not splits_file.is_file():
        raise SketchDataError(f"{splits_file}: missing; point root at the spg_sketch folder (raw/, part_names/, "
                              "splits.json)")
    try:
        splits = json.loads(splits_file.read_text(encoding="utf-8"))
    except _JSON_ERRORS as exc:
        raise SketchDataError(f"{splits_file}: {_json_problem(exc)}; restore the file of the data set") from None
    if split not in (*SPLITS, "all"):
        raise SketchDataError(f"split {split!r} is unknown; choose one of {', '.join(SPLITS)} or all")
    wanted = list(splits) if categories is None else [categories] if isinstance(categories, str) else list(categories)
    unknown = [name for name in wanted if name not in splits]
    if unknown:
        raise SketchDataError(f"{splits_file}: no category {', '.join(unknown)}; available: {', '.join(splits)}")
    sketches: list[Sketch] = []
    for name in track(wanted, f"reading {split}", unit="categories"):
        raw = _find_raw(root, name)
        by_key = {s.key: s for s in read_sketches(raw, category=name, on_error=on_error,
                                                  part_names=read_part_names(root / "part_names" / f"{name}.txt"))}
        listed = splits[name] if isinstance(splits[name], dict) else {}
        if any(not isinstance(listed.get(part), list) for part in (SPLITS if split == "all" else (split,))):
            raise SketchDataError(f"{splits_file}: category {name} lacks a key_id list for split {split}; "
                                  f"expected {{'{name}': {{'train': [...], 'valid': [...], 'test': [...]}}}}")
        keys = [k for part in SPLITS for k in listed[part]] if split == "all" else listed[split]
        missing = [key for key in keys if key not in by_key]
        if missing and on_error == "raise":
            raise SketchDataError(f"{raw}: {len(missing)} key_ids of splits.json[{name}][{split}] are not in the file "
                                  f"(first: {missing[0]}); use the raw file that belongs to this splits.json")
        if missing:
            notice(f"{raw}: {len(missing)} sketches of split {split} are missing or were skipped")
        sketches += [by_key[key] for key in keys if key in by_key]
    return sketches


def _find_raw(root: Path, name: str) -> Path:
    for candidate in (f"{name}_raw.ndjson.xz", f"{name}_raw.ndjson.gz", f"{name}_raw.ndjson", f"{name}.ndjson"):
        if (root / "raw" / candidate).is_file():
            return root / "raw" / candidate
    raise SketchDataError(f"{root / 'raw'}: no {name}_raw.ndjson[.xz|.gz]; check the category name and the folder")


# ---------------------------------------------------------------------------------------------------- record sources


def _ndjson_items(path: Path) -> Iterator[tuple[str, Any]]:
    """(``file:line``, parsed JSON or a `_BadRecord`) for each non-blank line."""
    number = 0
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record: Any = json.loads(line)
                except _JSON_ERRORS as exc:
                    record = _BadRecord(_json_problem(exc), "fix or delete this line")
                yield f"{path}:{number}", record
    except _READ_ERRORS as exc:
        raise SketchDataError(f"{path}:{number + 1}: cannot read this line ({exc}); the file is truncated or "
                              "corrupt, decompress it again or replace it") from None


def _spg_json_items(path: Path) -> Iterator[tuple[str, Any]]:
    """(``file: train_data[i]``, sketch) for each sketch of a single SPG JSON object."""
    try:
        with _open_text(path) as handle:
            data = json.load(handle)
    except _READ_ERRORS + _JSON_ERRORS as exc:
        problem = _json_problem(exc) if isinstance(exc, _JSON_ERRORS) else f"cannot read ({exc})"
        raise SketchDataError(f"{path}: {problem}; an SPG JSON file is one complete object with a 'train_data' "
                              "list") from None
    if not isinstance(data, dict) or not isinstance(data.get("train_data"), list):
        raise SketchDataError(f"{path}: no 'train_data' list (keys {_keys(data)}); expected the SPG JSON layout "
                              "{'train_data': [[[dx, dy, pen, group], ...], ...]}")
    for index, raw in enumerate(data["train_data"]):
        yield f"{path}: train_data[{index}]", raw


def _collect(path: Path, records: Iterable[tuple[str, Any]], on_error: OnError) -> list[Sketch]:
    """Run each record parser; skip (with one line on stderr naming file:line and why) or raise on bad records."""
    sketches: list[Sketch] = []
    skipped = 0
    for where, parse in records:
        try:
            sketches.append(parse())
        except _BadRecord as bad:
            if on_error == "raise":
                raise SketchDataError(f"{where}: {bad.problem}; {bad.fix}") from None
            notice(f"{where}: record skipped: {bad.problem}; {bad.fix}")
            skipped += 1
    if not sketches:
        raise SketchDataError(f"{path}: no readable sketch ({skipped} bad records); check the file format")
    return sketches


def _with_default_names(sketches: list[Sketch], names: list[str] | None, fmt: str) -> list[Sketch]:
    """Give every sketch of a file the same part names when the caller gave none."""
    if names is not None:
        return sketches
    if fmt == "creative":  # each record chose the bird or the creature list; one creature record decides for all
        if all(s.part_names == list(CREATIVE_BIRD_PARTS) for s in sketches):
            return sketches
        creature = list(CREATIVE_CREATURE_PARTS)
        return [replace(s, labels=np.array([creature.index(s.part_names[k]) for k in s.labels], np.int64),
                        part_names=creature) for s in sketches]
    count = max(int(s.labels.max(initial=-1)) for s in sketches) + 1
    default = [f"part_{k}" for k in range(count)]
    return [replace(s, part_names=default) for s in sketches]


# ---------------------------------------------------------------------------------------------------- record parsers


def _raise_if_bad(raw: Any) -> None:
    if isinstance(raw, _BadRecord):
        raise raw


def _check_labels(labels: np.ndarray, names: list[str] | None) -> None:
    if labels.size and labels.min() < 0:
        raise _BadRecord(f"negative part label {int(labels.min())}", "labels are 0-based part indices")
    if names is not None and labels.size and labels.max() >= len(names):
        raise _BadRecord(f"part label {int(labels.max())} but only {len(names)} part names",
                         "pass the part-name list of this category (one name per label)")


def _majority(labels: np.ndarray) -> int:
    """Most frequent label of a stroke's points (the first one on ties)."""
    values, counts = np.unique(labels, return_counts=True)
    return int(values[np.argmax(counts)])


def _parse_ndjson(raw: Any, category: str, names: list[str] | None) -> Sketch:
    """``{"key_id", "drawing": [[xs, ys, labels], ...]}`` -> Sketch."""
    _raise_if_bad(raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("drawing"), list):
        raise _BadRecord(f"no 'drawing' list (keys {_keys(raw)})", "each line needs 'drawing': [[xs, ys, labels], ...]")
    strokes, labels = [], []
    for index, stroke in enumerate(raw["drawing"]):
        if not isinstance(stroke, list) or len(stroke) < 3:
            raise _BadRecord(f"stroke {index} is not [xs, ys, labels]", "give three equal-length lists per stroke")
        try:
            # some SPG strokes repeat the label list as a 4th list; SketchGNN reads stroke[2] as well
            xs, ys, ls = (np.asarray(part, dtype=np.float64) for part in stroke[:3])
        except _NUMBER_ERRORS:
            raise _BadRecord(f"stroke {index} has non-numeric values",
                             "coordinates and labels must be numbers") from None
        if not (xs.ndim == ys.ndim == ls.ndim == 1 and len(xs) == len(ys) == len(ls) > 0):
            raise _BadRecord(f"stroke {index} has lists of shapes {xs.shape}, {ys.shape}, {ls.shape}",
                             "xs, ys and labels must be non-empty and equally long")
        if not np.isfinite(np.concatenate([xs, ys, ls])).all():
            raise _BadRecord(f"stroke {index} has a non-finite value", "coordinates and labels must be finite numbers")
        if not np.array_equal(ls, np.round(ls)) or ls.min() < 0 or ls.max() > _MAX_LABEL:
            raise _BadRecord(f"stroke {index} has a label that is not a part index ({ls.min():g}..{ls.max():g})",
                             "labels are 0-based part indices")
        strokes.append(np.stack([xs, ys], axis=1))
        labels.append(_majority(ls.astype(np.int64)))
    return _finish(strokes, labels, category, names, str(raw.get("key_id", raw.get("i", ""))))


def _parse_spg_points(raw: Any, category: str, names: list[str] | None, key: str) -> Sketch:
    """A list of stroke-3 points ``[dx, dy, pen_state, group]`` -> Sketch (offsets summed to absolute)."""
    try:
        points = np.asarray(raw, dtype=np.float64)
    except _NUMBER_ERRORS:
        raise _BadRecord("points are not a list of [dx, dy, pen, group]", "each point needs four numbers") from None
    if points.ndim != 2 or points.shape[1] != 4 or len(points) == 0:
        raise _BadRecord(f"points have shape {points.shape}", "each sketch is a non-empty list of [dx, dy, pen, group]")
    if not np.isfinite(points).all():
        raise _BadRecord("a point has a non-finite value", "offsets, pen state and group must be finite numbers")
    if points[:, 3].min() < 0 or points[:, 3].max() > _MAX_LABEL:
        raise _BadRecord(f"group id {points[:, 3].min():g}..{points[:, 3].max():g} is not a part index",
                         "group ids are 0-based part indices")
    xy = np.cumsum(points[:, :2], axis=0)
    ends = np.flatnonzero(points[:, 2] == 1) + 1
    if len(ends) == 0 or ends[-1] != len(points):
        ends = np.append(ends, len(points))  # a missing final pen lift still ends the last stroke
    starts = np.concatenate([[0], ends[:-1]])
    groups = points[:, 3].astype(np.int64)
    strokes = [xy[a:b] for a, b in zip(starts, ends)]
    labels = [_majority(groups[a:b]) for a, b in zip(starts, ends)]
    return _finish(strokes, labels, category, names, key)


def _parse_creative(raw: Any, category: str, names: list[str] | None) -> Sketch:
    """A CreativeSketch HIT -> Sketch; a step's part is initial, eye, then ``partsUsed[j - 2]`` (none = details)."""
    _raise_if_bad(raw)
    output = raw.get("output") if isinstance(raw, dict) else None
    if isinstance(output, str):
        try:
            output = json.loads(output)
        except _JSON_ERRORS:
            raise _BadRecord("'output' is a string that is not JSON", "store 'output' as an object") from None
    if not isinstance(output, dict) or not isinstance(output.get("all_strokes"), list):
        raise _BadRecord(f"no 'output.all_strokes' list (keys {_keys(raw)})",
                         "each line needs output.all_strokes and output.partsUsed")
    steps, used = output["all_strokes"], output.get("partsUsed", [])
    if not isinstance(used, list) or len(used) < len(steps) - 2:
        raise _BadRecord(f"{len(steps)} drawing steps but {len(used) if isinstance(used, list) else 0} partsUsed",
                         "partsUsed needs one part name per step after the first two")
    step_parts = ["initial", "eye", *("details" if part == "none" else str(part) for part in used)]
    strokes, parts = [], []
    for j, step in enumerate(steps):
        for stroke in step if isinstance(step, list) else []:
            if not stroke:
                continue  # the original data has empty strokes; DoodlerGAN skips them too
            try:
                segments = np.asarray(stroke, dtype=np.float64)
            except _NUMBER_ERRORS:
                raise _BadRecord(f"step {j} has a malformed stroke", "a stroke is a list of [x1, y1, x2, y2]") from None
            if segments.ndim != 2 or segments.shape[1] != 4 or not np.isfinite(segments).all():
                raise _BadRecord(f"step {j} has a stroke of shape {segments.shape}",
                                 "a stroke is a list of finite [x1, y1, x2, y2] segments")
            strokes.append(np.concatenate([segments[:1, :2], segments[:, 2:4]]))
            parts.append(step_parts[j])
    if names is None:
        names = list(CREATIVE_BIRD_PARTS if set(parts) <= set(CREATIVE_BIRD_PARTS) else CREATIVE_CREATURE_PARTS)
    unknown = sorted(set(parts) - set(names))
    if unknown:
        raise _BadRecord(f"unknown part name(s) {', '.join(unknown)}", f"pass part_names that include them ({names})")
    key = str(raw.get("assignment_id", ""))
    return _finish(strokes, [names.index(part) for part in parts], category, names, key)


def _finish(strokes: list[np.ndarray], labels: list[int], category: str, names: list[str] | None, key: str) -> Sketch:
    if not strokes:
        raise _BadRecord("the sketch has no strokes", "drop this record")
    largest = max(float(np.abs(stroke).max()) for stroke in strokes)
    if not largest <= _MAX_COORD:  # also catches NaN
        raise _BadRecord(f"a coordinate is {largest:g}", f"coordinates must be finite and within ±{_MAX_COORD:g}")
    label_array = np.asarray(labels, dtype=np.int64)
    _check_labels(label_array, names)
    return Sketch(strokes, label_array, category, list(names) if names is not None else [], key)


# ---------------------------------------------------------------------------------------------------- geometry


def normalize(sketch: Sketch, canvas: int = 256, box: int = 156) -> Sketch:
    """Scale so the larger bounding-box side is ``box`` and centre the sketch in a ``canvas`` square.

    ContextSeg's data preparation draws on a ``box`` square pasted at offset (canvas - box) / 2; centring the
    shorter side too keeps the sketch in the middle. A single point (zero extent) is only moved to the centre.
    """
    points = sketch.points()
    low, high = points.min(axis=0), points.max(axis=0)
    extent = float((high - low).max())
    scale = box / extent if extent > 0 else 1.0
    offset = (canvas - (high - low) * scale) / 2.0 - low * scale
    strokes = [(stroke * scale + offset).astype(np.float32) for stroke in sketch.strokes]
    return replace(sketch, strokes=strokes, labels=sketch.labels.copy())


def category_parts(sketches: Sequence[Sketch]) -> dict[str, list[str]]:
    """Category → part names, checking that every sketch of a category uses the same list."""
    names: dict[str, list[str]] = {}
    for sketch in sketches:
        known = names.setdefault(sketch.category, list(sketch.part_names))
        if known != list(sketch.part_names):
            raise SketchDataError(f"sketch {sketch.key!r} of category {sketch.category!r} has part names "
                                  f"{sketch.part_names}, others have {known}; read each category with one list")
    return names
