"""Optimizer by name, backbone LR factor (pytorch-segmentation's differential LR) and the LR schedules."""

from __future__ import annotations

import pytest
import torch

from segwise.config import OptimizerConfig, SchedulerConfig
from segwise.engine.optim import build_optimizer, build_scheduler
from segwise.errors import ConfigError
from segwise.models import create_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return create_model("unet", encoder="resnet18", classes=3)


def _lrs(optimizer: torch.optim.Optimizer, scheduler: dict, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[-1]["lr"])
        optimizer.step()
        scheduler["scheduler"].step()
    return out


def test_any_torch_optimizer_by_name_and_backbone_factor(model) -> None:
    optimizer = build_optimizer(model, OptimizerConfig(name="sgd", lr=0.01, backbone_lr_factor=0.1,
                                                       args={"momentum": 0.9}))
    assert isinstance(optimizer, torch.optim.SGD)
    backbone, head = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(0.001) and head["lr"] == pytest.approx(0.01)
    encoder_params = {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in backbone["params"]} == encoder_params
    assert len(backbone["params"]) + len(head["params"]) == len(list(model.parameters()))


def test_unknown_optimizer_and_bad_args(model) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'AdamW'"):
        build_optimizer(model, OptimizerConfig(name="adamww"))
    with pytest.raises(ConfigError, match="optimizer.args"):
        build_optimizer(model, OptimizerConfig(name="Adam", args={"nonsense": 1}))


def test_poly_with_warmup_matches_the_formula(model) -> None:
    optimizer = build_optimizer(model, OptimizerConfig(name="SGD", lr=1.0, weight_decay=0))
    scheduler = build_scheduler(optimizer, SchedulerConfig(name="poly", warmup_steps=4, power=0.9), total_steps=20)
    lrs = _lrs(optimizer, scheduler, 20)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[10] == pytest.approx((1 - 6 / 16) ** 0.9)
    assert scheduler["interval"] == "step"


def test_cosine_onecycle_step_plateau(model) -> None:
    optimizer = build_optimizer(model, OptimizerConfig(name="SGD", lr=1.0, weight_decay=0))
    cosine = _lrs(optimizer, build_scheduler(optimizer, SchedulerConfig(name="cosine", min_lr_ratio=0.1), 10), 10)
    assert cosine[0] == pytest.approx(1.0) and cosine[5] == pytest.approx(0.1 + 0.9 * 0.5)
    optimizer = build_optimizer(model, OptimizerConfig(name="SGD", lr=1.0, weight_decay=0, args={"momentum": 0.9}))
    onecycle = _lrs(optimizer, build_scheduler(optimizer, SchedulerConfig(name="onecycle"), 100), 100)
    assert onecycle[0] == pytest.approx(1 / 25) and max(onecycle) == pytest.approx(1.0, rel=1e-3)
    assert onecycle.index(max(onecycle)) in (29, 30)
    step = build_scheduler(optimizer, SchedulerConfig(name="step", step_epochs=3), 100)
    assert step["interval"] == "epoch" and step["scheduler"].step_size == 3
    plateau = build_scheduler(optimizer, SchedulerConfig(name="plateau"), 100)
    assert plateau["monitor"] == "val/loss"
