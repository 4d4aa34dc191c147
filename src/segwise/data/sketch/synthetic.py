"""Procedural part-labelled vector sketches (house, face, tree) for tests, demos and smoke runs.

Each category draws its parts as strokes with a category-specific layout, jittered in position, size and line,
with some parts split into several strokes and the strokes shuffled, so a stroke's label depends on where it sits
relative to the others, not on its drawing order. Similar shapes carry different labels (a house's door and
windows are both rectangles; a face's eyes and a tree's fruit are both small circles).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from segwise.data.sketch.formats import Sketch
from segwise.errors import ConfigError

__all__ = ["SYNTHETIC_CATEGORIES", "make_synthetic_sketches"]

Strokes = list[tuple[np.ndarray, int]]


def _line(points: Sequence[Sequence[float]], rng: np.random.Generator, step: float = 4.0, noise: float = 0.8
          ) -> np.ndarray:
    """A hand-drawn polyline through ``points``: resampled every ~``step`` units with Gaussian wobble."""
    corners = np.asarray(points, dtype=np.float64)
    pieces = []
    for a, b in zip(corners[:-1], corners[1:]):
        count = max(2, int(np.linalg.norm(b - a) / step) + 1)
        pieces.append(a + np.linspace(0.0, 1.0, count)[:-1, None] * (b - a))
    dense = np.concatenate([*pieces, corners[-1:]]) if pieces else corners
    return dense + rng.normal(0.0, noise, dense.shape)


def _ellipse(cx: float, cy: float, rx: float, ry: float, rng: np.random.Generator, start: float = 0.0,
             end: float = 2 * np.pi) -> np.ndarray:
    """An (open or closed) elliptic arc from angle ``start`` to ``end`` (radians, y down)."""
    count = max(6, int(abs(end - start) * max(rx, ry) / 4.0))
    angles = np.linspace(start, end, count) + rng.uniform(-0.1, 0.1)
    return _line(np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1), rng, step=1e9)


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]


def _jitter(rng: np.random.Generator, amount: float = 6.0) -> np.ndarray:
    return rng.uniform(-amount, amount, 2)


def _house(rng: np.random.Generator) -> Strokes:
    roof, walls, door, window = range(4)
    left, right, top, bottom = 60 + rng.uniform(-12, 12), 196 + rng.uniform(-12, 12), 110 + rng.uniform(-8, 8), 210
    out: Strokes = []
    if rng.random() < 0.5:  # walls as one rectangle or as a U plus the ceiling line
        out.append((_line(_rect(left, top, right, bottom), rng), walls))
    else:
        out += [(_line([(left, top), (left, bottom), (right, bottom), (right, top)], rng), walls),
                (_line([(left, top), (right, top)], rng), walls)]
    peak = ((left + right) / 2 + rng.uniform(-15, 15), top - rng.uniform(50, 80))
    eave = rng.uniform(0, 12)
    if rng.random() < 0.6:
        out.append((_line([(left - eave, top), peak, (right + eave, top)], rng), roof))
    else:
        out += [(_line([(left - eave, top), peak], rng), roof), (_line([peak, (right + eave, top)], rng), roof)]
    door_x = (left + right) / 2 + rng.uniform(-25, 25)
    door_w, door_h = rng.uniform(14, 22), rng.uniform(45, 65)
    out.append((_line([(door_x - door_w, bottom), (door_x - door_w, bottom - door_h),
                       (door_x + door_w, bottom - door_h), (door_x + door_w, bottom)], rng), door))
    for side in rng.permutation([-1, 1])[: rng.integers(1, 3)]:
        cx = door_x + side * rng.uniform(45, 55)
        cx = float(np.clip(cx, left + 22, right - 22))
        cy, half = top + rng.uniform(25, 40), rng.uniform(11, 16)
        out.append((_line(_rect(cx - half, cy - half, cx + half, cy + half), rng), window))
        if rng.random() < 0.5:  # window cross as two more strokes of the same part
            out += [(_line([(cx - half, cy), (cx + half, cy)], rng), window),
                    (_line([(cx, cy - half), (cx, cy + half)], rng), window)]
    return out


def _face(rng: np.random.Generator) -> Strokes:
    outline, eyes, nose, mouth, ears = range(5)
    cx, cy = 128 + rng.uniform(-6, 6), 128 + rng.uniform(-6, 6)
    rx, ry = rng.uniform(60, 75), rng.uniform(70, 90)
    out: Strokes = [(_ellipse(cx, cy, rx, ry, rng, start=-np.pi / 2, end=1.5 * np.pi), outline)]
    eye_dx, eye_y, eye_r = rng.uniform(0.3, 0.45) * rx, cy - rng.uniform(0.15, 0.35) * ry, rng.uniform(6, 11)
    for side in (-1, 1):
        ex, ey = np.array([cx + side * eye_dx, eye_y]) + _jitter(rng, 3)
        out.append((_ellipse(ex, ey, eye_r, eye_r * rng.uniform(0.7, 1.1), rng), eyes))
        if rng.random() < 0.4:  # pupil
            out.append((_ellipse(ex, ey, 2.0, 2.0, rng), eyes))
    nose_top, nose_len = cy - rng.uniform(0, 0.15) * ry, rng.uniform(0.2, 0.3) * ry
    out.append((_line([(cx, nose_top), (cx - rng.uniform(3, 9), nose_top + nose_len),
                       (cx + rng.uniform(0, 6), nose_top + nose_len)], rng), nose))
    mouth_y, mouth_w = cy + rng.uniform(0.4, 0.55) * ry, rng.uniform(0.3, 0.5) * rx
    out.append((_ellipse(cx, mouth_y - 8, mouth_w, rng.uniform(6, 14), rng, start=0.15 * np.pi, end=0.85 * np.pi),
                mouth))
    if rng.random() < 0.35:  # upper lip as a second mouth stroke
        out.append((_line([(cx - mouth_w, mouth_y - 4), (cx + mouth_w, mouth_y - 4)], rng), mouth))
    if rng.random() < 0.6:
        for side in (-1, 1):
            ear_x = cx + side * (rx + rng.uniform(4, 9))
            arc = (-0.5 * np.pi, 0.5 * np.pi) if side > 0 else (0.5 * np.pi, 1.5 * np.pi)
            out.append((_ellipse(ear_x, cy - rng.uniform(0, 10), rng.uniform(8, 13), rng.uniform(14, 20), rng, *arc),
                        ears))
    return out


def _tree(rng: np.random.Generator) -> Strokes:
    crown, trunk, fruit, ground = range(4)
    cx, cy = 128 + rng.uniform(-8, 8), 95 + rng.uniform(-8, 8)
    rx, ry = rng.uniform(55, 75), rng.uniform(45, 60)
    angles = np.linspace(0, 2 * np.pi, 60)
    bumps = 1 + 0.08 * np.sin(angles * rng.integers(5, 9) + rng.uniform(0, np.pi))
    cloud = np.stack([cx + rx * bumps * np.cos(angles), cy + ry * bumps * np.sin(angles)], axis=1)
    out: Strokes = [(_line(cloud, rng, step=1e9), crown)]
    trunk_w, base = rng.uniform(9, 16), cy + ry + rng.uniform(45, 70)
    if rng.random() < 0.5:
        out += [(_line([(cx - trunk_w, cy + ry - 3), (cx - trunk_w, base)], rng), trunk),
                (_line([(cx + trunk_w, cy + ry - 3), (cx + trunk_w, base)], rng), trunk)]
    else:
        out.append((_line([(cx - trunk_w, cy + ry - 3), (cx - trunk_w, base), (cx + trunk_w, base),
                           (cx + trunk_w, cy + ry - 3)], rng), trunk))
    for _ in range(rng.integers(2, 6)):
        radius, angle = np.sqrt(rng.uniform(0.05, 0.5)), rng.uniform(0, 2 * np.pi)
        fx, fy = cx + radius * rx * np.cos(angle), cy + radius * ry * np.sin(angle)
        out.append((_ellipse(fx, fy, rng.uniform(5, 8), rng.uniform(5, 8), rng), fruit))
    if rng.random() < 0.6:
        out.append((_line([(cx - rng.uniform(60, 100), base), (cx + rng.uniform(60, 100), base)], rng), ground))
    return out


SYNTHETIC_CATEGORIES: dict[str, tuple[tuple[str, ...], Callable[[np.random.Generator], Strokes]]] = {
    "house": (("roof", "walls", "door", "window"), _house),
    "face": (("outline", "eyes", "nose", "mouth", "ears"), _face),
    "tree": (("crown", "trunk", "fruit", "ground"), _tree),
}
"""Category -> (part names, drawer returning (stroke, label) pairs in a canonical order)."""


def _finish(strokes: Strokes, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Shuffle stroke order, reverse some strokes and apply one random similarity (scale + shift) to all points."""
    order = rng.permutation(len(strokes))
    scale, shift = rng.uniform(0.6, 1.0), rng.uniform(-30, 30, 2)
    centre = np.array([128.0, 128.0])
    points = []
    for index in order:
        stroke = strokes[index][0][:: -1 if rng.random() < 0.3 else 1]
        points.append(((stroke - centre) * scale + centre + shift).astype(np.float32))
    return points, np.array([strokes[index][1] for index in order], dtype=np.int64)


def make_synthetic_sketches(
    num_per_category: int, *, categories: int | Sequence[str] = 2, seed: int = 0
) -> list[Sketch]:
    """``num_per_category`` sketches of each category (the first ``categories`` of house, face, tree, or the named
    ones), grouped by category; the same seed gives the same sketches."""
    names = list(SYNTHETIC_CATEGORIES)[:categories] if isinstance(categories, int) else list(categories)
    unknown = [name for name in names if name not in SYNTHETIC_CATEGORIES]
    if unknown or not names:
        raise ConfigError(f"synthetic sketch categories {unknown or names} are unknown; choose from "
                          f"{', '.join(SYNTHETIC_CATEGORIES)} (or 1..{len(SYNTHETIC_CATEGORIES)})")
    sketches = []
    for name in names:
        cat_index = list(SYNTHETIC_CATEGORIES).index(name)  # seeds do not depend on which others are asked for
        part_names, draw = SYNTHETIC_CATEGORIES[name]
        for index in range(num_per_category):
            rng = np.random.default_rng([seed, cat_index, index])
            strokes, labels = _finish(draw(rng), rng)
            sketches.append(Sketch(strokes, labels, name, list(part_names), f"{name}_{index:05d}"))
    return sketches
