"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015): the plain encoder-decoder with skip connections, trained from
scratch; smp's `unet` is the variant on a pretrained backbone.

As in the paper: four down steps, each a double 3×3 conv block then a 2×2 max-pool, widths doubling from
`base_channels` (paper 64) to 16× at the bottom block; four up steps, each a 2×2 stride-2 transposed conv halving
the width, concatenated with the encoder block of the same size (the skip), and a double 3×3 conv block; a final
1×1 conv gives the class logits. Convolutions are He-initialised (fan-in, the paper's √(2/N)).
Differences: convolutions are zero-padded, so the output has the input's size without cropping (the paper's are
unpadded: a 572² input gives 388² logits), and each is followed by BatchNorm (as in pytorch-segmentation's UNet;
the paper predates it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from segwise.models.classic.segnet import conv_bn_relu
from segwise.models.classic.vgg import he_init
from segwise.models.registry import register_model

DEPTH = 4  # down steps, as in the paper
INPUT_STRIDE = 2**DEPTH


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels))


class UpStep(nn.Module):
    """×2 transposed conv halving the width, the skip concatenated, then a double conv block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
        self.conv = double_conv(in_channels // 2 + out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """Double conv blocks at widths base·(1, 2, 4, 8, 16), max-pool between them; mirrored up steps with skips."""

    input_stride = INPUT_STRIDE

    def __init__(self, in_channels: int = 3, classes: int = 2, base_channels: int = 64) -> None:
        super().__init__()
        widths = [base_channels * 2**level for level in range(DEPTH + 1)]
        self.down = nn.ModuleList(double_conv(a, b) for a, b in zip([in_channels, *widths], widths))
        self.pool = nn.MaxPool2d(2, 2)
        self.up = nn.ModuleList(UpStep(a, b) for a, b in zip(widths[:0:-1], widths[-2::-1]))
        self.classifier = nn.Conv2d(widths[0], classes, 1)
        he_init(self, mode="fan_in")

    def forward(self, x: Tensor) -> Tensor:
        """N×C×H×W (H, W multiples of 16) → N×classes×H×W logits."""
        skips = []
        for index, block in enumerate(self.down):
            x = block(self.pool(x) if index else x)
            skips.append(x)
        x = skips.pop()
        for step in self.up:
            x = step(x, skips.pop())
        return self.classifier(x)


@register_model("unet_classic", family="classic")
def unet_classic(in_channels: int = 3, classes: int = 2, base_channels: int = 64) -> UNet:
    """The original U-Net, no pretrained backbone; `base_channels` 64 as in the paper."""
    return UNet(in_channels, classes, base_channels)
