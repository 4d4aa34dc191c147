"""Matting data for trimap segmentation as the trimap ViT uses it: folders, the alpha → prompt / trimap rules,
prompt corruptions, a torch Dataset yielding 4-channel inputs (RGB + prompt mask) with 3-class targets, and a
synthetic matting set.

Layout of a split: `original/` (or `image/`, `images/`) RGB images, `mask/` (or `alpha/`) alpha mattes 0–255,
optional `trimap/` (or any folder named by `trimap_dir`) with 0/128/255 trimaps; files are matched by stem. The
public data sets are read in the layouts they ship in (Composition-1K, P3M-500, AIM-500, AM-200; see
`segwise.data.matting_layouts`); without a trimap file the target comes from the alpha by the rules below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from segwise.data.folder import first_image_dir, index_by_stem, problems_error
from segwise.data.io import read_image, read_mask, write_png
from segwise.data.matting_layouts import AUTO, matting_layout, layouts_text
from segwise.data.synthetic import textured_background, texture_layer
from segwise.data.transforms import compose, mix_seed, normalize, seed_transform
from segwise.errors import ConfigError, DataError

import albumentations as A  # noqa: E402  (after segwise.data.transforms, which keeps it off the network)

PROMPT_THRESHOLD = 30  # the trimap ViT: prompt = alpha >= 30
BACKGROUND_MAX, FOREGROUND_MIN = 15, 230  # the trimap ViT: <= 15 bg, >= 230 fg, else unknown
TRIMAP_VALUES = np.array([0, 128, 255], np.uint8)  # class index → PNG grey level
MEAN = (123.675, 116.28, 103.53, 0.0)  # ImageNet RGB in pixel units; the prompt channel (0/1) passes unchanged
STD = (58.395, 57.12, 57.375, 1.0)


@dataclass(frozen=True)
class MattingSample:
    name: str
    image: Path
    alpha: Path | None
    trimap: Path | None = None


# ---- rules ----------------------------------------------------------------------------------------------------
def prompt_from_alpha(alpha: np.ndarray, threshold: int = PROMPT_THRESHOLD) -> np.ndarray:
    """Binary prompt mask (uint8 0/1): alpha >= threshold (the trimap ViT: 30). A 0/255 binary mask gives itself."""
    return (np.asarray(alpha) >= threshold).astype(np.uint8)


def trimap_classes(grey: np.ndarray) -> np.ndarray:
    """Grey levels → classes: <= 15 background (0), >= 230 foreground (2), else unknown (1). (The trimap ViT's
    code ends up calling 15 itself unknown because a later rule overwrites it; the documented rule is used
    here.)"""
    grey = np.asarray(grey)
    classes = np.ones(grey.shape, np.uint8)
    classes[grey <= BACKGROUND_MAX] = 0
    classes[grey >= FOREGROUND_MIN] = 2
    return classes


def trimap_png(classes: np.ndarray) -> np.ndarray:
    """Classes 0/1/2 → the 0/128/255 grey levels of a trimap PNG."""
    return TRIMAP_VALUES[np.asarray(classes, np.intp)]


def trimap_from_alpha(alpha: np.ndarray, band: int = 0) -> np.ndarray:
    """A 0/128/255 trimap from an alpha matte: pixels 15 < α < 230 are unknown, and the unknown band is widened by
    `band` pixels on each side (dilation with an elliptical kernel = erosion of the known regions)."""
    if band < 0:
        raise ConfigError(f"trimap.unknown_band must be >= 0 pixels, got {band}")
    unknown = (trimap_classes(alpha) == 1).astype(np.uint8)
    if band:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
        unknown = cv2.dilate(unknown, kernel)
    trimap = np.where(np.asarray(alpha) >= FOREGROUND_MIN, 255, 0).astype(np.uint8)
    trimap[unknown > 0] = 128
    return trimap


def baseline_trimap(prompt: np.ndarray, band: int) -> np.ndarray:
    """The trivial trimap of a prompt mask: unknown = dilation minus erosion of the mask by `band` pixels (classes)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    mask = np.asarray(prompt, np.uint8)
    classes = np.where(cv2.erode(mask, kernel) > 0, 2, 0).astype(np.uint8)
    classes[(cv2.dilate(mask, kernel) > 0) & (classes == 0)] = 1
    return classes


# ---- prompt corruptions (the trimap ViT's RandomEdgeNoise, JitterContourEdge, RandomHoleDrop) ------------------
def _ellipse(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def edge_noise(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Erode, dilate, or flip a random half of the morphological-gradient band; elliptical kernel 3–9 px at 448 px
    (scaled with the image, at least 3 px)."""
    kernel = _ellipse(max(int(round(rng.choice([3, 5, 7, 9]) * max(mask.shape) / 448)) | 1, 3))
    op = int(rng.integers(3))
    if op == 0:
        return cv2.erode(mask, kernel)
    if op == 1:
        return cv2.dilate(mask, kernel)
    band = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, kernel) > 0
    flip = band & (rng.random(mask.shape) < 0.5)
    return np.where(flip, 1 - mask, mask).astype(np.uint8)


def jitter_contour(mask: np.ndarray, rng: np.random.Generator, drop: float = 0.05, jitter: float = 2.0,
                   epsilon: float = 7.0, carve: int = 4) -> np.ndarray:
    """Redraw the mask from its contours with 5 % of points dropped, ±2 px jitter and a polygon approximation
    (ε 7 px at 448 px, scaled with the image), then carve a 4-px edge (scaled too)."""
    scale = max(mask.shape) / 448
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros_like(mask)
    polygons = []
    for contour in contours:
        points = contour[:, 0].astype(np.float32)
        points = points[rng.random(len(points)) >= drop] if len(points) > 8 else points
        points += rng.uniform(-jitter, jitter, points.shape).astype(np.float32)
        approx = cv2.approxPolyDP(points.reshape(-1, 1, 2), max(epsilon * scale, 0.5), True)
        polygons.append(np.round(approx).astype(np.int32))
    cv2.fillPoly(out, polygons, 1)
    thickness = max(int(round(carve * scale)), 1)
    cv2.polylines(out, polygons, True, 0, thickness)
    return out


def hole_drop(mask: np.ndarray, rng: np.random.Generator, max_area: float = 0.05) -> np.ndarray:
    """Cut a 3–6-vertex hole centred on a boundary point, at most `max_area` of the mask's area."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    area = float(mask.sum())
    if not contours or area < 4:
        return mask
    boundary = np.concatenate([c[:, 0] for c in contours])
    centre = boundary[int(rng.integers(len(boundary)))].astype(np.float32)
    radius = np.sqrt(max_area * area / np.pi) * rng.uniform(0.4, 1.0)
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
    polygon = centre + radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    out = mask.copy()
    cv2.fillPoly(out, [np.round(polygon).astype(np.int32)], 0)
    return out


@dataclass(frozen=True)
class PromptCorruption:
    """Probabilities of each prompt corruption of the trimap ViT (applied in this order, each independently)."""

    edge_noise: float = 0.2
    contour_jitter: float = 0.5
    hole_drop: float = 0.2

    def __call__(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for probability, corrupt in ((self.edge_noise, edge_noise), (self.contour_jitter, jitter_contour),
                                     (self.hole_drop, hole_drop)):
            if rng.random() < probability and mask.any():
                mask = corrupt(mask, rng)
        return mask


# ---- folders and dataset --------------------------------------------------------------------------------------
def find_matting_samples(split_dir: str | Path, trimap_dir: str | None = None, require_alpha: bool = True,
                         layout: str = AUTO) -> list[MattingSample]:
    """Match images with alpha mattes (and trimaps: the folder `trimap_dir`, by default the layout's trimap folder
    when present) by stem, in the matting `layout` ('auto': detected from the folder names)."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: folder not found; a matting split holds {layouts_text()}")
    form = matting_layout(split_dir, layout)
    problems: list[str] = []
    image_dir, alpha_dir = first_image_dir(split_dir, form.images), first_image_dir(split_dir, form.alphas)
    if image_dir is None:
        problems.append(f"no image folder: {split_dir / form.images[0]}/ is missing ({form.title} layout"
                        f"{_others(form.images)})")
    if alpha_dir is None and require_alpha:
        problems.append(f"no alpha folder: {split_dir / form.alphas[0]}/ is missing ({form.title} layout, alpha "
                        f"mattes or prompt masks{_others(form.alphas)})")
    if trimap_dir is not None and not (split_dir / trimap_dir).is_dir():
        problems.append(f"trimap folder {trimap_dir}/ is missing; add it or leave trimap.trimap_dir unset")
    trimap_dir = trimap_dir or next((name for name in form.trimaps if (split_dir / name).is_dir()), None)
    images = index_by_stem(image_dir, split_dir, problems) if image_dir else {}
    alphas = index_by_stem(alpha_dir, split_dir, problems) if alpha_dir else {}
    trimaps = index_by_stem(split_dir / trimap_dir, split_dir, problems) if trimap_dir and (split_dir / trimap_dir).is_dir() else {}
    if image_dir is not None and not images:
        problems.append(f"no images in {image_dir}")
    for stem in sorted(images):
        if alpha_dir is not None and stem not in alphas:
            problems.append(f"{image_dir.name}/{images[stem].name} has no alpha/mask in {alpha_dir.name}/")
        if trimaps and stem not in trimaps:
            problems.append(f"{image_dir.name}/{images[stem].name} has no trimap in {trimap_dir}/")
    if problems:
        other = (f" If {split_dir} is another layout, name it with --format / trimap.format; the layouts: "
                 f"{layouts_text()}.") if image_dir is None or alpha_dir is None else ""
        raise problems_error(str(split_dir), problems, "Fix: give every image an alpha matte (and a trimap, when a "
                                                       f"trimap folder is used) with the same file stem.{other}")
    return [MattingSample(stem, path, alphas.get(stem), trimaps.get(stem)) for stem, path in sorted(images.items())]


def _others(names: tuple[str, ...]) -> str:
    """'; or image/, images/' after the first of several accepted folder names."""
    return f"; or {', '.join(f'{name}/' for name in names[1:])}" if len(names) > 1 else ""


def read_grey(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A single-channel 8-bit map (alpha, prompt or trimap) that must match the image size."""
    grey = read_mask(path)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise DataError(f"{path}: expected a single-channel 8-bit map (grey or R=G=B), got shape {grey.shape} "
                        f"{grey.dtype}")
    if grey.shape != tuple(shape):
        raise DataError(f"{path}: size {grey.shape[0]}×{grey.shape[1]} differs from its image "
                        f"({shape[0]}×{shape[1]}); maps must match their image pixel for pixel")
    return grey


def read_rgb(path: Path) -> np.ndarray:
    image = read_image(path)
    if image.dtype != np.uint8 or image.shape[2] not in (3, 4):
        raise DataError(f"{path}: trimap models take 8-bit RGB images, got {image.shape[2]} channels {image.dtype}")
    return np.ascontiguousarray(image[..., :3])


def sample_target(sample: MattingSample, alpha: np.ndarray, band: int) -> np.ndarray:
    """Classes from the sample's trimap file, else from a trimap generated from its alpha."""
    if sample.trimap is not None:
        return trimap_classes(read_grey(sample.trimap, alpha.shape))
    return trimap_classes(trimap_from_alpha(alpha, band))


def matting_transform(size: int | None, train: bool) -> A.Compose:
    """The trimap ViT's augmentation (train: brightness/contrast, RGB shift, h-flip) and LongestMaxSize(size);
    the prompt is a second mask target so geometry applies identically. Batches are zero-padded by the collate
    (target: ignore)."""
    ops: list[A.BasicTransform] = []
    if train:
        ops += [A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=(-0.15, 0.4), p=0.75),
                A.RGBShift(r_shift_limit=10, g_shift_limit=10, b_shift_limit=10, p=0.75),
                A.HorizontalFlip(p=0.5)]
    if size:
        ops.append(A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_LINEAR))
    transform = compose(ops)
    transform.add_targets({"prompt": "mask"})
    return transform


def model_input(image: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    """H×W×4 uint8: RGB and the 0/1 prompt (what `trimap_vit` reads after normalisation with MEAN/STD)."""
    return np.concatenate([image, prompt[..., None].astype(np.uint8)], axis=2)


class MattingDataset(Dataset):
    """Items {'image': 4×H×W normalised RGB + prompt, 'mask': H×W classes, 'name'}, augmentation keyed by
    (seed, epoch, index) like `SegmentationDataset`, so runs resume exactly."""

    def __init__(self, samples: Sequence[MattingSample], size: int | None, train: bool, seed: int = 0,
                 band: int = 0, prompt_threshold: int = PROMPT_THRESHOLD,
                 corruption: PromptCorruption | None = None) -> None:
        self.samples, self.size, self.train, self.seed = list(samples), size, train, seed
        self.band, self.prompt_threshold = band, prompt_threshold
        self.corruption = corruption if train else None
        self.transform = matting_transform(size, train)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (int(self._epoch.item()), key)
        sample = self.samples[index]
        image = read_rgb(sample.image)
        alpha = read_grey(sample.alpha, image.shape[:2])
        target = sample_target(sample, alpha, self.band)
        seed = mix_seed(self.seed, epoch, index)
        seed_transform(self.transform, seed)
        out = self.transform(image=image, mask=target, prompt=prompt_from_alpha(alpha, self.prompt_threshold))
        prompt = out["prompt"]
        if self.corruption is not None:
            prompt = self.corruption(np.ascontiguousarray(prompt), np.random.default_rng(seed))
        pixels = normalize(model_input(out["image"], prompt), MEAN, STD)
        return {"image": torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), "name": sample.name,
                "mask": torch.from_numpy(out["mask"].astype(np.int64))}


# ---- synthetic matting set ------------------------------------------------------------------------------------
def make_synthetic_matting(root: str | Path, num_train: int = 48, num_val: int = 16, num_test: int = 0,
                           size: int = 96, seed: int = 0) -> Path:
    """Write `root/{train,val,test}/{original,mask}/*.png`: textured soft-edged shapes composited with their alpha
    over textured backgrounds. Edges are sharp, Gaussian-blurred (σ 2–6) or hair-like (thin partial strands), so
    the width of the unknown band varies and must be read from the image."""
    if size < 32:
        raise ConfigError(f"synthetic matting images must be at least 32 px, got {size}")
    root = Path(root)
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val), ("test", num_test))):
        for index in range(count):
            rng = np.random.default_rng([seed, split_id, index, 7])
            image, alpha = _render_matte(rng, size)
            write_png(root / split / "original" / f"{split}_{index:04d}.png", image)
            write_png(root / split / "mask" / f"{split}_{index:04d}.png", alpha)
    return root


def _soft_alpha(hard: np.ndarray, rng: np.random.Generator, style: str) -> np.ndarray:
    """Float alpha in [0, 1] of a hard 0/1 shape with a sharp, blurred or hairy edge."""
    if style == "sharp":
        return cv2.GaussianBlur(hard, (0, 0), 0.5)
    if style == "blur":
        return cv2.GaussianBlur(hard, (0, 0), float(rng.uniform(2.0, 6.0)))
    contours, _ = cv2.findContours(hard.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    strands = np.zeros_like(hard)
    points = np.concatenate([c[:, 0] for c in contours]).astype(np.float32)
    centre = points.mean(0)
    for point in points[rng.random(len(points)) < 0.5]:
        direction = (point - centre) / (np.linalg.norm(point - centre) + 1e-6)
        angle = rng.normal(0, 0.4)
        rotated = np.array([direction[0] * np.cos(angle) - direction[1] * np.sin(angle),
                            direction[0] * np.sin(angle) + direction[1] * np.cos(angle)])
        end = point + rotated * rng.uniform(3, 10)
        cv2.line(strands, tuple(int(v) for v in point), tuple(int(v) for v in end), float(rng.uniform(0.3, 0.8)), 1)
    return cv2.GaussianBlur(np.maximum(hard, strands), (0, 0), 0.6)


def _render_matte(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image and its uint8 alpha: 1–2 textured shapes composited ("over") on a textured background."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = textured_background(rng, size, size, xx, yy)
    alpha = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(1, 3))):
        hard = np.zeros((size, size), np.float32)
        centre = (int(rng.integers(size // 4, 3 * size // 4)), int(rng.integers(size // 4, 3 * size // 4)))
        if rng.random() < 0.5:
            axes = (int(rng.integers(size // 8, size // 3)), int(rng.integers(size // 8, size // 3)))
            cv2.ellipse(hard, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(4, 8))))
            radii = rng.uniform(size / 8, size / 3, angles.size)
            polygon = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1)
            cv2.fillPoly(hard, [np.round(polygon).astype(np.int32)], 1.0)
        shape_alpha = _soft_alpha(hard, rng, str(rng.choice(["sharp", "blur", "hair"])))
        colour = tuple(int(c) for c in rng.integers(40, 230, 3))
        layer = texture_layer(rng, str(rng.choice(["speckle", "stripes", "grain", "checker"])), colour, xx, yy)
        image = shape_alpha[..., None] * layer + (1 - shape_alpha[..., None]) * image
        alpha = 1 - (1 - alpha) * (1 - shape_alpha)
    image += rng.normal(0.0, 3.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), np.clip(np.round(alpha * 255), 0, 255).astype(np.uint8)
