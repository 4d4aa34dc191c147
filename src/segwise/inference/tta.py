"""Test-time augmentation: several scales and flips around any inference mode, probabilities averaged."""

from __future__ import annotations

from collections.abc import Sequence
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
    """

    base: InferenceMode = field(default_factory=WholeImage)
    scales: Sequence[float] = (1.0,)
    hflip: bool = False
    vflip: bool = False

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"scales must be positive numbers, e.g. 0.75 1.0 1.25; got {list(self.scales)}")

    def flips(self) -> list[tuple[int, ...]]:
        """Spatial dims to mirror for each view: () = as is, (3,) = horizontal, (2,) = vertical."""
        return [()] + [(3,)] * self.hflip + [(2,)] * self.vflip

    def __call__(self, model: nn.Module, images: torch.Tensor, stride: int) -> torch.Tensor:
        height, width = images.shape[-2:]
        total: torch.Tensor | None = None
        views = 0
        for scale in self.scales:
            size = (max(round(height * scale), 1), max(round(width * scale), 1))
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
