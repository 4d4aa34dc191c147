"""FCN-8s (Long, Shelhamer & Darrell, CVPR 2015): VGG16 with its fully connected layers as convolutions, class
scores from fc7, pool4 and pool3 fused by learnable ×2, ×2 and ×8 upsampling.

As in the paper: VGG16 (no BatchNorm), fc6 a 7×7 conv and fc7 a 1×1 conv with ReLU and dropout 0.5, 1×1 score
layers, skip score layers initialised to zero, transposed convolutions initialised to bilinear interpolation.
Differences: no 100-pixel input padding and crop offsets — convolutions are 'same'-padded (fc6 pads 3) and the
transposed convolutions are padded to exact ×2/×8, so inputs that are multiples of 32 align without cropping;
the upsampling filters stay learnable (the paper froze the final ×8 one); widths scale with `base_channels`
(paper 64) and `fc_channels` (paper 4096); VGG layers are He-initialised (the paper starts from ImageNet
VGG16, which segwise does not download).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from segwise.models.classic.vgg import he_init, vgg16_stages
from segwise.models.registry import register_model

INPUT_STRIDE = 32


def bilinear_kernel(channels: int, kernel_size: int) -> Tensor:
    """ConvTranspose2d weight (channels×channels×k×k) that upsamples each channel bilinearly by k/2 (FCN's init)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(kernel_size, dtype=torch.float32) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = ramp[:, None] * ramp[None, :]
    return weight


def upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Exact ×factor transposed convolution (kernel 2·factor, padding factor/2), initialised bilinear."""
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, 2 * factor))
    return layer


def vgg_stage(in_channels: int, out_channels: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                   nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


def zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class FCN8s(nn.Module):
    """VGG16 → fc6/fc7 convs → score_fr; ×2 + score_pool4; ×2 + score_pool3; ×8 to the input size."""

    input_stride = INPUT_STRIDE

    def __init__(self, in_channels: int = 3, classes: int = 2, base_channels: int = 64,
                 fc_channels: int = 4096) -> None:
        super().__init__()
        widths = [width for _, width in vgg16_stages(base_channels)]
        stages, previous = [], in_channels
        for depth, width in vgg16_stages(base_channels):
            stages.append(vgg_stage(previous, width, depth))
            previous = width
        self.to_pool3 = nn.Sequential(*stages[:3])
        self.to_pool4 = stages[3]
        self.to_pool5 = stages[4]
        self.fc = nn.Sequential(
            nn.Conv2d(widths[4], fc_channels, 7, padding=3), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout(0.5),
        )
        self.score_fr = nn.Conv2d(fc_channels, classes, 1)
        self.score_pool4 = zero_conv(widths[3], classes)
        self.score_pool3 = zero_conv(widths[2], classes)
        self.upscore2 = upsampler(classes, 2)
        self.upscore_pool4 = upsampler(classes, 2)
        self.upscore8 = upsampler(classes, 8)
        he_init(self.to_pool3, self.to_pool4, self.to_pool5, self.fc)  # no ImageNet VGG to start from

    def forward(self, x: Tensor) -> Tensor:
        """N×C×H×W (H, W multiples of 32) → N×classes×H×W logits."""
        pool3 = self.to_pool3(x)
        pool4 = self.to_pool4(pool3)
        score = self.upscore2(self.score_fr(self.fc(self.to_pool5(pool4))))
        score = self.upscore_pool4(score + self.score_pool4(pool4))
        return self.upscore8(score + self.score_pool3(pool3))


@register_model("fcn8", family="classic")
def fcn8(in_channels: int = 3, classes: int = 2, base_channels: int = 64, fc_channels: int = 4096) -> FCN8s:
    """FCN-8s on VGG16; `base_channels` 64 and `fc_channels` 4096 as in the paper."""
    return FCN8s(in_channels, classes, base_channels, fc_channels)
