"""A small deterministic synthetic segmentation data set: textured shapes on textured backgrounds.

Each class has its own colour family and texture, so a small network learns it from local appearance in a few
CPU minutes; used by tests, demos and smoke runs.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from segwise.data.io import write_png
from segwise.errors import ConfigError
from segwise.io_utils import atomic_write_text

_SHAPES = ("disc", "polygon", "line")
_TEXTURES = ("speckle", "stripes", "grain", "checker")
_BASE_COLOURS = ((205, 75, 55), (55, 95, 205), (235, 215, 70))
_BACKGROUND = (110, 125, 95)


def make_synthetic_dataset(
    root: str | Path,
    num_train: int = 48,
    num_val: int = 16,
    num_test: int = 8,
    size: int | tuple[int, int] = (128, 128),
    num_classes: int = 4,
    seed: int = 0,
) -> Path:
    """Write `root/{train,val,test}/{images,masks}/*.png` and `root/dataset.yaml`; the same seed gives the same files.

    Class 0 is background; classes 1, 2, 3 are discs/ellipses, stripy polygons and thin lines/blobs (further classes
    cycle through these shapes with new colours and textures). Objects range from a few pixels to a third of the image.
    """
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2 for a synthetic data set, got {num_classes}.")
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(height, width) < 16:
        raise ConfigError(f"synthetic images must be at least 16×16 pixels, got {height}×{width}.")
    root = Path(root)
    styles = _class_styles(num_classes)
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val), ("test", num_test))):
        for index in range(count):
            rng = np.random.default_rng([seed, split_id, index])
            image, mask = _render(rng, height, width, styles)
            write_png(root / split / "images" / f"{split}_{index:04d}.png", image)
            write_png(root / split / "masks" / f"{split}_{index:04d}.png", mask)
    meta = {
        "num_classes": num_classes,
        "class_names": ["background"] + [
            shape if k <= len(_SHAPES) else f"{shape}_{k}" for k, (shape, _, _) in enumerate(styles, start=1)
        ],
        "palette": [[0, 0, 0]] + [list(colour) for _, _, colour in styles],
    }
    atomic_write_text(root / "dataset.yaml", yaml.safe_dump(meta, sort_keys=False, default_flow_style=None))
    return root


def _class_styles(num_classes: int) -> list[tuple[str, str, tuple[int, int, int]]]:
    """(shape, texture, base colour) of each foreground class; classes past 3 get evenly spaced new hues."""
    styles = []
    for k in range(num_classes - 1):
        if k < len(_BASE_COLOURS):
            colour = _BASE_COLOURS[k]
        else:
            hue = int(180 * ((k * 0.381966) % 1.0))
            value = 230 if k % 2 else 160
            hsv = np.array([[[hue, 200, value]]], np.uint8)
            colour = tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])
        styles.append((_SHAPES[k % len(_SHAPES)], _TEXTURES[k % len(_TEXTURES)], colour))
    return styles


def _render(
    rng: np.random.Generator, height: int, width: int, styles: list[tuple[str, str, tuple[int, int, int]]]
) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image and its uint8 index mask."""
    side = min(height, width)
    mask = np.zeros((height, width), np.uint8)
    for k in rng.permutation(len(styles)) + 1:
        for _ in range(int(rng.integers(2, 7))):
            _draw(mask, styles[k - 1][0], int(k), rng, side)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    layers = [textured_background(rng, height, width, xx, yy)]
    layers += [texture_layer(rng, texture, colour, xx, yy) for _, texture, colour in styles]
    image = np.stack(layers)[mask, yy.astype(np.intp), xx.astype(np.intp)]
    image += rng.normal(0.0, 5.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _draw(mask: np.ndarray, shape: str, value: int, rng: np.random.Generator, side: int) -> None:
    height, width = mask.shape
    centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
    if shape == "disc":
        axes = (int(rng.integers(2, max(3, side // 6))), int(rng.integers(2, max(3, side // 6))))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, value, -1)
    elif shape == "polygon":
        radius = rng.uniform(3, side / 6)
        if rng.random() < 0.5:
            box = (centre, (2 * radius, 2 * radius * rng.uniform(0.4, 1.0)), float(rng.uniform(0, 180)))
            points = cv2.boxPoints(box)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            radii = radius * rng.uniform(0.6, 1.0, angles.size)
            points = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], value)
    elif rng.random() < 0.6:
        length, angle = rng.uniform(side / 8, side / 2), rng.uniform(0, np.pi)
        end = (int(centre[0] + length * np.cos(angle)), int(centre[1] + length * np.sin(angle)))
        cv2.line(mask, centre, end, value, int(rng.integers(1, 4)))
    else:
        cv2.circle(mask, centre, int(rng.integers(1, 4)), value, -1)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, amplitude: float) -> np.ndarray:
    """Low-frequency colour noise: a coarse random grid upsampled with cubic interpolation."""
    grid = rng.normal(0.0, amplitude, (int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def textured_background(rng: np.random.Generator, height: int, width: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xx * np.cos(angle) + yy * np.sin(angle)) / max(height, width) * 40.0 - 20.0
    base = np.asarray(_BACKGROUND, np.float32) + rng.normal(0.0, 8.0, 3).astype(np.float32)
    return base + ramp[..., None] + _smooth_noise(rng, height, width, 18.0)


def texture_layer(
    rng: np.random.Generator, texture: str, colour: tuple[int, int, int], xx: np.ndarray, yy: np.ndarray
) -> np.ndarray:
    """A full-image layer of one class's texture; the mask decides where it shows."""
    height, width = xx.shape
    base = np.asarray(colour, np.float32) + rng.normal(0.0, 6.0, 3).astype(np.float32)
    if texture == "speckle":
        pattern = rng.normal(0.0, 14.0, (height, width, 1)).astype(np.float32) * np.float32([1.0, 0.7, 0.7])
    elif texture == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(5.0, 8.0)
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        pattern = 35.0 * wave[..., None] * np.float32([0.6, 0.6, 1.0])
    elif texture == "checker":
        cells = ((xx // 4 + yy // 4) % 2) * 40.0 - 20.0
        pattern = np.repeat(cells[..., None], 3, axis=2)
    else:
        pattern = rng.normal(0.0, 8.0, (height, width, 3)).astype(np.float32)
    return base + pattern + _smooth_noise(rng, height, width, 8.0)
