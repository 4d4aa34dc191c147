"""Trimap losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segwise.errors import ConfigError
from segwise.losses import build_loss
from segwise.losses.trimap import NormalizedFocalLoss, UnknownDistanceLoss, unknown_distance


def _logits_for(probabilities: list[list[float]]) -> torch.Tensor:
    """1×K×1×N logits whose softmax over K is the given per-pixel distributions."""
    return torch.tensor(probabilities).log().T.reshape(1, -1, 1, len(probabilities))


def test_normalized_focal_loss_by_hand() -> None:
    probs = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6]]
    target = torch.tensor([[[0, 1, 2, 255]]])  # the last pixel is ignored
    p = [0.7, 0.6, 0.25]
    w = [(1 - q) ** 2 for q in p]
    expected = sum(wi * -math.log(q) for wi, q in zip(w, p)) / sum(w)
    loss = NormalizedFocalLoss(ignore_index=255)(_logits_for(probs), target)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_normalized_focal_loss_with_gamma_zero_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 5, 5), torch.randint(0, 3, (2, 5, 5))
    assert NormalizedFocalLoss(gamma=0)(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-5)


def test_unknown_distance_is_the_euclidean_distance_transform() -> None:
    target = torch.tensor([[[0, 1, 1, 1, 1, 1, 2]]])
    assert unknown_distance(target).tolist() == [[[0, 1, 2, 3, 2, 1, 0]]]
    assert unknown_distance(torch.zeros(1, 2, 2, dtype=torch.long)).sum() == 0


def test_distance_transform_loss_by_hand() -> None:
    probs = [[0.5, 0.5, 0.0], [0.1, 0.8, 0.1], [0.0, 0.25, 0.75], [0.6, 0.4, 0.0], [1 / 3, 1 / 3, 1 / 3]]
    probs = [[max(q, 1e-9) for q in row] for row in probs]
    target = torch.tensor([[[0, 1, 1, 1, 2]], [[0, 0, 0, 0, 0]]])  # second image: no unknown pixel → 0
    logits = torch.cat([_logits_for(probs), _logits_for(probs)])
    distance = [0, 1, 2, 1, 0]
    first = sum((1 - row[1]) * d for row, d in zip(probs, distance)) / 5
    loss = UnknownDistanceLoss()(logits, target)
    assert loss.item() == pytest.approx((first + 0.0) / 2, rel=1e-5)


def test_combined_spec_is_the_weighted_sum() -> None:
    torch.manual_seed(1)
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    combined = build_loss("nfl + 0.1*dt", num_classes=3)
    total = combined(logits, target)
    assert total.item() == pytest.approx(NormalizedFocalLoss()(logits, target).item()
                                         + 0.1 * UnknownDistanceLoss()(logits, target).item(), rel=1e-5)
    assert set(combined.last_values) == {"nfl", "dt"}


def test_losses_train_toward_the_target() -> None:
    """A gradient step on the logits lowers both losses (the normaliser is not detached, as in the trimap ViT)."""
    torch.manual_seed(2)
    logits = torch.randn(1, 3, 6, 6, requires_grad=True)
    target = torch.randint(0, 3, (1, 6, 6))
    loss = build_loss("nfl + 0.1*dt", num_classes=3)
    before = loss(logits, target)
    before.backward()
    with torch.no_grad():
        after = loss(logits - 1.0 * logits.grad, target)
    assert after < before


def test_dt_needs_three_classes() -> None:
    with pytest.raises(ConfigError, match="3 trimap classes"):
        build_loss("dt", num_classes=2)
