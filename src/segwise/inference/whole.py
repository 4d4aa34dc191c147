"""Whole-image inference: pad to the model's stride, run once, crop back. Other modes (sliding, TTA) share the
`InferenceMode` call signature so `Predictor` takes any of them."""

from __future__ import annotations

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


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes in float32 (models output K ≥ 2 logits; binary is K = 2)."""
    return logits.float().softmax(dim=1)


class WholeImage:
    """Run the model on the full (padded) image."""

    def __call__(self, model: nn.Module, images: torch.Tensor, stride: int) -> torch.Tensor:
        height, width = images.shape[-2:]
        logits = model(pad_to_multiple(images, stride))
        return logits_to_probs(logits[..., :height, :width])
