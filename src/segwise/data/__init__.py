"""Data: image/mask reading, class mapping, folder data sets, validation, transforms and synthetic data."""

from segwise.data.classmap import ClassMap, parse_colour
from segwise.data.folder import (
    IMAGE_DIR_NAMES,
    MASK_DIR_NAMES,
    Sample,
    SegmentationDataset,
    collate_pad,
    find_samples,
    read_sample_image,
    read_sample_mask,
)
from segwise.data.io import IMAGE_EXTENSIONS, read_image, read_mask, write_png
from segwise.data.synthetic import make_synthetic_dataset
from segwise.data.transforms import (
    PRESETS,
    apply_transform,
    build_eval_transform,
    build_train_transform,
    normalize,
    seed_transform,
)
from segwise.data.validate import DatasetReport, compute_mean_std, validate_samples

__all__ = [
    "IMAGE_DIR_NAMES",
    "IMAGE_EXTENSIONS",
    "MASK_DIR_NAMES",
    "PRESETS",
    "ClassMap",
    "DatasetReport",
    "Sample",
    "SegmentationDataset",
    "apply_transform",
    "build_eval_transform",
    "build_train_transform",
    "collate_pad",
    "compute_mean_std",
    "find_samples",
    "make_synthetic_dataset",
    "normalize",
    "parse_colour",
    "read_image",
    "read_mask",
    "read_sample_image",
    "read_sample_mask",
    "seed_transform",
    "validate_samples",
    "write_png",
]
