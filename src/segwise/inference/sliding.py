"""`SlidingWindow`: overlapping windows, run in batches and blended (constant or Gaussian) into probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segwise.errors import ConfigError
from segwise.inference.whole import InferenceMode
from segwise.inference.windows import (AVERAGES, BLENDS, WindowPlan, blend_windows, pair, plan_windows,
                                      resolve_stride)


@dataclass
class SlidingWindow:
    """An `InferenceMode` over windows of `window` pixels (int or (h, w)), `stride` apart or overlapping by `overlap`.

    Each window's softmax probabilities are weighted (`blend` constant, or Gaussian with σ = sigma_scale · window)
    and averaged; `average="logits"` averages log-probabilities instead, i.e. the softmax of the mean logits.
    `window_mode` runs each batch of windows (default: whole window padded to the model's stride; a TTA mode
    wrapping `WholeImage` augments every window). Results do not depend on `batch_size`.
    """

    window: int | tuple[int, int] = 512
    stride: int | tuple[int, int] | None = None
    overlap: float | None = None
    batch_size: int = 4
    blend: str = "constant"
    sigma_scale: float = 0.125
    average: str = "probs"
    window_mode: InferenceMode | None = None

    def __post_init__(self) -> None:
        """Check every option now, so a bad value fails before any image is read."""
        resolve_stride(pair(self.window, "window"), self.stride, self.overlap)
        if self.blend not in BLENDS:
            raise ConfigError(f"blend must be one of {', '.join(BLENDS)}, got {self.blend!r}")
        if self.average not in AVERAGES:
            raise ConfigError(f"average must be one of {', '.join(AVERAGES)}, got {self.average!r}")
        if self.batch_size <= 0:
            raise ConfigError(f"window batch size must be positive, got {self.batch_size}")
        if self.sigma_scale <= 0:
            raise ConfigError(f"sigma_scale must be positive, got {self.sigma_scale}")

    def plan(self, height: int, width: int) -> WindowPlan:
        """The windows this mode runs over a height × width image."""
        return plan_windows(height, width, self.window, self.stride, self.overlap)

    def __call__(self, model: nn.Module, images: torch.Tensor, stride: int) -> torch.Tensor:
        height, width = images.shape[-2:]
        plan = self.plan(height, width)
        wh, ww = plan.window
        out: torch.Tensor | None = None
        for index, image in enumerate(images):
            crops = ((y, x, image[:, y:y + wh, x:x + ww]) for y, x in plan)
            for top, band in blend_windows(model, plan, crops, stride, batch_size=self.batch_size, blend=self.blend,
                                           sigma_scale=self.sigma_scale, average=self.average,
                                           window_mode=self.window_mode):
                if out is None:
                    out = band.new_empty(len(images), band.shape[0], height, width)
                out[index, :, top:top + band.shape[1]] = band
        return out
