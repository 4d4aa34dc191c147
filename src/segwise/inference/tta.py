"""Test-time augmentation: several scales and flips around any inference mode, probabilities averaged."""

from __future__ import annotations

from collections.abc import Sequence
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from segwise.errors import ConfigError
from segwise.inference.whole import InferenceMode, WholeImage


@dataclass
class MultiScaleFlip:
    """Run `base` on the image resized by each scale (bilinear), and on its horizontal and/or vertical mirror.

    Each result is un-flipped and resized back to the input size (bilinear); the mean of all the probability maps
    is returned. Views: every scale × (identity, + horizontal flip if `hflip`, + vertical flip if `vflip`).
    A scaled image may have at most `max_pixels` pixels (None: no bound).
    """

    base: InferenceMode = field(default_factory=WholeImage)
    scales: Sequence[float] = (1.0,)
    hflip: bool = False
    vflip: bool = False
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        if not self.scales or not all(0 < s < math.inf for s in self.scales):  # also refuses NaN
            raise ConfigError(f"--scales must be positive finite numbers, e.g. 0.75 1.0 1.25; got "
                              f"{' '.join(f'{s:g}' for s in self.scales) or 'none'}")

    def flips(self) -> list[tuple[int, ...]]:
        """Spatial dims to mirror for each view: () = as is, (3,) = horizontal, (2,) = vertical."""
        return [()] + [(3,)] * self.hflip + [(2,)] * self.vflip

    def _check_size(self, scale: float, size: tuple[int, int], scaled: tuple[int, int]) -> None:
        """Refuse a scale that would grow the image past `max_pixels` (e.g. --scales 1000 asks for gigabytes)."""
        if self.max_pixels is not None and scaled[0] * scaled[1] > self.max_pixels:
            largest = math.sqrt(self.max_pixels / (size[0] * size[1]))
            raise ConfigError(f"--scales {scale:g} makes the {size[0]}×{size[1]} image {scaled[0]}×{scaled[1]} "
                              f"({scaled[0] * scaled[1]:,} pixels), more than --max-pixels {self.max_pixels:,}; use "
                              f"scales up to {largest:.3g} for this image, or raise --max-pixels")

    def __call__(self, model: nn.Module, images: torch.Tensor, stride: int) -> torch.Tensor:
        height, width = images.shape[-2:]
        total: torch.Tensor | None = None
        views = 0
        for scale in self.scales:
            size = (max(round(height * scale), 1), max(round(width * scale), 1))
            self._check_size(scale, (height, width), size)
            scaled = images if size == (height, width) else F.interpolate(images, size=size, mode="bilinear",
                                                                          align_corners=False)
            for dims in self.flips():
                probs = self.base(model, scaled.flip(dims) if dims else scaled, stride)
                if dims:
                    probs = probs.flip(dims)
                if probs.shape[-2:] != (height, width):
                    probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
                total = probs if total is None else total.add_(probs)
                views += 1
        return total / views
