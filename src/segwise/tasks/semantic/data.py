"""Image-folder data of the semantic task: splits found and validated, the class mapping, normalisation statistics,
and `segwise data check`'s description of a data set."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from segwise.config import Config, DataConfig, read_yaml, validate_config
from segwise.data.classmap import ClassMap
from segwise.data.folder import Sample, read_raw_mask, read_sample_image
from segwise.data.readers import data_splits, find_split, reader, split_path
from segwise.data.validate import DatasetReport, compute_mean_std, validate_samples
from segwise.engine.splits import validation_sets
from segwise.errors import ConfigError, DataError
from segwise.io_utils import atomic_write_text
from segwise.progress import notice

DATASET_FILE = "dataset.yaml"  # optional class_names/palette/num_classes beside the splits
STATS_FILE = "dataset_stats.yaml"


def with_dataset_defaults(data: DataConfig) -> DataConfig:
    """Fill the class options the config leaves unset from `<root>/dataset.yaml`, then from the layout's reader
    (`data.format`, e.g. iSAID's names and palette)."""
    defaults = dict(reader(data.format).class_options)
    source = f"data.format {data.format}"
    if data.root is not None and (Path(data.root) / DATASET_FILE).is_file():
        source = str(Path(data.root) / DATASET_FILE)
        defaults.update(read_yaml(Path(data.root) / DATASET_FILE))
    updates = {k: v for k, v in defaults.items() if k in DataConfig.model_fields and k not in data.model_fields_set}
    if not updates:
        return data
    return validate_config({**data.model_dump(), **updates}, source, DataConfig)


def mask_values(samples: list[Sample]) -> set[int]:
    """Every value the masks hold (RGB masks are refused: they need a palette)."""
    found: set[int] = set()
    for sample in samples:
        mask = read_raw_mask(sample)
        if mask.ndim == 3:
            raise DataError(f"{sample.mask}: RGB colour mask but no palette; set data.palette (one RGB colour per "
                            "class) so colours can be mapped to classes")
        found.update(int(v) for v in np.unique(mask))
    return found


def infer_num_classes(samples: list[Sample], ignore_index: int, found: set[int] | None = None) -> int:
    """Largest index-mask value (other than ignore) + 1, for data sets that state no class list.

    Masks whose values are mostly gaps (0/128/255 masks would give 129 classes, 127 never seen) are not index masks:
    that is refused, naming the values found and the options that map them.
    """
    found = (mask_values(samples) if found is None else found) - {ignore_index}
    num_classes = max(found, default=1) + 1
    if num_classes > 2 and len(found) * 2 < num_classes:
        shown = ", ".join(str(v) for v in sorted(found)[:12]) + (", ..." if len(found) > 12 else "")
        raise ConfigError(
            f"the masks hold the values {shown} (ignore_index {ignore_index} aside): read as class indices that is "
            f"{num_classes} classes, {num_classes - len(found)} of them never seen. Map the values to classes with "
            f"--class-list {' '.join(str(v) for v in sorted(found))} (data.class_values), or --set data.binary=true "
            f"for 0/255 masks; if they really are class indices, say so with --num-classes {num_classes}")
    return num_classes


def build_class_map(data: DataConfig, samples: list[Sample] | None = None) -> ClassMap:
    """The one mapping from raw mask values to class indices, from the config (or the data when unstated)."""
    num_classes = data.num_classes or (len(data.class_names) if data.class_names else None)
    if num_classes is None and not (data.class_values or data.max_mask_value or data.palette or data.binary):
        if not samples:
            raise ConfigError("data.num_classes is not set and there are no masks to infer it from")
        found = mask_values(samples)
        if found == {0, 255}:  # the smp trainer's default --class-list "255": 255 is the object, not void
            notice("the masks hold only 0 and 255: read as background (0) and foreground (255) as the smp trainer "
                   "does (data.binary); give --class-list or --num-classes to read them otherwise")
            return ClassMap.from_options(binary=True, ignore_index=data.ignore_index)
        num_classes = infer_num_classes(samples, data.ignore_index, found)
    return ClassMap.from_options(num_classes=num_classes, class_values=data.class_values,
                                 max_mask_value=data.max_mask_value, palette=data.palette, binary=data.binary,
                                 ignore_index=data.ignore_index, unmapped=data.unmapped)


@dataclass
class PreparedData:
    train: list[Sample]
    vals: dict[str, list[Sample]]
    class_map: ClassMap
    report: DatasetReport
    in_channels: int


def prepare_data(data: DataConfig) -> PreparedData:
    """Find and validate every split before training starts, reporting all bad files at once."""
    if data.root is None:
        raise ConfigError("data.root is not set; pass DATA_DIR to `segwise train` or set data.root")
    train = find_split(data.format, split_path(data.format, data.root, data.train_split), data.extra_channels)
    train, vals = validation_sets(
        data, train, lambda name: find_split(data.format, split_path(data.format, data.root, name), data.extra_channels))
    class_map = build_class_map(data, train)
    report = validate_samples(train, class_map) if data.validate_data else None
    in_channels = report.channels if report else read_sample_image(train[0]).shape[2]
    for samples in vals.values():
        if data.validate_data:  # a validation split of other bands would fail only inside a loader, an epoch later
            validate_samples(samples, class_map, reference=("training", in_channels))
    check_statistics_length(data, in_channels)
    return PreparedData(train, vals, class_map, report, in_channels)


def check_statistics_length(data: DataConfig, in_channels: int) -> None:
    """data.mean/data.std need one value per input channel (image bands, then extra planes)."""
    if data.mean is not None and len(data.mean) != in_channels:
        extra = f" ({in_channels - len(data.extra_channels)} bands + {len(data.extra_channels)} extra planes)"
        raise ConfigError(f"data.mean and data.std have {len(data.mean)} values but the images have {in_channels} "
                          f"channels{extra if data.extra_channels else ''}; give one value per channel, or leave "
                          "both unset to compute them from the training split")


def data_fingerprint(samples: list[Sample]) -> str:
    """A cheap identity of a training split: names and byte sizes of every file (no pixel is read)."""
    digest = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: s.name):
        files = [sample.image, sample.mask, *sample.extras]
        digest.update(repr([sample.name, *(Path(f).stat().st_size for f in files if f is not None)]).encode())
    return digest.hexdigest()[:16]


def _stored_stats(stats_file: Path) -> dict | None:
    try:
        stored = yaml.safe_load(stats_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # damaged: computed again
    return stored if isinstance(stored, dict) and {"mean", "std"} <= set(stored) else None


def dataset_stats(data: DataConfig, prepared: PreparedData, run_dir: Path) -> tuple[list[float], list[float]]:
    """Mean/std: from the config, else from the run's stored statistics when they were computed from this training
    split (or the run already trained with them), else computed once and stored with the split's fingerprint.

    A start that failed before training leaves statistics of its data behind; a later run of the same name on
    other data computes its own instead of normalising with them.
    """
    if data.mean is not None:
        return list(data.mean), list(data.std)
    stats_file = run_dir / STATS_FILE
    fingerprint = data_fingerprint(prepared.train)
    stored = _stored_stats(stats_file) if stats_file.is_file() else None
    trained = (run_dir / "checkpoints" / "last.ckpt").is_file()
    if stored is not None and (stored.get("data_fingerprint", fingerprint) == fingerprint or trained):
        return stored["mean"], stored["std"]  # a resumed run keeps the normalisation its weights were trained with
    mean, std = compute_mean_std(prepared.train)
    stats = {"mean": [float(v) for v in mean], "std": [float(max(v, 1e-6)) for v in std],
             "data_fingerprint": fingerprint, "num_train": len(prepared.train), "in_channels": prepared.in_channels,
             "class_pixel_counts": [int(c) for c in prepared.report.class_pixel_counts] if prepared.report else None}
    atomic_write_text(stats_file, yaml.safe_dump(stats, sort_keys=False))
    return stats["mean"], stats["std"]


def check_data(config: Config) -> str:
    """Validate every split of a data set (or one split folder) and describe it: sizes, channels, class pixels."""
    data = with_dataset_defaults(config.data)
    root = Path(data.root)
    if not root.is_dir():
        raise DataError(f"{root} does not exist; pass the data set root (holding train/, val/, ...) or a split folder")
    found = {split.name: find_split(data.format, split, data.extra_channels) for split in data_splits(data.format, root)}
    class_map = build_class_map(data, [s for samples in found.values() for s in samples])
    names = data.class_names or class_map.default_names()
    reports = {name: validate_samples(split_samples, class_map) for name, split_samples in found.items()}
    if len({report.channels for report in reports.values()}) > 1:
        counts = ", ".join(f"{name} {report.channels}" for name, report in reports.items())
        raise DataError(f"{root}: the splits have different channel counts ({counts}); a model takes one count, so "
                        "give every split the same bands and extra planes")
    parts = [f"== {name} ({report.num_samples} samples) ==\n{report.format(names)}" for name, report in reports.items()]
    return "\n\n".join(parts) + f"\n\n{len(found)} split(s) valid."
