"""SegResNet (pytorch-segmentation's model zoo): SegNet's idea on a ResNet — a decoder that mirrors the encoder's
stages block for block, and max-unpooling by the indices of the stem's max-pool.

As in pytorch-segmentation's SegResNet: each decoder stage, deepest first, repeats the bottleneck blocks of its
encoder stage but one (1×1 conv to a quarter of the width, 3×3 conv, 1×1 conv back, BN after each, identity
shortcut, ReLU) and ends in a block whose 3×3 conv is a 2×2 stride-2 transposed conv, with a transposed-conv
shortcut, going to the next stage's width at twice the size; the res-2 stage ends in a block to the stem's width
(1×1 conv shortcut) at stride 4, which is max-unpooled by the stem max-pool's indices to stride 2; a 2×2 stride-2
transposed conv and a 3×3 conv give the class logits at input resolution.
Differences: the backbone is any smp or timm (`tu-`) ResNet, ResNet-50 unless `encoder` names another (the only
one pytorch-segmentation builds), randomly initialised unless `encoder_weights` is given; the decoder's blocks
are bottlenecks whatever the encoder's (ResNet-18/34 have basic blocks); no cropping: inputs are multiples of 32.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from segwise.errors import ModelError
from segwise.models.smp_bridge import build_encoder, load_encoder_weights
from segwise.models.registry import register_model

INPUT_STRIDE = 32
DEFAULT_ENCODER = "resnet50"
RESNET_PARTS = ("maxpool", "layer1", "layer2", "layer3", "layer4")


def resnet_body(encoder: nn.Module, name: str) -> nn.Module:
    """The module that holds a ResNet's stem max-pool and stages: smp's ResNet encoders are ResNets themselves,
    timm's (`tu-resnet*`) hold theirs in `.model`."""
    for body in (encoder, getattr(encoder, "model", None)):
        if body is not None and all(isinstance(getattr(body, part, None), nn.Module) for part in RESNET_PARTS):
            return body
    raise ModelError(f"segresnet mirrors a ResNet's stages; encoder {name!r} has no max-pool stem and layer1 … "
                     "layer4: use an smp ResNet (resnet18/34/50/101, resnext50_32x4d, ...) or a timm one (tu-resnet50)")


class Bottleneck(nn.Module):
    """1×1 conv to a quarter of the width, 3×3 conv (`upsample`: 2×2 stride-2 transposed conv), 1×1 conv to
    `out_channels`, BN after each, plus the shortcut (identity; a 1×1 conv or, upsampling, a transposed conv, with
    BN, when the width or size changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int | None = None, upsample: bool = False) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        mid = max(in_channels // 4, 1)
        middle = (nn.ConvTranspose2d(mid, mid, 2, stride=2, bias=False) if upsample
                  else nn.Conv2d(mid, mid, 3, padding=1, bias=False))
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            middle, nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
        )
        if upsample:
            shortcut = [nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False)]
        elif in_channels != out_channels:
            shortcut = [nn.Conv2d(in_channels, out_channels, 1, bias=False)]
        else:
            shortcut = []
        self.shortcut = nn.Sequential(*shortcut, nn.BatchNorm2d(out_channels)) if shortcut else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


class SegResNet(nn.Module):
    """ResNet encoder → mirrored bottleneck decoder (stride 32 → 4) → unpool by the stem's indices → ×2 → classes."""

    input_stride = INPUT_STRIDE

    def __init__(self, in_channels: int = 3, classes: int = 2, encoder: str | None = None,
                 encoder_weights: str | None = None) -> None:
        super().__init__()
        name = encoder or DEFAULT_ENCODER
        self.encoder = build_encoder(name, in_channels, encoder_weights)
        body = resnet_body(self.encoder, name)
        pool = body.maxpool  # its indices are recomputed on the stem's features: the encoder returns none
        self.stem_pool = (pool.kernel_size, pool.stride, pool.padding)
        stem, *widths = self.encoder.out_channels[1:]  # stride 2; res-2 … res-5
        depths = [len(getattr(body, f"layer{k}")) for k in range(1, 5)]
        stages = []
        for k in reversed(range(4)):
            blocks = [Bottleneck(widths[k]) for _ in range(depths[k] - 1)]
            blocks.append(Bottleneck(widths[k], widths[k - 1] if k else stem, upsample=k > 0))
            stages.append(nn.Sequential(*blocks))
        self.decoder = nn.Sequential(*stages)
        self.classifier = nn.Sequential(nn.ConvTranspose2d(stem, stem, 2, stride=2, bias=False),
                                        nn.Conv2d(stem, classes, 3, padding=1))
        load_encoder_weights(self, encoder_weights)

    def forward(self, x: Tensor) -> Tensor:
        """N×C×H×W (H, W multiples of 32) → N×classes×H×W logits."""
        features = self.encoder(x)
        _, indices = F.max_pool2d(features[1], *self.stem_pool, return_indices=True)
        out = F.max_unpool2d(self.decoder(features[-1]), indices, 2, 2)  # to features[1]'s size: inputs are ×32
        return self.classifier(out)


@register_model("segresnet", family="classic", uses_encoder=True)
def segresnet(in_channels: int = 3, classes: int = 2, encoder: str | None = None,
              encoder_weights: str | None = None) -> SegResNet:
    """SegResNet: a mirrored decoder with stem-index unpooling on a ResNet-50 (or another smp/timm ResNet)."""
    return SegResNet(in_channels, classes, encoder, encoder_weights)
