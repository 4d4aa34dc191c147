"""Layer-wise LR decay for ViT fine-tuning (`optimizer.layer_decay`): one parameter group per layer of a model that
lists its blocks, the learning rates exact; a clear error for a model without layers to decay."""

from __future__ import annotations

import pytest
import torch

from segwise.config import OptimizerConfig, SchedulerConfig, load_config
from segwise.engine.optim import build_optimizer, build_scheduler
from segwise.errors import ConfigError
from segwise.models import create_model

LR, DECAY, DEPTH = 1e-3, 0.75, 3


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    return create_model("trimap_vit", in_channels=4, classes=3, size="tiny", patch_size=4, img_size=32, depth=DEPTH,
                        head_channels=16, upsample="x1")


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_each_block_gets_its_decayed_lr_and_every_parameter_one_group(vit) -> None:
    optimizer = build_optimizer(vit, OptimizerConfig(name="AdamW", lr=LR, layer_decay=DECAY))
    groups = optimizer.param_groups
    assert [g["name"] for g in groups] == ["embed", "block0", "block1", "block2", "head"]
    # block i of L gets lr × decay^(L − i); the embeddings one step lower; neck, head and final norm the full lr
    expected = [LR * DECAY ** 4, LR * DECAY ** 3, LR * DECAY ** 2, LR * DECAY ** 1, LR]
    assert [g["lr"] for g in groups] == pytest.approx(expected, rel=1e-12, abs=0)
    assert _ids(groups[0]["params"]) == _ids([*vit.vit.patch_embed.parameters(), *vit.mask_embed.parameters(),
                                              vit.vit.pos_embed, vit.vit.cls_token])
    for i in range(DEPTH):
        assert _ids(groups[i + 1]["params"]) == _ids(vit.vit.blocks[i].parameters())
    head = _ids(groups[-1]["params"])
    assert _ids(vit.head.parameters()) | _ids(vit.neck.parameters()) | _ids(vit.vit.norm.parameters()) == head
    counted = [id(p) for g in groups for p in g["params"]]
    assert len(counted) == len(set(counted)) == len(list(vit.parameters()))


def test_schedules_scale_every_group_and_frozen_layers_drop_out(vit) -> None:
    optimizer = build_optimizer(vit, OptimizerConfig(name="SGD", lr=1.0, weight_decay=0, layer_decay=0.5))
    scheduler = build_scheduler(optimizer, SchedulerConfig(name="cosine"), total_steps=4)["scheduler"]
    optimizer.step()
    scheduler.step()
    factor = optimizer.param_groups[-1]["lr"]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([factor * 0.5 ** k for k in (4, 3, 2, 1, 0)])
    for p in vit.mask_embed.parameters():
        p.requires_grad_(False)
    try:
        groups = build_optimizer(vit, OptimizerConfig(lr=1.0, layer_decay=0.5)).param_groups
        assert not _ids(groups[0]["params"]) & _ids(vit.mask_embed.parameters())
        assert groups[0]["lr"] == 0.5 ** 4
    finally:
        for p in vit.mask_embed.parameters():
            p.requires_grad_(True)


def test_a_model_without_layers_and_bad_values_are_refused(vit) -> None:
    with pytest.raises(ConfigError, match=r"optimizer.layer_decay=0.75: Unet has no layers to decay .*trimap_vit"):
        build_optimizer(create_model("unet", encoder="resnet18", classes=2), OptimizerConfig(layer_decay=0.75))
    with pytest.raises(ConfigError, match="set only one of them"):
        build_optimizer(vit, OptimizerConfig(layer_decay=0.75, backbone_lr_factor=0.1))
    for value in (0, 1.5):
        with pytest.raises(ConfigError, match="optimizer.layer_decay"):
            load_config(overrides=[f"optimizer.layer_decay={value}"])
