"""Trimap losses of the trimap ViT: the normalised focal loss (softmax) and the unknown-region distance-transform loss.

Both take logits N×K×H×W and an int64 target N×H×W (0 background, 1 unknown, 2 foreground; `ignore_index` pixels
count nowhere). The trimap ViT's recipe is ``"nfl + 0.1*dt"``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torch import Tensor, nn

from segwise.errors import ConfigError
from segwise.losses.registry import register_loss

UNKNOWN = 1


class NormalizedFocalLoss(nn.Module):
    """Σ_i w_i·(−log p_i) / (Σ_i w_i + ε) with w_i = (1 − p_i)^γ over the labelled pixels of the batch.

    Equal to the trimap ViT's (1/N) Σ ŵ_i·(−log p_i) with ŵ_i = N·w_i / (Σ w + ε); the normaliser is not
    detached, as in the trimap ViT.
    """

    def __init__(self, ignore_index: int = 255, gamma: float = 2.0, eps: float = 1e-8) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"loss.focal_gamma: got {gamma}; use a value >= 0 (the trimap ViT uses 2)")
        self.ignore_index, self.gamma, self.eps = ignore_index, gamma, eps

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid = target != self.ignore_index
        log_p = logits.log_softmax(1).gather(1, target.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)
        weights = (1.0 - log_p.exp()).pow(self.gamma) * valid
        return (weights * -log_p).sum() / (weights.sum() + self.eps)


def unknown_distance(target: Tensor, unknown: int = UNKNOWN) -> Tensor:
    """Euclidean distance of each unknown pixel to the nearest other pixel (0 elsewhere), per image, via scipy."""
    masks = (target == unknown).cpu().numpy()
    distances = np.stack([distance_transform_edt(m) if m.any() else np.zeros(m.shape) for m in masks])
    return torch.from_numpy(distances).to(device=target.device, dtype=torch.float32)


class UnknownDistanceLoss(nn.Module):
    """Mean over each image's labelled pixels of (1 − p_unknown)·D, D = distance transform of the unknown region;
    0 for images without unknown pixels; averaged over the batch. Pushes the band's interior to 'unknown'."""

    def __init__(self, ignore_index: int = 255, unknown: int = UNKNOWN) -> None:
        super().__init__()
        self.ignore_index, self.unknown = ignore_index, unknown

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        distance = unknown_distance(target, self.unknown)  # computed from the target only: no gradient needed
        valid = (target != self.ignore_index).float()
        p_unknown = logits.softmax(1)[:, self.unknown]
        per_image = ((1.0 - p_unknown) * distance * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1.0)
        return per_image.mean()


@register_loss("nfl")
def _nfl(*, ignore_index: int, focal_gamma: float = 2.0, **_: object) -> nn.Module:
    return NormalizedFocalLoss(ignore_index, focal_gamma)


@register_loss("dt")
def _dt(*, num_classes: int, ignore_index: int, **_: object) -> nn.Module:
    if num_classes != 3:
        raise ConfigError(f"loss 'dt' needs the 3 trimap classes (background, unknown, foreground); got {num_classes}")
    return UnknownDistanceLoss(ignore_index)
