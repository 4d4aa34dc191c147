"""SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017): VGG16-BN encoder whose max-pooling indices drive the
non-learned max-unpooling of a mirrored decoder.

As in the paper's Caffe model: 13 encoder convs (stages of 2, 2, 3, 3, 3; VGG16 without its fully connected
layers), each stage ends in a 2×2 max-pool that keeps its argmax indices; each decoder stage unpools with the
indices of its encoder stage and applies as many 3×3 conv-BN-ReLU layers; the last conv (3×3) gives the class
logits. Convs are He-initialised, as in the paper. Differences: channel widths scale with `base_channels`
(paper 64); there is no option of VGG ImageNet weights for the encoder.
"""

from __future__ import annotations

from torch import Tensor, nn

from segwise.models.classic.vgg import he_init, vgg16_stages
from segwise.models.registry import register_model

INPUT_STRIDE = 32


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Size-keeping conv (no bias: BN follows), BN, ReLU: the unit of SegNet, U-Net and PSPNet's heads."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class SegNet(nn.Module):
    """VGG16-BN encoder → five (max-unpool by index, convs) decoder stages → 3×3 classifier conv."""

    input_stride = INPUT_STRIDE

    def __init__(self, in_channels: int = 3, classes: int = 2, base_channels: int = 64) -> None:
        super().__init__()
        stages = vgg16_stages(base_channels)
        widths = [width for _, width in stages]
        self.encoder = nn.ModuleList()
        previous = in_channels
        for depth, width in stages:
            self.encoder.append(nn.Sequential(*(conv_bn_relu(previous if i == 0 else width, width)
                                                for i in range(depth))))
            previous = width
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        # Decoder stage k mirrors encoder stage k: `depth` convs at its width, the last narrowing to stage k−1's.
        self.decoder = nn.ModuleList()
        for k, (depth, width) in enumerate(stages):
            out = widths[k - 1] if k else width
            layers = [conv_bn_relu(width, width) for _ in range(depth - 1)]
            layers.append(conv_bn_relu(width, out) if k else nn.Conv2d(width, classes, 3, padding=1))
            self.decoder.append(nn.Sequential(*layers))
        he_init(self)  # as the paper trains from scratch with it

    def forward(self, x: Tensor) -> Tensor:
        """N×C×H×W (H, W multiples of 32) → N×classes×H×W logits."""
        indices = []
        for stage in self.encoder:
            pooled = self.pool(stage(x))
            x = pooled[0]
            indices.append(pooled[1])
        for stage, index in zip(reversed(self.decoder), reversed(indices)):
            x = stage(self.unpool(x, index))
        return x


@register_model("segnet", family="classic")
def segnet(in_channels: int = 3, classes: int = 2, base_channels: int = 64) -> SegNet:
    """SegNet (VGG16-BN encoder, index unpooling decoder); `base_channels` 64 as in the paper."""
    return SegNet(in_channels, classes, base_channels)
