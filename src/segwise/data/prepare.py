"""Data-set preparation before training (`segwise data remap|filter|planes`): the smp trainer's `dataset_utils`
scripts, made safe.

Every tool finds and checks every split of SRC and reads every mask it needs before it writes the first file. OUT
mirrors SRC (the same split folders, sub-folder names and file names; SRC may be one split folder or a data-set root
holding them) and may not lie inside it. Images and planes are hard-linked, or copied across file systems (or with
`copy=True`); every file lands atomically.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from segwise.data.classmap import Colour, parse_colour
from segwise.data.folder import (IMAGE_DIR_NAMES, MASK_DIR_NAMES, Sample, display_path, find_samples, index_by_stem,
                                 problems_error)
from segwise.data.io import is_image_file, pack_rgb, read_mask, write_png
from segwise.data.readers import holds_images
from segwise.errors import ConfigError, DataError
from segwise.io_utils import atomic_write, temp_path, write_error
from segwise.progress import track

DATASET_FILE = "dataset.yaml"
"""Class options beside the splits (read by training); carried to OUT by the tools that keep the class values."""
UNMAPPED_CHOICES = ("error", "ignore", "keep")
MAX_VALUE = 2**16 - 1  # masks are written as 8- or 16-bit PNGs


# ---- the shared part: splits of SRC mirrored into OUT --------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """One split folder of SRC with its samples, and the folder that mirrors it in OUT."""

    src: Path
    out: Path
    samples: tuple[Sample, ...]

    @property
    def name(self) -> str:
        return self.src.name

    def mirror(self, path: Path) -> Path:
        """Where a file of this split goes in OUT: the same sub-folder and file name."""
        return self.out / path.relative_to(self.src)


def find_splits(src: str | Path, out: str | Path, extra_channels: Sequence[str] = (), require_masks: bool = True,
                tool: str = "prepared") -> list[Split]:
    """The split folders of SRC (SRC itself when it holds images/, else its sub-folders that do), each checked with
    `find_samples` (every problem of every split in one error) and paired with its mirror in OUT."""
    src, out = Path(src), Path(out)
    check_out_outside(src, out, tool)
    if not src.is_dir():
        raise DataError(f"{src}: folder not found; pass a split folder (images/, masks/) or a data-set root holding "
                        "split folders (train/, val/, ...)")
    folders = [src] if holds_images(src) else sorted(p for p in src.iterdir() if p.is_dir() and holds_images(p))
    if not folders:
        raise DataError(f"{src} holds no split folder with {IMAGE_DIR_NAMES[0]}/ (expected {src / IMAGE_DIR_NAMES[0]} "
                        f"or {src / 'train' / IMAGE_DIR_NAMES[0]}, ...)")
    splits, errors = [], []
    for folder in folders:
        try:
            samples = find_samples(folder, extra_channels, require_masks)
        except DataError as error:
            errors.append(str(error))
            continue
        splits.append(Split(folder, out if folder == src else out / folder.name, tuple(samples)))
    if errors:
        raise DataError("\n".join(errors))
    return splits


def check_out_outside(src: Path, out: Path, tool: str) -> None:
    """OUT may be neither SRC nor inside it: the mirror would write into the data it reads (and be read back as a
    split the next time)."""
    source, target = Path(src).resolve(), Path(out).resolve()
    if target == source or source in target.parents:
        raise ConfigError(f"output folder {out} lies inside the source {src}; choose a folder outside it, e.g. "
                          f"{source.parent / f'{source.name}_{tool}'}")


def check_fresh(targets: Iterable[Path]) -> None:
    """Refuse output folders holding image files this run would not write: an earlier run's output would mix with
    this one (files written again are replaced)."""
    planned = set(targets)
    folders = sorted({path.parent for path in planned})
    strays = [path for folder in folders if folder.is_dir() for path in sorted(folder.iterdir())
              if is_image_file(path) and path not in planned]
    if strays:
        raise problems_error("the output folder holds files this run would not write", [str(p) for p in strays],
                             "Fix: write into an empty folder, or remove these files (an earlier run's output would "
                             "mix with this one's).")


@dataclass
class Transfers:
    """Puts source files into OUT as hard links (copies across file systems, or always with copy=True), atomically,
    counting both kinds for the summary."""

    copy: bool = False
    linked: int = 0
    copied: int = 0

    def put(self, source: Path, target: Path) -> None:
        if not self.copy and _link(source, target):
            self.linked += 1
            return
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
        self.copied += 1

    def describe(self) -> str:
        return f"{self.linked} file(s) linked, {self.copied} copied"


def _link(source: Path, target: Path) -> bool:
    """Hard-link source as target through a temporary name, so an existing target is replaced atomically; False when
    the file system refuses (another device, no link support, permissions): the caller copies instead."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(target, exc) from None
    tmp = temp_path(target)
    try:
        os.link(source, tmp)
    except OSError:
        return False
    try:
        os.replace(tmp, target)
    except OSError as exc:
        raise write_error(target, exc) from None
    finally:
        tmp.unlink(missing_ok=True)  # left when target already was this very file (rename then does nothing)
    return True


def carry_dataset_file(src: Path, out: Path, transfers: Transfers) -> None:
    """Put a data-set root's dataset.yaml (class names, palette) beside the mirrored splits, when it has one."""
    source = _dataset_file(Path(src))
    if source is not None:
        transfers.put(source, Path(out) / DATASET_FILE)


def _dataset_file(src: Path) -> Path | None:
    """The dataset.yaml of a data-set root (a split folder has none of its own)."""
    path = src / DATASET_FILE
    return path if path.is_file() and not holds_images(src) else None


def _mask_values(path: Path) -> np.ndarray:
    """A mask's stored values (palette PNGs: their indices); colour masks are refused with the way out."""
    mask = read_mask(path)
    if mask.ndim == 3:
        raise DataError(f"{path}: RGB colour mask; this tool counts stored values: convert the colours to values "
                        "first with `segwise data remap --palette ...`")
    return mask


def _unknown_values_error(flag: str, unknown: Iterable[int], seen: Iterable[object]) -> ConfigError:
    """A value given on the command line that no mask holds: most likely a typo."""
    shown = ", ".join(str(v) for v in sorted(unknown))
    return ConfigError(f"{flag}: no mask holds the value {shown} (a typo?); the masks hold {_listing(seen)}. Fix the "
                       "value or leave it out.")


def _listing(values: Iterable[object], limit: int = 30) -> str:
    items = [str(v) for v in values]
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _plain_folder_name(name: str, flag: str) -> str:
    """A folder name beside images/ (no path separators, not `.`/`..`)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"{flag} {name!r}: give a folder name beside {IMAGE_DIR_NAMES[0]}/, e.g. nir")
    return name


# ---- remap: rewrite mask values -----------------------------------------------------------------------------------
def parse_value_map(words: str | Sequence[str]) -> dict[int, int]:
    """`64:1,128:2,255:0` (or its words) → {64: 1, 128: 2, 255: 0}: source value → new value, both 0..65535."""
    items = [w for word in ([words] if isinstance(words, str) else words) for w in word.replace(",", " ").split()]
    mapping: dict[int, int] = {}
    for item in items:
        old, sep, new = item.partition(":")
        if not (sep and old.strip().isdigit() and new.strip().isdigit()):
            raise ConfigError(f"--map {item!r}: write each entry as OLD:NEW with whole numbers, e.g. --map "
                              "64:1,128:2,255:0")
        old_value, new_value = int(old), int(new)
        if max(old_value, new_value) > MAX_VALUE:
            raise ConfigError(f"--map {item!r}: mask values lie in 0..{MAX_VALUE} (8- or 16-bit masks)")
        if old_value in mapping:
            raise ConfigError(f"--map maps {old_value} twice ({old_value}:{mapping[old_value]} and {item}); keep one")
        mapping[old_value] = new_value
    if not items:
        raise ConfigError("--map is empty; give OLD:NEW pairs, e.g. --map 64:1,128:2,255:0")
    return mapping


@dataclass(frozen=True)
class Remapping:
    """How `remap` rewrites mask values. palette: colour i of RGB (or displayed palette) masks reads as value i
    before value_map applies. Values value_map leaves out are kept (as the smp trainer's script does: 0 stays 0
    without `0:0`), become ignore_index, or are an error listing them."""

    value_map: Mapping[int, int] = field(default_factory=dict)
    unmapped: str = "keep"
    ignore_index: int = 255
    palette: tuple[Colour, ...] | None = None

    def __post_init__(self) -> None:
        if self.unmapped not in UNMAPPED_CHOICES:
            raise ConfigError(f"--unmapped {self.unmapped!r}: choose one of {', '.join(UNMAPPED_CHOICES)}")
        if not 0 <= self.ignore_index <= MAX_VALUE:
            raise ConfigError(f"--ignore-index {self.ignore_index}: masks are written as PNGs, so it must lie in "
                              f"0..{MAX_VALUE}")
        if not self.value_map and self.palette is None:
            raise ConfigError("nothing to remap: give --map OLD:NEW,... (or --palette for colour masks)")
        if self.palette is not None:
            colours = tuple(parse_colour(c, f"--palette[{i}]") for i, c in enumerate(self.palette))
            repeated = sorted({_hex(c) for c in colours if colours.count(c) > 1})
            if repeated:
                raise ConfigError(f"--palette repeats {', '.join(repeated)}; give each value its own colour")
            object.__setattr__(self, "palette", colours)

    def read(self, path: Path) -> np.ndarray:
        """A mask as int64 codes: its stored values, or with a palette its packed RGB colours."""
        if self.palette is None:
            return _mask_values(path).astype(np.int64)
        raw = read_mask(path, colours=True)
        if raw.ndim == 2:  # an RGB mask of grey colours only reads back as one channel
            raw = np.repeat(raw[..., None], 3, axis=2)
        return pack_rgb(raw)

    def label(self, code: int) -> str:
        """A code as the user knows it: the value, or the colour as #rrggbb."""
        return str(code) if self.palette is None else _hex(((code >> 32) & 0xFFFF, (code >> 16) & 0xFFFF,
                                                            code & 0xFFFF))

    def source_value(self, code: int) -> int | None:
        """The value a code stands for before value_map: itself, or its palette position (None: not in it)."""
        return code if self.palette is None else self._palette_positions.get(code)

    @cached_property
    def _palette_positions(self) -> dict[int, int]:
        return {int(c): i for i, c in enumerate(pack_rgb(np.asarray(self.palette, np.int64)))}

    def value_of(self, code: int) -> int | None:
        """The value a code is written as; None when --unmapped error refuses it (or a colour outside --palette
        would be kept)."""
        value = self.source_value(code)
        if value in self.value_map:
            return self.value_map[value]
        if self.unmapped == "ignore":
            return self.ignore_index
        return value if self.unmapped == "keep" and value is not None and 0 <= value <= MAX_VALUE else None


@dataclass
class RemapReport:
    """What `remap` did: pixels per value before (as labels) and after, masks written, images carried."""

    before: dict[str, int]
    after: dict[int, int]
    masks: int
    transfers: Transfers
    notes: list[str]

    def format(self) -> str:
        lines = [format_histogram(f"mask values before ({self.masks} masks)", self.before),
                 format_histogram("mask values after", {str(k): v for k, v in sorted(self.after.items())}),
                 f"wrote {self.masks} mask(s); images and planes: {self.transfers.describe()}", *self.notes]
        return "\n".join(lines)


def format_histogram(title: str, counts: Mapping[str, int]) -> str:
    """`title:` then one `value  pixels  share` row per value."""
    total = max(sum(counts.values()), 1)
    width = max((len(k) for k in counts), default=1)
    rows = [f"  {key:>{width}}  {count:>14,}  {100 * count / total:5.1f} %" for key, count in counts.items()]
    return "\n".join([f"{title}:", *rows])


def remap_masks(src: str | Path, out: str | Path, remapping: Remapping, extra_channels: Sequence[str] = (),
                copy: bool = False) -> RemapReport:
    """Write SRC's masks with new values into OUT (8-bit PNGs, 16-bit when a value exceeds 255) and link or copy
    the images and extra planes beside them; every mask is read and every value checked before anything is
    written."""
    splits = find_splits(src, out, extra_channels, tool="remapped")
    samples = [(split, sample) for split in splits for sample in split.samples]
    before, first_seen = _value_counts(remapping, [sample.mask for _, sample in samples])
    table = _value_table(remapping, before, first_seen)
    dtype = np.uint8 if max(table.values(), default=0) <= 255 else np.uint16
    carried = [(split.mirror(path), path) for split, sample in samples for path in (sample.image, *sample.extras)]
    check_fresh([_mask_target(split, sample) for split, sample in samples] + [target for target, _ in carried])
    for split, sample in track(samples, "writing masks", unit="masks"):
        codes = remapping.read(sample.mask)
        unique, inverse = np.unique(codes.ravel(), return_inverse=True)
        values = np.array([table[c] for c in unique.tolist()], dtype)[inverse]
        write_png(_mask_target(split, sample), values.reshape(codes.shape))
    transfers = Transfers(copy)
    for target, path in track(carried, "linking images", unit="files"):
        transfers.put(path, target)
    after: Counter[int] = Counter()
    for code, count in before.items():
        after[table[code]] += count
    dataset_file = _dataset_file(Path(src))
    notes = [f"{dataset_file} was not carried: its class options describe the old values; write "
             f"{Path(out) / DATASET_FILE} for the new ones if you need it"] if dataset_file else []
    labels = {remapping.label(code): count for code, count in sorted(before.items())}
    return RemapReport(labels, dict(after), len(samples), transfers, notes)


def _value_counts(remapping: Remapping, masks: Sequence[Path]) -> tuple[Counter[int], dict[int, Path]]:
    """Pixels per code over all masks, and the first mask holding each code (for messages)."""
    counts: Counter[int] = Counter()
    first_seen: dict[int, Path] = {}
    for path in track(masks, "reading masks", unit="masks"):
        codes, pixels = np.unique(remapping.read(path), return_counts=True)
        for code, count in zip(codes.tolist(), pixels.tolist()):
            counts[code] += count
            first_seen.setdefault(code, path)
    return counts, first_seen


def _mask_target(split: Split, sample: Sample) -> Path:
    return split.mirror(sample.mask).with_suffix(".png")


def _value_table(remapping: Remapping, before: Mapping[int, int], first_seen: Mapping[int, Path]) -> dict[int, int]:
    """code → written value for every code the masks hold; refuses --map values no mask holds and, under
    --unmapped error, codes --map leaves out (naming a mask holding each)."""
    seen_values = {remapping.source_value(code) for code in before} - {None}
    unknown = set(remapping.value_map) - seen_values
    if unknown:
        raise _unknown_values_error("--map", unknown, sorted(seen_values))
    table, problems = {}, []
    for code in sorted(before):
        value = remapping.value_of(code)
        if value is None:
            problems.append(_unmapped_problem(remapping, code, first_seen[code]))
        else:
            table[code] = value
    if problems:
        raise problems_error("values the remap does not cover", problems,
                             "Fix: add them to --map (or --palette), or pass --unmapped ignore (they become "
                             f"--ignore-index {remapping.ignore_index}) or --unmapped keep.")
    return table


def _unmapped_problem(remapping: Remapping, code: int, where: Path) -> str:
    label = remapping.label(code)
    if remapping.palette is not None and remapping.source_value(code) is None:
        return f"colour {label} (e.g. in {display_path(where)}) is not in --palette"
    return f"value {label} (e.g. in {display_path(where)}) is not in --map"


def _hex(colour: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in colour)


# ---- filter: keep the samples holding a class ----------------------------------------------------------------------
@dataclass(frozen=True)
class SplitKept:
    """How many samples of one split `filter` kept: those holding the class, and a share of the others."""

    name: str
    total: int
    with_class: int
    empty_kept: int

    def format(self, classes: str) -> str:
        empty = self.total - self.with_class
        return (f"{self.name}: kept {self.with_class + self.empty_kept} of {self.total} ({self.with_class} with "
                f"{classes}, {self.empty_kept} of {empty} without)")


@dataclass
class FilterReport:
    """What `filter` kept, per split, and how the files reached OUT."""

    splits: list[SplitKept]
    classes: tuple[int, ...]
    transfers: Transfers

    def format(self) -> str:
        classes = f"class{'es' if len(self.classes) > 1 else ''} {', '.join(map(str, self.classes))}"
        return "\n".join([*(split.format(classes) for split in self.splits),
                          f"files: {self.transfers.describe()}"])


def filter_samples(src: str | Path, out: str | Path, keep_classes: Sequence[int], min_pixels: int | None = None,
                   min_share: float | None = None, max_empty_share: float = 0.0, seed: int = 0,
                   extra_channels: Sequence[str] = (), copy: bool = False) -> FilterReport:
    """Link or copy into OUT the samples whose masks hold at least min_pixels (default 1) or min_share of their
    pixels of the keep_classes values, with their extra planes; of the other ("empty") samples, a seeded random
    choice joins them so that they make up at most max_empty_share of each split's output."""
    classes = tuple(sorted({int(c) for c in keep_classes}))
    _check_filter_options(classes, min_pixels, min_share, max_empty_share)
    splits = find_splits(src, out, extra_channels, tool="filtered")
    seen: set[int] = set()
    chosen: list[tuple[Split, list[Sample], SplitKept]] = []
    for split in splits:
        holding = []
        for sample in track(split.samples, f"reading {split.name} masks", unit="masks"):
            mask = _mask_values(sample.mask)
            seen.update(np.unique(mask).tolist())
            needed = (min_pixels or 1) if min_share is None else min_share * mask.size
            holding.append(int(np.isin(mask, classes).sum()) >= needed)
        chosen.append(_choose(split, holding, max_empty_share, seed))
    unknown = set(classes) - seen
    if unknown:
        raise _unknown_values_error("--keep-class", unknown, sorted(seen))
    check_fresh(split.mirror(path) for split, kept, _ in chosen for s in kept for path in _files(s))
    transfers = Transfers(copy)
    for split, kept, _ in chosen:
        for sample in track(kept, f"writing {split.name}", unit="samples"):
            for path in _files(sample):
                transfers.put(path, split.mirror(path))
    carry_dataset_file(Path(src), Path(out), transfers)
    return FilterReport([counts for _, _, counts in chosen], classes, transfers)


def _check_filter_options(classes: tuple[int, ...], min_pixels: int | None, min_share: float | None,
                          max_empty_share: float) -> None:
    if not classes:
        raise ConfigError("--keep-class: give the mask value(s) a sample must hold, e.g. --keep-class 2")
    if min_pixels is not None and min_share is not None:
        raise ConfigError("--min-pixels and --min-share both set the threshold; keep one of them")
    if min_pixels is not None and min_pixels < 1:
        raise ConfigError(f"--min-pixels {min_pixels}: a sample holds the class with at least 1 pixel; give 1 or more")
    if min_share is not None and not 0 < min_share <= 1:
        raise ConfigError(f"--min-share {min_share}: give a share of the mask's pixels in (0, 1], e.g. 0.01")
    if not 0 <= max_empty_share <= 1:
        raise ConfigError(f"--max-empty-share {max_empty_share}: give a share in [0, 1], e.g. 0.1 (at most 10 % of "
                          "the kept samples lack the class)")


def _choose(split: Split, holding: list[bool], max_empty_share: float,
            seed: int) -> tuple[Split, list[Sample], SplitKept]:
    """The samples holding the class, plus a seeded random choice of the others so that they make up at most
    max_empty_share of the kept ones (1: all of them)."""
    with_class = [s for s, keep in zip(split.samples, holding) if keep]
    empty = [s for s, keep in zip(split.samples, holding) if not keep]
    if max_empty_share >= 1:
        allowed = len(empty)
    else:
        allowed = min(len(empty), math.floor(max_empty_share * len(with_class) / (1 - max_empty_share) + 1e-9))
    picked = np.random.default_rng(seed).choice(len(empty), allowed, replace=False) if allowed else []
    kept = sorted(with_class + [empty[i] for i in picked], key=lambda s: s.name)
    return split, kept, SplitKept(split.name, len(split.samples), len(with_class), allowed)


def _files(sample: Sample) -> tuple[Path, ...]:
    return tuple(p for p in (sample.image, sample.mask, *sample.extras) if p is not None)


# ---- planes: gather extra-channel planes from another tree ---------------------------------------------------------
@dataclass
class PlanesReport:
    """Per split: the images mirrored and the planes gathered for them."""

    counts: dict[str, tuple[int, int]]
    planes: tuple[str, ...]
    transfers: Transfers

    def format(self) -> str:
        lines = [f"{name}: {images} image(s), {gathered} plane file(s) ({', '.join(self.planes)})"
                 for name, (images, gathered) in self.counts.items()]
        return "\n".join([*lines, f"files: {self.transfers.describe()}"])


def gather_planes(src: str | Path, out: str | Path, source_root: str | Path, planes: Sequence[str],
                  copy: bool = False) -> PlanesReport:
    """Mirror SRC's images (and masks) into OUT and add, for each image, the file of the same stem from each plane
    folder of source_root (`<root>/<split>/<plane>/`, else `<root>/<plane>/`); every missing plane is reported before
    anything is written. A mask folder name among the planes (gt, masks) gathers the masks too, replacing SRC's."""
    planes = tuple(_plain_folder_name(name, "--planes") for name in planes)
    if not planes or set(planes) & set(IMAGE_DIR_NAMES):
        raise ConfigError(f"--planes {' '.join(planes)}: name the plane folders to gather beside the images, e.g. "
                          "--planes nir dsm (images come from the source itself)")
    source_root = Path(source_root)
    if not source_root.is_dir():
        raise DataError(f"--from {source_root}: folder not found; pass the folder tree holding the plane folders")
    splits = find_splits(src, out, (), require_masks=False, tool="planes")
    problems: list[str] = []
    found = {split.name: _plane_files(split, source_root, planes, problems) for split in splits}
    if problems:
        raise problems_error(f"planes missing in {source_root}", problems,
                             "Fix: add the missing plane files (same stem as the image), or remove those images "
                             "from the source.")
    masks_gathered = any(name in MASK_DIR_NAMES for name in planes)
    plan = [(split.mirror(path), path) for split in splits for s in split.samples
            for path in (s.image, *([s.mask] if s.mask is not None and not masks_gathered else []))]
    plan += [(split.out / path.parent.name / path.name, path) for split in splits for path in found[split.name]]
    check_fresh(target for target, _ in plan)
    transfers = Transfers(copy)
    for target, path in track(plan, "writing", unit="files"):
        transfers.put(path, target)
    carry_dataset_file(Path(src), Path(out), transfers)
    counts = {split.name: (len(split.samples), len(found[split.name])) for split in splits}
    return PlanesReport(counts, planes, transfers)


def _plane_files(split: Split, source_root: Path, planes: Sequence[str], problems: list[str]) -> list[Path]:
    """The plane file of every image of the split, for each plane; what is missing goes to problems."""
    files = []
    for plane in planes:
        candidates = [source_root / split.name / plane, source_root / plane]
        folder = next((c for c in candidates if c.is_dir()), None)
        if folder is None:
            problems.append(f"no plane folder {plane}/ for split {split.name} (looked for {candidates[0]} and "
                            f"{candidates[1]})")
            continue
        index = index_by_stem(folder, folder.parent, problems)
        for sample in split.samples:
            if sample.name in index:
                files.append(index[sample.name])
            else:
                problems.append(f"{display_path(sample.image, split.src)} has no plane in {folder}/")
    return files
