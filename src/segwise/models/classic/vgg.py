"""The VGG16 layout SegNet's encoder and FCN-8s's backbone share: convolutions per stage and stage widths."""

from __future__ import annotations

from torch import nn

VGG16_DEPTHS = (2, 2, 3, 3, 3)  # 3×3 convolutions per stage, each stage ending in a 2×2 max-pool
VGG16_WIDTHS = (1, 2, 4, 8, 8)  # × base_channels: VGG16's 64, 128, 256, 512, 512


def vgg16_stages(base_channels: int) -> list[tuple[int, int]]:
    """(depth, width) of each of VGG16's five stages at `base_channels` (64 in VGG16)."""
    return [(depth, base_channels * width) for depth, width in zip(VGG16_DEPTHS, VGG16_WIDTHS)]


def he_init(*parts: nn.Module, mode: str = "fan_out") -> None:
    """He initialisation (`mode` fan_out, or fan_in as U-Net's paper) of every convolution in `parts`, with zero
    biases: VGG nets' from-scratch init."""
    for module in (m for part in parts for m in part.modules()):
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
