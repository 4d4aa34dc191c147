"""Segmentation losses selectable by name and combinable with a spec such as ``"ce + 0.5*dice"``.

Every loss takes logits ``N×K×H×W`` (softmax over K ≥ 2) and an int64 target ``N×H×W``; pixels equal to
``ignore_index`` contribute to neither numerator nor denominator, and a batch with no labelled pixel gives a
loss of 0 (not NaN) so one empty crop does not stop training. ``build_loss`` evaluates every term in float32,
outside autocast. ``class_weights`` apply to the pixel-wise losses (ce, focal, ohem).

Why some terms are our own code rather than segmentation_models_pytorch (smp 0.6.0, checked in the tests):
smp ``FocalLoss(mode="multiclass")`` is a one-vs-rest *sigmoid* focal loss on the raw logits (it changes when a
constant is added to all logits, and gives NaN on an all-ignored batch), so ``focal`` is a softmax focal loss
written here; smp ``LovaszLoss`` returns an empty ``0×K`` tensor instead of a scalar on an all-ignored batch,
which the ``lovasz`` term guards. smp Dice/Jaccard honour ``ignore_index`` and are used as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss, JaccardLoss, LovaszLoss
from torch import Tensor, nn

from segwise.errors import ConfigError
from segwise.losses.registry import register_loss

ClassWeights = Sequence[float] | Tensor | None


def _class_weight_tensor(class_weights: ClassWeights, num_classes: int) -> Tensor | None:
    """Validate per-class weights (one non-negative number per class) and return them as float32."""
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
    if weights.numel() != num_classes or not bool(torch.all(weights >= 0)) or not bool(weights.sum() > 0):
        raise ConfigError(
            f"loss.class_weights: got {weights.tolist()} for {num_classes} classes; give {num_classes} "
            "non-negative weights, not all zero"
        )
    return weights


def _pixel_weights(target: Tensor, ignore_index: int, class_weights: Tensor | None) -> tuple[Tensor, Tensor]:
    """Return the target with ignored pixels set to class 0 and a float weight per pixel (0 where ignored)."""
    valid = target != ignore_index
    safe_target = target.masked_fill(~valid, 0)
    if class_weights is None:
        return safe_target, valid.float()
    return safe_target, class_weights[safe_target] * valid


def _true_class_log_prob(logits: Tensor, safe_target: Tensor) -> Tensor:
    """Log-softmax probability of each pixel's target class, ``N×H×W``."""
    return logits.log_softmax(dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)


def _weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """Sum of ``values·weights`` over the sum of weights; 0 (with zero gradient) when no pixel has weight."""
    return (values * weights).sum() / weights.sum().clamp_min(torch.finfo(values.dtype).tiny)


class CrossEntropyLoss(nn.Module):
    """Softmax cross entropy, equal to ``torch.nn.CrossEntropyLoss`` but 0 instead of NaN on an all-ignored batch."""

    def __init__(
        self, ignore_index: int = 255, class_weights: Tensor | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"loss.label_smoothing: got {label_smoothing}; use a value in [0, 1), e.g. 0.1")
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", class_weights)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean over labelled pixels, weighted by the class weight of each pixel's target class."""
        _, pixel_weights = _pixel_weights(target, self.ignore_index, self.class_weights)
        total = F.cross_entropy(
            logits,
            target,
            weight=self.class_weights,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        )
        return total / pixel_weights.sum().clamp_min(torch.finfo(logits.dtype).tiny)


class FocalLoss(nn.Module):
    """Softmax focal loss ``-α_t (1 - p_t)^γ log p_t`` averaged over labelled pixels (α = class weights)."""

    def __init__(self, ignore_index: int = 255, gamma: float = 2.0, class_weights: Tensor | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"loss.focal_gamma: got {gamma}; use a value >= 0 (2.0 is usual, 0 gives plain CE)")
        self.ignore_index = ignore_index
        self.gamma = gamma
        self.register_buffer("class_weights", class_weights)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Focal loss normalised by the summed pixel weights, so ``gamma=0`` equals weighted cross entropy."""
        safe_target, pixel_weights = _pixel_weights(target, self.ignore_index, self.class_weights)
        log_pt = _true_class_log_prob(logits, safe_target)
        focal = (1.0 - log_pt.exp()).pow(self.gamma) * -log_pt
        return _weighted_mean(focal, pixel_weights)


class OhemCrossEntropyLoss(nn.Module):
    """Cross entropy over hard pixels only: true-class probability below ``thresh``, at least ``min_kept`` of them."""

    def __init__(
        self,
        ignore_index: int = 255,
        thresh: float = 0.7,
        min_kept: int = 100_000,
        class_weights: Tensor | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < thresh <= 1.0:
            raise ConfigError(f"loss.ohem_thresh: got {thresh}; use a probability in (0, 1], e.g. 0.7")
        if min_kept < 0:
            raise ConfigError(f"loss.ohem_min_kept: got {min_kept}; use a pixel count >= 0, e.g. 100000")
        self.ignore_index = ignore_index
        self.thresh = thresh
        self.min_kept = int(min_kept)
        self.register_buffer("class_weights", class_weights)

    def hard_pixel_mask(self, logits: Tensor, target: Tensor) -> Tensor:
        """Boolean ``N×H×W`` mask of the pixels the loss trains on (computed on device, without a host sync)."""
        valid = target != self.ignore_index
        return self._select(_true_class_log_prob(logits.detach(), target.masked_fill(~valid, 0)), valid)

    def _select(self, log_pt: Tensor, valid: Tensor) -> Tensor:
        prob = log_pt.detach().exp()
        hard = valid & (prob < self.thresh)
        k = min(self.min_kept, prob.numel())
        if k == 0:
            return hard
        # Ignored pixels sort last (2 > any probability), so the k-th value is the k-th hardest labelled pixel,
        # or the sentinel itself when fewer than k pixels are labelled, which then keeps all of them.
        kth = prob.masked_fill(~valid, 2.0).flatten().kthvalue(k).values
        return hard | (valid & (prob <= kth))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Weighted cross entropy averaged over the hard pixels."""
        safe_target, pixel_weights = _pixel_weights(target, self.ignore_index, self.class_weights)
        log_pt = _true_class_log_prob(logits, safe_target)
        return _weighted_mean(-log_pt, pixel_weights * self._select(log_pt, target != self.ignore_index))


class LovaszSoftmaxLoss(nn.Module):
    """smp's multiclass Lovász-softmax over the whole batch, returning a scalar 0 on an all-ignored batch."""

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.lovasz = LovaszLoss(mode="multiclass", per_image=False, ignore_index=ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Lovász extension of the Jaccard loss, averaged over classes present in the labelled pixels."""
        loss = self.lovasz(logits, target)
        return loss if loss.ndim == 0 else logits.sum() * 0.0


@register_loss("ce")
def _ce(
    *,
    num_classes: int,
    ignore_index: int,
    class_weights: ClassWeights = None,
    label_smoothing: float = 0.0,
    **_: object,
) -> nn.Module:
    return CrossEntropyLoss(ignore_index, _class_weight_tensor(class_weights, num_classes), label_smoothing)


@register_loss("dice")
def _dice(*, ignore_index: int, **_: object) -> nn.Module:
    return DiceLoss(mode="multiclass", ignore_index=ignore_index)


@register_loss("jaccard")
def _jaccard(*, ignore_index: int, **_: object) -> nn.Module:
    return JaccardLoss(mode="multiclass", ignore_index=ignore_index)


@register_loss("focal")
def _focal(
    *,
    num_classes: int,
    ignore_index: int,
    class_weights: ClassWeights = None,
    focal_gamma: float = 2.0,
    **_: object,
) -> nn.Module:
    return FocalLoss(ignore_index, focal_gamma, _class_weight_tensor(class_weights, num_classes))


@register_loss("lovasz")
def _lovasz(*, ignore_index: int, **_: object) -> nn.Module:
    return LovaszSoftmaxLoss(ignore_index)


@register_loss("ohem")
def _ohem(
    *,
    num_classes: int,
    ignore_index: int,
    class_weights: ClassWeights = None,
    ohem_thresh: float = 0.7,
    ohem_min_kept: int = 100_000,
    **_: object,
) -> nn.Module:
    return OhemCrossEntropyLoss(
        ignore_index, ohem_thresh, ohem_min_kept, _class_weight_tensor(class_weights, num_classes)
    )
