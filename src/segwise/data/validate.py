"""Check a whole split before training and report every problem at once; per-channel statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from segwise.data.classmap import ClassMap
from segwise.data.folder import Sample, display_path, problems_error, read_sample_image, read_sample_mask
from segwise.errors import DataError


@dataclass
class DatasetReport:
    """What validate_samples found in a split: sizes, channels, pixel types and class pixel counts."""

    num_samples: int
    channels: int
    dtypes: set[str] = field(default_factory=set)
    sizes: Counter = field(default_factory=Counter)
    class_pixel_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ignore_pixels: int = 0

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


def validate_samples(samples: Sequence[Sample], class_map: ClassMap, check_stats: bool = True) -> DatasetReport:
    """Read every image and mask once; raise one DataError listing every problem, else return a DatasetReport.

    Problems: unreadable files, mask/plane size ≠ image size, channel counts or pixel types that differ across the
    split, and mask values outside the class map. check_stats=False skips the class pixel counts.
    """
    problems: list[str] = []
    channels: dict[str, int] = {}
    dtypes: dict[str, str] = {}
    sizes: Counter = Counter()
    counts = np.zeros(class_map.num_classes, np.int64)
    ignore_pixels = 0
    for sample in samples:
        try:
            image = read_sample_image(sample)
        except DataError as error:
            problems += str(error).splitlines()
            continue
        channels[display_path(sample.image)] = image.shape[2]
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
            counts += np.bincount(encoded[~ignored], minlength=class_map.num_classes)[: class_map.num_classes]
    problems += _minority_problems(channels, "channels", "give every image the same bands and extra planes")
    problems += _minority_problems(dtypes, "pixel type", "convert every image to the same bit depth")
    if problems:
        where = samples[0].image.parent.parent if samples else "data"
        raise problems_error(f"{where}: data check of {len(samples)} samples failed", problems)
    return DatasetReport(
        num_samples=len(samples),
        channels=next(iter(channels.values()), 0),
        dtypes=set(dtypes.values()),
        sizes=sizes,
        class_pixel_counts=counts,
        ignore_pixels=ignore_pixels,
    )


def compute_mean_std(samples: Sequence[Sample]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std over every pixel of the samples, in raw pixel units (streaming, float64).

    A constant channel gets std 1.0 so that normalising it cannot divide by zero.
    """
    count = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    for sample in samples:
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
