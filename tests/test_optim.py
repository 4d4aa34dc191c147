"""Optimizer by name, backbone LR factor (pytorch-segmentation's differential LR) and the LR schedules."""

from __future__ import annotations

import pytest
import torch

from segwise.config import OptimizerConfig, SchedulerConfig, load_config
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


def _bn(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_freeze_backbone_and_freeze_bn_change_only_what_they_should():
    """Two SGD steps through the task: a frozen encoder and frozen BatchNorms (statistics and affine) stay
    bit-identical; the decoder learns."""
    from segwise.engine.module import SegmentationTask
    from segwise.models.spec import ModelSpec

    torch.manual_seed(0)
    config = load_config(overrides=["model.freeze_backbone=true", "model.freeze_bn=true",
                                     "optimizer.backbone_lr_factor=0.1"])
    model = create_model("unet", encoder="resnet18", classes=3, decoder_channels=[16, 8, 8, 8, 8])
    spec = ModelSpec(name="unet", encoder="resnet18", args={}, in_channels=3, num_classes=3,
                     class_names=["a", "b", "c"], palette=[[0, 0, 0]] * 3)
    task = SegmentationTask(model, spec, config, [])
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    optimizer = build_optimizer(task.model, config.optimizer)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in model.encoder.parameters()}
    task.train()
    assert all(not m.training for m in _bn(model)) and model.decoder.training
    for _ in range(2):
        loss = task.loss(task(torch.randn(2, 3, 64, 64)), torch.randint(0, 3, (2, 64, 64)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and not any(n.startswith("encoder.") for n in changed)
    bn_names = {f"{name}.{key}" for name, m in model.named_modules() if m in _bn(model)
                for key in ("weight", "bias", "running_mean", "running_var")}
    assert not changed & bn_names


def test_freeze_backbone_needs_a_backbone():
    from segwise.engine.module import freeze

    with pytest.raises(ConfigError, match="model.freeze_backbone: ENet has no separate backbone"):
        freeze(create_model("enet", classes=2), backbone=True, batchnorm=False)
