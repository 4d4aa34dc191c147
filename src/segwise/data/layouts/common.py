"""What the standard layouts share: a split named as ROOT/NAME, finding a layout's root, list files of image/mask
pairs, and one error listing every problem of a split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segwise.data.folder import MaskReader, Sample, problems_error
from segwise.data.io import is_image_file
from segwise.errors import DataError

def split_of(split: Path) -> tuple[Path, str]:
    """ROOT/NAME → (ROOT, NAME): the standard layouts name their splits under a root; the folder need not exist."""
    split = Path(split)
    if not split.name:  # "." or a bare root: name it by its absolute path
        split = split.absolute()
    return split.parent, split.name


def find_root(path: Path, layout: str, markers: Sequence[str], nests: Sequence[str] = ()) -> Path:
    """The folder of a layout: `path` itself or one of `nests` below it (e.g. VOCdevkit/VOC2012) that holds every
    marker; otherwise a DataError naming the expected path that is missing."""
    path = Path(path)
    for candidate in (path, *(path / nest for nest in nests)):
        if all((candidate / marker).exists() for marker in markers):
            return candidate
    missing = next((marker for marker in markers if not (path / marker).exists()), markers[0])
    nested = f" (nor under {path}/{' or '.join(nests)})" if nests else ""
    raise DataError(f"{path} is not a {layout} data set: {path / missing} is missing{nested}; pass the folder that "
                    f"holds {' and '.join(markers)}, or another --format")


def known_split(name: str, known: Sequence[str], layout: str, expected: Path) -> None:
    """Refuse a split the data set does not have, naming the path looked for and the splits there are."""
    if name not in known:
        raise missing_split(name, known, layout, expected)


def missing_split(name: str, known: Sequence[str], layout: str, expected: Path) -> DataError:
    return DataError(f"{expected} is missing: the {layout} data set has no split {name!r} (it has "
                     f"{', '.join(known) or 'none'}); set data.train_split / data.val_split (or the path given) to one "
                     "of them, or data.val_split to null")


def no_extra_channels(layout: str, split: Path, extra_channels: Sequence[str]) -> None:
    if extra_channels:
        raise DataError(f"{split}: the {layout} layout has no extra channel planes; drop data.extra_channels "
                        f"({list(extra_channels)}) or arrange the data as folders (DATA/<split>/images, masks, planes)")


def list_entries(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line: fields split at commas when the line has one, else at
    whitespace."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path} cannot be read as a UTF-8 text list ({error}); check the file") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = [f.strip() for f in line.split(",")] if "," in line else line.split()
        if any(fields):
            entries.append((number, fields))
    return entries


def listed_path(base: Path, text: str) -> Path | None:
    """A path from a list file: relative to `base`, or absolute; a path written for another machine (VOC's
    `/JPEGImages/x.jpg`, SegNet's `/SegNet/CamVid/train/x.png`) is found under `base` by its longest tail that
    exists there. None when nothing exists."""
    path = Path(text)
    if path.is_absolute() and path.exists():
        return path
    parts = path.parts[1:] if path.is_absolute() else path.parts
    for start in range(len(parts)):
        candidate = base.joinpath(*parts[start:])
        if candidate.exists():
            return candidate
    return None


def pair_samples(pairs_file: Path, base: Path, require_masks: bool, mask_reader: MaskReader | None = None
                 ) -> list[Sample]:
    """The samples of a list file of "image mask" lines (paths under `base`); every missing file, bad line and
    repeated name is reported at once. Without require_masks (prediction) a line may name the image only."""
    problems: list[str] = []
    samples: list[Sample] = []
    for number, fields in list_entries(pairs_file):
        where = f"{pairs_file}, line {number}"
        if len(fields) > 2 or (require_masks and len(fields) < 2):
            problems.append(f"{where}: expected 'image mask' (two paths, whitespace or comma separated), got "
                            f"{len(fields)} field(s): {' '.join(fields)[:120]!r}")
            continue
        image = listed_path(base, fields[0])
        mask = listed_path(base, fields[1]) if len(fields) == 2 else None
        if image is None:
            problems.append(f"{where}: image {fields[0]} not found under {base}")
        if mask is None and require_masks:
            problems.append(f"{where}: mask {fields[1]} not found under {base}")
        if image is not None:
            samples.append(Sample(image.stem, image, mask, (), mask_reader if mask is not None else None))
    if not samples and not problems:
        problems.append(f"{pairs_file} lists no samples; write one 'image mask' line per sample")
    raise_problems(pairs_file, problems + repeated_names(samples))
    return samples


def paired_samples(where: Path, pairs: Sequence[tuple[str, Path, Path | None]], require_masks: bool,
                   mask_reader: MaskReader | None = None) -> list[Sample]:
    """Samples from (name, image, expected mask) triples; every missing image and (when masks are required) mask
    is reported at once with the path expected."""
    problems, samples = [], []
    for name, image, mask in pairs:
        if not image.is_file():
            problems.append(f"{name}: image {image} is missing")
        has_mask = mask is not None and mask.is_file()
        if require_masks and not has_mask:
            problems.append(f"{name}: mask {mask} is missing")
        samples.append(Sample(name, image, mask if has_mask else None, (), mask_reader))
    if not pairs:
        problems.append(f"{where} holds no samples")
    raise_problems(where, problems + repeated_names(samples))
    return samples


def repeated_names(samples: Sequence[Sample]) -> list[str]:
    """Two samples of one split may not share a name: predictions and tiles are written by name."""
    first: dict[str, Path] = {}
    problems = []
    for sample in samples:
        if sample.name in first:
            problems.append(f"{first[sample.name]} and {sample.image} share the name {sample.name!r}; list one of "
                            "them only")
        first.setdefault(sample.name, sample.image)
    return problems


def image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.glob("*") if is_image_file(path))


def raise_problems(where: Path, problems: Sequence[str]) -> None:
    if problems:
        raise problems_error(str(where), problems, "Fix: restore the files listed (or remove their entries), or "
                                                   "point the command at the data set's root as it ships.")
