"""Rasterise sketches into stroke and group images, compute the distance-field target, and augment vector sketches.

Coordinates are drawn as they are: a sketch already `normalize`d into a 256 canvas (larger side 156, centred, as in
ContextSeg's data preparation) lands where ContextSeg's code puts it. Orientation: every image here keeps the vector
convention, row = y (downwards). ContextSeg's code flips its group images top-bottom but not its stroke images, so
the embedder sees the same shape in two orientations and the decoder's group tokens live in a different frame from
the encoder's stroke tokens; one orientation for both removes that mismatch and makes PNG/SVG outputs match the input.

Line widths are cv2 thicknesses (defaults 2 for stroke images and 4 for group images, ContextSeg's PIL widths);
cv2 draws a thickness-t line about t + 1 pixels wide with round caps, a little bolder than PIL's width-t line.
Drawing is one cv2.polylines call per image on 1/16-pixel fixed-point coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np

from segwise.data.sketch.formats import Sketch

__all__ = ["FRAME", "augment_sketch", "distance_field", "render_strokes", "render_union", "stroke_affine"]

FRAME = 256  # sketches are normalised into this coordinate frame (as ContextSeg does) and drawn at any size from it

_SHIFT = 4  # cv2 fixed-point fraction bits: coordinates are drawn with 1/16-pixel precision
_ONE = 1 << _SHIFT


def _fixed_point(stroke: np.ndarray, scale: float) -> np.ndarray:
    """(n, 2) float coordinates -> (n, 1, 2) int32 fixed-point coordinates for cv2 (pixel centres at integers).

    A one-point stroke is repeated so that cv2 draws it as a dot instead of nothing.
    """
    points = np.round(stroke * (scale * _ONE)).astype(np.int32).reshape(-1, 1, 2)
    return np.repeat(points, 2, axis=0) if len(points) == 1 else points


def _draw(canvas: np.ndarray, strokes: Sequence[np.ndarray], scale: float, width: int) -> None:
    """Draw open polylines of 1s into ``canvas`` in place (``width`` is cv2's thickness)."""
    polylines = [_fixed_point(stroke, scale) for stroke in strokes if len(stroke)]
    cv2.polylines(canvas, polylines, isClosed=False, color=1, thickness=width, lineType=cv2.LINE_8, shift=_SHIFT)


def render_strokes(sketch: Sketch, size: int = 256, width: int = 2, *, canvas: int | None = None) -> np.ndarray:
    """(S, size, size) uint8 {0, 1}: one image per stroke, in drawing order (the transformer's input).

    ``canvas`` is the side of the coordinate frame of the sketch (default ``size``); coordinates are scaled by
    ``size / canvas`` so a 256-normalised sketch can be drawn at 64 pixels for quick tests.
    """
    scale = size / (canvas or size)
    images = np.zeros((sketch.num_strokes, size, size), np.uint8)
    for image, stroke in zip(images, sketch.strokes):
        _draw(image, [stroke], scale, width)
    return images


def render_union(
    sketch: Sketch,
    stroke_ids: Sequence[int] | np.ndarray,
    size: int = 256,
    width: int = 4,
    *,
    canvas: int | None = None,
) -> np.ndarray:
    """(size, size) uint8 {0, 1}: the strokes ``stroke_ids`` drawn together (a group image, the embedder's input).

    ``stroke_ids`` may also be a boolean mask over strokes (the pointer head's thresholded row).
    """
    ids = np.asarray(stroke_ids)
    ids = np.flatnonzero(ids) if ids.dtype == bool else ids.astype(np.int64).reshape(-1)
    image = np.zeros((size, size), np.uint8)
    _draw(image, [sketch.strokes[i] for i in ids], size / (canvas or size), width)
    return image


def distance_field(ink: np.ndarray, k: float = 0.01) -> np.ndarray:
    """DF = 1 / (1 + k·exp(d)), d the Euclidean distance to the nearest ink pixel (ContextSeg's target), as float32.

    ``ink`` is (H, W) or (..., H, W), non-zero = ink. DF is 1/(1+k) on ink and falls to 0 within a few pixels;
    where exp overflows, or an image has no ink at all (d = inf), DF is 0, as in ContextSeg's code. The exact
    Euclidean transform of cv2 (DIST_MASK_PRECISE) equals scipy's distance_transform_edt and is about 3× faster.
    """
    if not k > 0:
        raise ValueError(f"distance-field k must be positive, got {k}")
    ink = np.asarray(ink)
    if ink.ndim < 2:
        raise ValueError(f"distance_field needs an (H, W) or (..., H, W) image, got shape {ink.shape}")
    flat = ink.reshape(-1, *ink.shape[-2:])
    out = np.zeros(flat.shape, np.float32)
    for image, field in zip(flat, out):
        if not image.any():
            continue
        field[:] = cv2.distanceTransform((image == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        with np.errstate(over="ignore"):  # in place, float32: exp(d > 88) is inf and DF there exactly 0
            np.exp(field, out=field)
        field *= k
        field += 1.0
        np.reciprocal(field, out=field)
    return out.reshape(ink.shape)


def stroke_affine(
    rng: np.random.Generator,
    *,
    canvas: int = 256,
    scale: tuple[float, float] = (0.8, 1.2),
    translate: float = 0.15,
    rotate: float = 15.0,
    shear: float = 10.0,
) -> np.ndarray:
    """A random 2×3 affine about the canvas centre: scale, rotation (degrees), x-shear (degrees), translation
    (fraction of the canvas), with ContextSeg's stage-2 augmentation ranges as defaults."""
    s = rng.uniform(*scale)
    angle = math.radians(rng.uniform(-rotate, rotate))
    tan_shear = math.tan(math.radians(rng.uniform(-shear, shear)))
    shift = rng.uniform(-translate, translate, size=2) * canvas
    cos, sin = math.cos(angle), math.sin(angle)
    linear = s * np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, tan_shear], [0.0, 1.0]])
    centre = np.full(2, canvas / 2.0)
    return np.hstack([linear, (centre + shift - linear @ centre)[:, None]])


def augment_sketch(
    sketch: Sketch,
    rng: np.random.Generator,
    *,
    p: float = 0.5,
    drop_p: float = 0.5,
    drop_fraction: tuple[float, float] = (0.1, 0.3),
    min_strokes: int = 4,
    canvas: int = 256,
    scale: tuple[float, float] = (0.8, 1.2),
    translate: float = 0.15,
    rotate: float = 15.0,
    shear: float = 10.0,
) -> Sketch:
    """With probability ``p``: drop 10–30 % of the strokes (with probability ``drop_p``, only for sketches of at
    least ``min_strokes``), then move all strokes by one shared random affine (ContextSeg's stage-2 augmentation,
    applied to the vectors so the stroke images and any group image rasterised afterwards stay consistent). Labels
    follow their strokes.
    """
    if rng.random() >= p:
        return sketch
    keep = np.arange(sketch.num_strokes)
    if sketch.num_strokes >= min_strokes and rng.random() < drop_p:
        count = int(round(rng.uniform(*drop_fraction) * sketch.num_strokes))
        keep = np.sort(rng.choice(sketch.num_strokes, size=sketch.num_strokes - count, replace=False))
    matrix = stroke_affine(rng, canvas=canvas, scale=scale, translate=translate, rotate=rotate, shear=shear)
    strokes = [(sketch.strokes[i] @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32) for i in keep]
    return replace(sketch, strokes=strokes, labels=sketch.labels[keep].copy())
