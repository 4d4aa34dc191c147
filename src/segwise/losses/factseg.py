"""FactSeg's joint collaborative-probability (CP) loss with small-object mining (SOM).

The `factseg` model outputs log q of its CP-fused probabilities q (`segwise.models.factseg`), and softmax(log q) = q,
so every softmax loss applied to it is a loss on q. The official `JointLoss` is the per-pixel NLL of q, therefore:

* ``som``: the joint CP loss with small-object mining, ``JointLoss(sample='SOM', ratio=loss.som_ratio)`` — the mean
  of the largest ``int(ratio · N·H·W)`` per-pixel losses (ignored pixels count in N·H·W and hold 0; zeros are
  dropped from the mean; + 1e-6 in the denominator, as in the official code);
* ``ohem``: the OHEM variant (pixels whose fused true-class probability is below ``loss.ohem_thresh``);
* ``ce``: the joint CP loss without mining.

On other models ``som`` mines their softmax cross entropy the same way.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from segwise.errors import ConfigError
from segwise.losses.registry import register_loss

SOM_EPS = 1e-6  # the official denominator term; it also makes an all-ignored batch give 0, not NaN


class SmallObjectMiningLoss(nn.Module):
    """Cross entropy averaged over the top `ratio` fraction of pixels by loss (the hard, mostly small-object ones)."""

    def __init__(self, ratio: float = 0.1, ignore_index: int = 255) -> None:
        super().__init__()
        if not 0.0 < ratio <= 1.0:
            raise ConfigError(f"loss.som_ratio: got {ratio}; use a fraction of pixels in (0, 1], e.g. 0.1")
        self.ratio = ratio
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean of the non-zero values among the k = int(ratio · N·H·W) largest per-pixel losses."""
        losses = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none").flatten()
        top = losses.topk(max(int(self.ratio * losses.numel()), 1)).values
        kept = top != 0
        return (top * kept).sum() / (kept.sum() + SOM_EPS)


@register_loss("som")
def _som(*, ignore_index: int, som_ratio: float = 0.1, **_: object) -> nn.Module:
    return SmallObjectMiningLoss(som_ratio, ignore_index)
