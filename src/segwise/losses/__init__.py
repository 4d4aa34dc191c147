"""Losses by name (``build_loss("ce + 0.5*dice")``); each task's losses live in a module of their own here."""

from segwise.losses.registry import (LOSSES, WeightedLoss, build_loss, check_loss_options, loss_options,
                                     parse_loss_spec, register_loss)
from segwise.losses.pixel import CrossEntropyLoss, FocalLoss, LovaszSoftmaxLoss, OhemCrossEntropyLoss
from segwise.losses import factseg  # noqa: F401  (registers 'som')
from segwise.losses import trimap  # noqa: F401  (registers nfl, dt)

__all__ = [
    "LOSSES",
    "CrossEntropyLoss",
    "FocalLoss",
    "LovaszSoftmaxLoss",
    "OhemCrossEntropyLoss",
    "WeightedLoss",
    "build_loss",
    "check_loss_options",
    "loss_options",
    "parse_loss_spec",
    "register_loss",
]
