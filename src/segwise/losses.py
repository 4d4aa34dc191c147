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

import difflib
import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss, JaccardLoss, LovaszLoss
from torch import Tensor, nn

from segwise.errors import ConfigError

__all__ = [
    "LOSSES",
    "CrossEntropyLoss",
    "FocalLoss",
    "LovaszSoftmaxLoss",
    "OhemCrossEntropyLoss",
    "WeightedLoss",
    "build_loss",
    "parse_loss_spec",
    "register_loss",
]

LossFactory = Callable[..., nn.Module]
ClassWeights = Sequence[float] | Tensor | None

LOSSES: dict[str, LossFactory] = {}
"""Loss name → factory called with keyword options (``num_classes``, ``ignore_index``, ``class_weights``, ...)."""

_NAME = r"[a-z_][a-z0-9_]*"
_TERM = re.compile(
    rf"\s*(?:(?P<weight>(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*\*\s*)?(?P<name>{_NAME})\s*", re.IGNORECASE
)
_TERM_SPLIT = re.compile(r"(?<![0-9][eE])\+")


def register_loss(name: str) -> Callable[[LossFactory], LossFactory]:
    """Add a loss factory to ``LOSSES`` under ``name`` so that loss specs can select it."""
    if not re.fullmatch(_NAME, name):
        raise ValueError(f"loss name {name!r} must be lower-case letters, digits and '_' (not starting with a digit)")

    def decorator(factory: LossFactory) -> LossFactory:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered by {LOSSES[name]!r}")
        LOSSES[name] = factory
        return factory

    return decorator


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


def _spec_error(spec: str, problem: str) -> ConfigError:
    return ConfigError(
        f"loss.name: {problem} in {spec!r}; write terms as 'weight*name' joined by '+', e.g. 'ce + 0.5*dice'"
    )


def parse_loss_spec(spec: str) -> list[tuple[float, str]]:
    """Parse ``"ce + 0.5*dice"`` into ``[(1.0, "ce"), (0.5, "dice")]``, naming the bad term on error."""
    known = ", ".join(sorted(LOSSES))
    terms: list[tuple[float, str]] = []
    for raw in _TERM_SPLIT.split(spec):
        if not raw.strip():
            raise _spec_error(spec, "empty term")
        match = _TERM.fullmatch(raw)
        if match is None:
            raise _spec_error(spec, f"cannot parse term {raw.strip()!r}")
        name = match["name"].lower()
        weight = float(match["weight"]) if match["weight"] else 1.0
        if name not in LOSSES:
            close = difflib.get_close_matches(name, LOSSES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            raise ConfigError(f"loss.name: unknown loss {name!r} in {spec!r}{hint} Known: {known}")
        if weight <= 0:
            raise ConfigError(
                f"loss.name: weight of {name!r} in {spec!r} is {weight:g}; use a weight > 0 or drop the term"
            )
        if any(name == seen for _, seen in terms):
            raise ConfigError(f"loss.name: {name!r} appears twice in {spec!r}; write it once with the summed weight")
        terms.append((weight, name))
    return terms


class WeightedLoss(nn.Module):
    """Weighted sum of named losses, computed in float32 outside autocast; keeps detached per-term values."""

    def __init__(self, terms: Sequence[tuple[float, str, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("WeightedLoss needs at least one (weight, name, loss) term")
        self.terms: list[tuple[float, str]] = [(weight, name) for weight, name, _ in terms]
        self.losses = nn.ModuleDict({name: loss for _, name, loss in terms})
        self.last_values: dict[str, Tensor] = {}

    @property
    def spec(self) -> str:
        """Canonical spec string, e.g. ``"1*ce + 0.5*dice"``."""
        return " + ".join(f"{weight:g}*{name}" for weight, name in self.terms)

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return ``Σ weight·loss`` and store each unweighted term (detached, on device) in ``last_values``."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            values = {name: self.losses[name](logits, target) for _, name in self.terms}
            total = sum(weight * values[name] for weight, name in self.terms)
        self.last_values = {name: value.detach() for name, value in values.items()}
        return total


def build_loss(spec: str, num_classes: int, ignore_index: int = 255, **options) -> WeightedLoss:
    """Build the loss described by ``spec`` (e.g. ``"ce + 0.5*dice"``); ``options`` go to every term's factory."""
    if num_classes < 2:
        raise ConfigError(
            f"num_classes: got {num_classes}; losses need K >= 2 softmax classes (a binary problem uses K = 2)"
        )
    terms = parse_loss_spec(spec)
    return WeightedLoss(
        [
            (weight, name, LOSSES[name](num_classes=num_classes, ignore_index=ignore_index, **options))
            for weight, name in terms
        ]
    )
