"""Whole-image inference: pad to the model's stride, run once, crop back. Other modes (sliding, TTA) share the
`InferenceMode` call signature so `Predictor` takes any of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class InferenceMode(Protocol):
    def __call__(self, model: nn.Module, images: torch.Tensor, stride: int) -> torch.Tensor:
        """Normalised images N×C×H×W → class probabilities N×K×H×W (float32)."""


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad bottom/right so H and W are multiples of `multiple` (zero = the mean after normalisation)."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    return F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images


def logits_to_probs(logits: torch.Tensor, log: bool = False) -> torch.Tensor:
    """Softmax (or log-softmax) over classes in float32 (models output K ≥ 2 logits; binary is K = 2).

    A channels_last N×K×H×W tensor is reduced along its memory-contiguous class axis through an N×H×W×K view:
    2x faster on the CPU than softmax(dim=1) over that layout, same values. The result keeps the input's layout.
    """
    logits = logits.float()
    if logits.dim() == 4 and logits.stride(1) == 1 and logits.shape[1] > 1:
        pixels = logits.permute(0, 2, 3, 1)
        return (pixels.log_softmax(-1) if log else pixels.softmax(-1)).permute(0, 3, 1, 2)
    return logits.log_softmax(dim=1) if log else logits.softmax(dim=1)


class WholeImage:
    """Run the model on the full (padded) image."""

    def __call__(self, model: nn.Module, images: torch.Tensor, stride: int) -> torch.Tensor:
        height, width = images.shape[-2:]
        return logits_to_probs(model(pad_to_multiple(images, stride)))[..., :height, :width]


@dataclass
class ResizedInput:
    """Run `base` on the images resized (bilinear) to a fixed-input model's `size` and resize the probabilities
    back: how a streamed window reaches a model trained on images resized to one size."""

    size: tuple[int, int]
    base: InferenceMode = field(default_factory=WholeImage)

    def __call__(self, model: nn.Module, images: torch.Tensor, stride: int) -> torch.Tensor:
        height, width = images.shape[-2:]
        if (height, width) == tuple(self.size):
            return self.base(model, images, stride)
        resized = F.interpolate(images, size=tuple(self.size), mode="bilinear", align_corners=False)
        return F.interpolate(self.base(model, resized, stride), size=(height, width), mode="bilinear",
                             align_corners=False)
