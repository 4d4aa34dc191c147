"""Training/evaluation transforms (albumentations) that keep masks aligned, and pixel normalisation.

Transforms work on uint8 images or float32 images in [0, 1]; `apply_transform` converts other dtypes
(uint16, float32 in raw units) around the call so that every preset runs on every input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # importing albumentations must not reach the network

import albumentations as A  # noqa: E402

from segwise.errors import ConfigError  # noqa: E402

PRESETS: tuple[str, ...] = ("none", "safe", "light", "medium", "hard", "one")
"""Augmentation strengths as in the smp trainer; non-RGB inputs only get geometric and brightness/contrast/gamma ops."""

Size = int | Sequence[int]


def build_train_transform(
    preset: str = "light",
    crop_size: Size | None = None,
    image_size: Size | None = None,
    scale_range: Sequence[float] | None = None,
    hflip: bool = False,
    vflip: bool = False,
    rotate: float = 0.0,
    blur: bool = False,
    ignore_index: int = 255,
    num_channels: int = 3,
    rare_classes: Sequence[int] = (),
    rare_class_crops: float = 0.0,
) -> A.Compose:
    """Random scale and rotation, the preset, resize to image_size and/or pad + random crop to crop_size, flips, blur.

    Geometric ops use nearest interpolation for masks and fill new mask pixels with ignore_index (images with 0).
    With rare_classes and rare_class_crops > 0, that share of the crops is placed around a rare-class pixel
    (`RareClassCrop`).
    """
    if preset not in PRESETS:
        raise ConfigError(f"augment.preset {preset!r} is unknown; choose one of {list(PRESETS)}.")
    fill = _fill(ignore_index)
    ops: list[A.BasicTransform] = []
    if scale_range is not None:
        low, high = _scale_range(scale_range)
        ops.append(A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0))
    if rotate:
        ops.append(A.Rotate(limit=abs(float(rotate)), **fill, p=1.0))
    ops += _preset_ops(preset, num_channels, ignore_index)
    if image_size is not None:
        height, width = _size(image_size, "data.image_size")
        ops.append(A.Resize(height, width, interpolation=cv2.INTER_LINEAR))
    if crop_size is not None:
        height, width = _size(crop_size, "data.crop_size")
        ops.append(A.PadIfNeeded(height, width, position="top_left", **fill))
        if rare_classes and rare_class_crops > 0:
            ops.append(RareClassCrop(height, width, rare_classes, rare_class_crops))
        else:
            ops.append(A.RandomCrop(height, width))
    if hflip:
        ops.append(A.HorizontalFlip(p=0.5))
    if vflip:
        ops.append(A.VerticalFlip(p=0.5))
    if blur:
        ops.append(A.GaussianBlur(sigma_limit=(0.1, 1.0), p=0.5))
    return compose(ops)


class RareClassCrop(A.CropNonEmptyMaskIfExists):
    """A random crop that, with probability `share`, holds a pixel of one of `classes` (at a random place in the
    crop) when the mask has any: rare classes are seen more often than their pixel share (nnU-Net's foreground
    oversampling)."""

    def __init__(self, height: int, width: int, classes: Sequence[int], share: float) -> None:
        if not 0 < share <= 1:
            raise ConfigError(f"data.rare_class_crops must be in (0, 1], got {share}.")
        super().__init__(height, width, p=1.0)
        self.classes = [int(c) for c in classes]
        self.share = float(share)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        mask = data["mask"]
        rows, columns = mask.shape[:2]
        if rows < self.height or columns < self.width:
            raise ConfigError(f"crop {self.height}x{self.width} is larger than the padded image {rows}x{columns}.")
        targets = np.argwhere(np.isin(mask, self.classes)) if self.py_random.random() < self.share else ()
        if len(targets):
            y, x = targets[self.py_random.randrange(len(targets))][:2]
            top = int(np.clip(y - self.py_random.randint(0, self.height - 1), 0, rows - self.height))
            left = int(np.clip(x - self.py_random.randint(0, self.width - 1), 0, columns - self.width))
        else:
            top = self.py_random.randint(0, rows - self.height)
            left = self.py_random.randint(0, columns - self.width)
        return {"crop_coords": (left, top, left + self.width, top + self.height)}


def build_eval_transform(image_size: Size | None = None) -> A.Compose | None:
    """Resize to image_size for evaluation, or None (images are used at their own size)."""
    if image_size is None:
        return None
    height, width = _size(image_size, "data.image_size")
    return compose([A.Resize(height, width, interpolation=cv2.INTER_LINEAR)])


def dtype_max(dtype: np.dtype) -> float:
    """Full-scale value of a pixel type: 255 for uint8, 65535 for uint16, 1.0 for floats."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def same_pixel_type(planes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Planes stacked into one image share a pixel type: of mixed types, each becomes float32 over its full scale."""
    if len({plane.dtype for plane in planes}) <= 1:
        return list(planes)
    return [plane.astype(np.float32) / np.float32(dtype_max(plane.dtype)) for plane in planes]


def normalize(
    image: np.ndarray,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    max_value: float | None = None,
) -> np.ndarray:
    """(image - mean) / std per channel with mean/std in raw pixel units, as float32 H×W×C.

    Without mean/std the image is only divided by max_value (default: the dtype's full scale, e.g. 255).
    """
    scale = dtype_max(image.dtype) if max_value is None else float(max_value)
    channels = image.shape[-1] if image.ndim == 3 else 1
    mean_array = _per_channel(0.0 if mean is None else mean, channels, "data.mean")
    std_array = _per_channel(scale if std is None else std, channels, "data.std")
    if np.any(std_array <= 0):
        raise ConfigError(f"data.std must be positive for every channel, got {std_array.tolist()}.")
    out = image.astype(np.float32)
    out -= mean_array
    out *= 1.0 / std_array
    return out


def apply_transform(
    transform: A.Compose | None, image: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply a transform to image (+ mask); return the image as float32 in raw pixel units and the mask.

    uint8 images go through as uint8; other dtypes as float32 divided by their full scale, then scaled back.
    """
    if transform is None:
        return image.astype(np.float32), mask
    unit = 1.0 if image.dtype in (np.uint8, np.float32) else dtype_max(image.dtype)
    work = image if unit == 1.0 else image.astype(np.float32) / np.float32(unit)
    if mask is None:
        out_image, out_mask = transform(image=work)["image"], None
    else:
        compact = _compact_mask(mask)
        result = transform(image=work, mask=compact)
        out_image, out_mask = result["image"], result["mask"].astype(mask.dtype, copy=False)
    out_image = out_image.astype(np.float32, copy=False)
    if unit != 1.0:
        out_image = out_image * np.float32(unit)
    if out_image.ndim == 2:
        out_image = out_image[..., None]
    return out_image, out_mask


def seed_transform(transform: A.BaseCompose | A.BasicTransform, seed: int) -> None:
    """Seed a transform tree so each op gets its own stream derived from seed (reproducible, order-independent)."""
    transform.set_random_seed(seed)
    for position, child in enumerate(getattr(transform, "transforms", ())):
        seed_transform(child, mix_seed(seed, position))


def mix_seed(*parts: int) -> int:
    """Hash integers into one 32-bit seed (numpy SeedSequence): stable across runs, processes and platforms."""
    return int(np.random.SeedSequence([int(p) % (1 << 64) for p in parts]).generate_state(1)[0])


def compose(ops: list[A.BasicTransform]) -> A.Compose:
    """Compose with nearest-neighbour masks, seeded so that every op has its own random stream."""
    transform = A.Compose(ops, mask_interpolation=cv2.INTER_NEAREST)
    seed_transform(transform, 0)
    return transform


def _preset_ops(preset: str, num_channels: int, ignore_index: int) -> list[A.BasicTransform]:
    """The smp trainer's augmentation presets; colour ops that need RGB are left out for other channel counts."""
    rgb = num_channels == 3
    fill = _fill(ignore_index)

    def affine(scale: float, rotate: float, **kwargs: object) -> A.Affine:
        options = {**fill, **kwargs}
        return A.Affine(
            scale=(1 - scale, 1 + scale), rotate=(-rotate, rotate), translate_percent=(-0.0625, 0.0625), **options
        )

    def colour_ops(extra: Sequence[A.BasicTransform] = ()) -> A.OneOf:
        ops: list[A.BasicTransform] = [A.RandomBrightnessContrast(p=1.0), A.RandomGamma(p=1.0)]
        if rgb:
            ops += [A.CLAHE(p=1.0), A.HueSaturationValue(p=1.0), A.RGBShift(p=1.0), *extra]
        return A.OneOf(ops, p=0.5)

    def fog() -> list[A.BasicTransform]:
        return [A.RandomFog(fog_coef_range=(0.1, 0.3), p=0.1)] if rgb else []

    noise = A.GaussNoise(std_range=(0.01, 0.05), p=0.5)
    holes = (0.02, 0.1)
    dropout = A.CoarseDropout(num_holes_range=(1, 8), hole_height_range=holes, hole_width_range=holes, p=1.0)
    if preset == "none":
        return []
    if preset == "safe":
        return [A.RandomRotate90(p=0.5), A.Transpose(p=0.5)]
    if preset == "light":
        return [
            A.Downscale(
                scale_range=(0.5, 0.9),
                interpolation_pair={"downscale": cv2.INTER_LINEAR, "upscale": cv2.INTER_LINEAR},
                p=0.3,
            ),
            A.RandomRotate90(p=0.5),
            A.Transpose(p=0.5),
            A.RandomBrightnessContrast(p=0.5),
            affine(0.05, 15, p=0.5),
        ]
    if preset == "one":  # every colour op in a row, each at p 0.5 (RGB only; others get brightness and gamma)
        colours = [A.RandomBrightnessContrast(p=0.5), A.RandomGamma(p=0.5)]
        if rgb:
            colours[1:1] = [A.CLAHE(p=0.5), A.FancyPCA(p=0.5), A.HueSaturationValue(p=0.5), A.RGBShift(p=0.5)]
        return [A.RandomRotate90(p=1.0), A.Transpose(p=0.5), *colours]
    if preset == "medium":
        return [
            A.HorizontalFlip(p=0.5),
            affine(0.1, 15, p=0.5),
            A.OneOf([A.GaussianBlur(sigma_limit=(0.3, 1.5), p=1.0), A.MotionBlur(p=1.0), A.NoOp()], p=1.0),
            A.OneOf([dropout, A.NoOp()], p=1.0),
            noise,
            colour_ops(),
            *fog(),
        ]
    return [
        A.RandomRotate90(p=0.5),
        A.Transpose(p=0.5),
        A.OneOf(
            [
                affine(0.2, 45, border_mode=cv2.BORDER_REFLECT_101, p=1.0),
                A.ElasticTransform(alpha=30, sigma=6, **fill, p=1.0),
            ],
            p=0.5,
        ),
        colour_ops([A.FancyPCA(p=1.0)]),
        A.OneOf([A.RandomGridShuffle(grid=(3, 3), p=1.0), dropout], p=0.3),
        A.OneOf([A.GaussianBlur(sigma_limit=(0.3, 1.5), p=1.0), noise], p=0.5),
        *fog(),
    ]


def _fill(ignore_index: int) -> dict[str, int]:
    """Constant border: 0 for new image pixels, ignore_index for new mask pixels."""
    return {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": ignore_index}


def _compact_mask(mask: np.ndarray) -> np.ndarray:
    """Smallest OpenCV-friendly integer dtype that holds every mask value (OpenCV cannot warp int64)."""
    low, high = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    for dtype in (np.uint8, np.uint16, np.int16):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return mask.astype(dtype, copy=False)
    return mask.astype(np.float32)


def _size(value: Size, key: str) -> tuple[int, int]:
    sizes = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(sizes) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in sizes):
        raise ConfigError(f"{key} must be a positive integer or [height, width], got {value!r}.")
    return int(sizes[0]), int(sizes[1])


def _scale_range(value: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(v) for v in value)
    if len(values) != 2 or not 0 < values[0] <= values[1]:
        raise ConfigError(f"augment.scale_range must be [low, high] with 0 < low <= high, got {list(value)!r}.")
    return values


def _per_channel(value: Sequence[float] | float, channels: int, key: str) -> np.ndarray:
    array = np.asarray(value, np.float32).reshape(-1)
    if array.size == 1:
        return np.full(channels, array[0], np.float32)
    if array.size != channels:
        raise ConfigError(
            f"{key} has {array.size} values but the images have {channels} channels; give one value per channel."
        )
    return array
