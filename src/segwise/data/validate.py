"""Check a whole split before training and report every problem at once; per-channel statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from segwise.data.classmap import ClassMap
from segwise.data.folder import Sample, display_path, problems_error, read_sample_image, read_sample_mask
from segwise.errors import DataError
from segwise.progress import track


@dataclass
class DatasetReport:
    """What validate_samples found in a split: sizes, channels, pixel types and class pixel counts."""

    num_samples: int
    channels: int
    dtypes: set[str] = field(default_factory=set)
    sizes: Counter = field(default_factory=Counter)
    class_pixel_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ignore_pixels: int = 0
    images_per_class: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    shapes: MaskShapes | None = None

    def class_shares(self) -> np.ndarray:
        """Each class's share of the labelled (not ignored) pixels."""
        total = self.class_pixel_counts.sum()
        return self.class_pixel_counts / total if total else np.zeros(len(self.class_pixel_counts))

    def rare_classes(self, threshold: float = 0.05) -> list[int]:
        """Classes present in the masks but under `threshold` of the labelled pixels (what the crop sampler and
        class weights target)."""
        shares = self.class_shares()
        return [int(c) for c in np.flatnonzero((shares > 0) & (shares < threshold))]

    def format(self, class_names: Sequence[str] | None = None) -> str:
        """A readable summary with one row per class: pixel count and share of all mask pixels."""
        sizes = ", ".join(f"{h}×{w} ({n})" for (h, w), n in self.sizes.most_common(5))
        if len(self.sizes) > 5:
            sizes += f", ... ({len(self.sizes) - 5} more sizes)"
        lines = [
            f"samples: {self.num_samples}   channels: {self.channels}   pixel types: {', '.join(sorted(self.dtypes))}",
            f"sizes: {sizes}",
        ]
        total = int(self.class_pixel_counts.sum()) + self.ignore_pixels
        names = [
            class_names[i] if class_names is not None and i < len(class_names) else ""
            for i in range(len(self.class_pixel_counts))
        ]
        rows = [(f"{i} {name}".rstrip(), int(n)) for i, (name, n) in enumerate(zip(names, self.class_pixel_counts))]
        rows.append(("ignore", self.ignore_pixels))
        width = max(len("class"), *(len(label) for label, _ in rows))
        lines.append(f"{'class':<{width}}  {'pixels':>14}  {'share':>7}")
        for label, count in rows:
            share = 100.0 * count / total if total else 0.0
            lines.append(f"{label:<{width}}  {count:>14,}  {share:>6.2f}%")
        return "\n".join(lines)


@dataclass
class MaskShapes:
    """How the labels are laid out (`segwise plan`'s fingerprint): object sizes per class (8-connected components),
    ignore pixels touching labelled ones (thin unlabelled borders hint at uncertain boundaries) and each class's
    pixels in the upper half of the images (street scenes put sky above road, aerial tiles have no up)."""

    num_classes: int
    object_areas: dict[int, list[int]] = field(default_factory=dict)
    ignore_border_pixels: int = 0
    upper_half_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def add(self, encoded: np.ndarray, ignored: np.ndarray) -> None:
        """Measure one class-index mask (`ignored` marks its ignore pixels)."""
        if not len(self.upper_half_pixels):
            self.upper_half_pixels = np.zeros(self.num_classes, np.int64)
        for c in np.unique(encoded[~ignored]):
            _, _, stats, _ = cv2.connectedComponentsWithStats((encoded == c).astype(np.uint8), connectivity=8)
            self.object_areas.setdefault(int(c), []).extend(int(a) for a in stats[1:, cv2.CC_STAT_AREA])
        if ignored.any():
            labelled = cv2.dilate((~ignored).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            self.ignore_border_pixels += int((labelled & ignored).sum())
        half = encoded.shape[0] // 2
        top = encoded[:half][~ignored[:half]]
        self.upper_half_pixels += np.bincount(top, minlength=self.num_classes)[: self.num_classes]


def validate_samples(samples: Sequence[Sample], class_map: ClassMap, check_stats: bool = True,
                     reference: tuple[str, int] | None = None, shapes: bool = False) -> DatasetReport:
    """Read every image and mask once; raise one DataError listing every problem, else return a DatasetReport.

    Problems: unreadable files, NaN/inf pixels, mask/plane size ≠ image size, channel counts or pixel types that
    differ across the split (or from `reference`, (split name, channel count), e.g. the training split's for a
    validation split), and mask values outside the class map. check_stats=False skips the class pixel counts;
    shapes=True also measures objects and label layout (`MaskShapes`, slower: connected components per class).
    """
    problems: list[str] = []
    channels: dict[str, int] = {}
    dtypes: dict[str, str] = {}
    sizes: Counter = Counter()
    counts = np.zeros(class_map.num_classes, np.int64)
    images_per_class = np.zeros(class_map.num_classes, np.int64)
    mask_shapes = MaskShapes(class_map.num_classes) if shapes else None
    ignore_pixels = 0
    where = samples[0].image.parent.parent if samples else Path("data")
    for sample in track(samples, f"checking {where.name}", unit="images"):
        try:
            image = read_sample_image(sample)
        except DataError as error:
            problems += str(error).splitlines()
            continue
        channels[display_path(sample.image)] = image.shape[2]
        problems += _non_finite_problems(display_path(sample.image), image)
        dtypes[display_path(sample.image)] = image.dtype.name
        sizes[image.shape[:2]] += 1
        if sample.mask is None:
            continue
        try:
            encoded = read_sample_mask(sample, class_map, image.shape[:2])
        except DataError as error:
            problems.append(str(error))
            continue
        if check_stats:
            ignored = encoded == class_map.ignore_index
            ignore_pixels += int(ignored.sum())
            image_counts = np.bincount(encoded[~ignored], minlength=class_map.num_classes)[: class_map.num_classes]
            counts += image_counts
            images_per_class += image_counts > 0
            if mask_shapes is not None:
                mask_shapes.add(encoded, ignored)
    problems += _minority_problems(channels, "channels", "give every image the same bands and extra planes")
    problems += _minority_problems(dtypes, "pixel type", "convert every image to the same bit depth")
    problems += _reference_problems(channels, reference)
    if problems:
        raise problems_error(f"{where}: data check of {len(samples)} samples failed", problems)
    return DatasetReport(
        num_samples=len(samples),
        channels=next(iter(channels.values()), 0),
        dtypes=set(dtypes.values()),
        sizes=sizes,
        class_pixel_counts=counts,
        ignore_pixels=ignore_pixels,
        images_per_class=images_per_class,
        shapes=mask_shapes,
    )


def compute_mean_std(samples: Sequence[Sample]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std over every pixel of the samples, in raw pixel units (streaming, float64).

    A constant channel gets std 1.0 so that normalising it cannot divide by zero.
    """
    count = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    for sample in track(samples, "computing mean/std", unit="images"):
        image = read_sample_image(sample)
        pixels = image.reshape(-1, image.shape[2]).astype(np.float64)
        n = pixels.shape[0]
        batch_mean = pixels.mean(axis=0)
        batch_m2 = ((pixels - batch_mean) ** 2).sum(axis=0)
        if mean is None or m2 is None:
            count, mean, m2 = n, batch_mean, batch_m2
            continue
        if batch_mean.shape != mean.shape:
            raise DataError(
                f"{display_path(sample.image)} has {batch_mean.size} channels but earlier images have {mean.size}; "
                "give every image the same bands and extra planes."
            )
        delta = batch_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + batch_m2 + delta**2 * (count * n / total)
        count = total
    if mean is None or m2 is None:
        raise DataError("cannot compute mean/std: the split has no samples.")
    std = np.sqrt(m2 / count)
    std[std == 0] = 1.0
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _non_finite_problems(path: str, image: np.ndarray) -> list[str]:
    """NaN or inf in a float image would make the loss NaN at some step, far from the file that caused it."""
    if image.dtype.kind != "f" or np.isfinite(image).all():
        return []
    bad = ~np.isfinite(image)
    row, column, band = (int(i) for i in np.argwhere(bad)[0])
    return [f"{path}: {int(bad.sum()):,} NaN/inf pixel value(s), the first at row {row}, column {column}, band "
            f"{band}; replace them (e.g. with 0 or the band's nodata value) before training"]


def _reference_problems(channels: dict[str, int], reference: tuple[str, int] | None) -> list[str]:
    """Name every image whose channel count differs from the reference split's (the model takes one count)."""
    if reference is None:
        return []
    split, count = reference
    return [f"{path}: {value} channels, but the {split} split has {count}; give every split the same bands and "
            "extra planes" for path, value in channels.items() if value != count]


def _minority_problems(values: dict[str, object], what: str, fix: str) -> list[str]:
    """Name every file whose value differs from the most common one."""
    if len(set(values.values())) <= 1:
        return []
    majority = Counter(values.values()).most_common(1)[0][0]
    return [
        f"{path}: {what} {value}, but most images have {majority}; {fix}"
        for path, value in values.items()
        if value != majority
    ]
