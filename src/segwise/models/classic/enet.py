"""ENet (Paszke, Chaurasia, Kim & Culurciello, arXiv:1606.02147, 2016): a small real-time encoder-decoder of
ResNet-style bottlenecks with early downsampling, dilated and asymmetric convolutions and max-unpooling.

As in the paper's Table 1: initial block (3×3 stride-2 conv ‖ 2×2 max-pool, concatenated to 16 channels);
stage 1: downsampling bottleneck to 64 and 4 regular ones (spatial dropout 0.01); stages 2 and 3 (128 channels,
dropout 0.1): [downsampling, only in stage 2], regular, dilated 2, asymmetric 5, dilated 4, regular, dilated 8,
asymmetric 5, dilated 16; stage 4: upsampling to 64 and 2 regular; stage 5: upsampling to 16 and 1 regular; a
final transposed convolution to the classes at input resolution. Bottlenecks: 1×1 projection (2×2 stride 2 when
downsampling) to a quarter of the channels, the main conv, 1×1 expansion, BN after each and PReLU; the shortcut
max-pools with indices and zero-pads channels when downsampling, and 1×1-conv-BN plus max-unpooling by the
matching indices when upsampling. Differences: widths scale with `base_channels` (paper 16); with
`in_channels` ≥ `base_channels` the initial conv gets `base_channels` filters, so the block gives
`base_channels + in_channels` channels (the paper assumes RGB, 13 + 3 = 16).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from segwise.models.registry import register_model

INPUT_STRIDE = 8
KINDS = ("regular", "dilated", "asymmetric", "downsampling", "upsampling")


def bn_prelu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.PReLU(channels)]


class InitialBlock(nn.Module):
    """3×3 stride-2 conv and 2×2 max-pool of the input, concatenated, then BN + PReLU."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        conv_channels = channels - in_channels if in_channels < channels else channels
        self.conv = nn.Conv2d(in_channels, conv_channels, 3, stride=2, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2, 2)
        self.out_channels = conv_channels + in_channels
        self.act = nn.Sequential(*bn_prelu(self.out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.act(torch.cat([self.conv(x), self.pool(x)], dim=1))


class Bottleneck(nn.Module):
    """ENet bottleneck of one `kind` (see KINDS); `dilation` for 'dilated', kernel 5 (5×1 then 1×5) for
    'asymmetric'. Downsampling returns (output, pooling indices); upsampling takes (input, indices)."""

    def __init__(self, in_channels: int, out_channels: int | None = None, kind: str = "regular",
                 dilation: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown ENet bottleneck kind {kind!r}; one of {KINDS}")
        out_channels = out_channels or in_channels
        internal = max(in_channels // 4, 1)
        self.kind = kind
        if kind == "downsampling":
            project = nn.Conv2d(in_channels, internal, 2, stride=2, bias=False)
        else:
            project = nn.Conv2d(in_channels, internal, 1, bias=False)
        if kind == "asymmetric":
            main: list[nn.Module] = [nn.Conv2d(internal, internal, (5, 1), padding=(2, 0), bias=False),
                                     nn.Conv2d(internal, internal, (1, 5), padding=(0, 2), bias=False)]
        elif kind == "upsampling":
            main = [nn.ConvTranspose2d(internal, internal, 3, stride=2, padding=1, output_padding=1, bias=False)]
        else:
            main = [nn.Conv2d(internal, internal, 3, padding=dilation, dilation=dilation, bias=False)]
        self.branch = nn.Sequential(
            project, *bn_prelu(internal), *main, *bn_prelu(internal),
            nn.Conv2d(internal, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.Dropout2d(dropout),
        )
        self.pad_channels = out_channels - in_channels  # downsampling: zero channels appended to the shortcut
        if kind == "downsampling":
            self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        if kind == "upsampling":
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels))
            self.unpool = nn.MaxUnpool2d(2, 2)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: Tensor, indices: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        if self.kind == "downsampling":
            pooled = self.pool(x)
            shortcut = F.pad(pooled[0], (0, 0, 0, 0, 0, self.pad_channels))
            return self.act(shortcut + self.branch(x)), pooled[1]
        if self.kind == "upsampling":
            shortcut = self.unpool(self.shortcut(x), indices)
            return self.act(shortcut + self.branch(x))
        return self.act(x + self.branch(x))


def _stage_body(channels: int, dropout: float) -> list[Bottleneck]:
    """The eight non-downsampling bottlenecks of stages 2 and 3."""
    plan = [("regular", 1), ("dilated", 2), ("asymmetric", 1), ("dilated", 4),
            ("regular", 1), ("dilated", 8), ("asymmetric", 1), ("dilated", 16)]
    return [Bottleneck(channels, kind=kind, dilation=d, dropout=dropout) for kind, d in plan]


class ENet(nn.Module):
    """Initial block → 5 bottleneck stages (2 downsampling, 2 upsampling by index) → transposed conv."""

    input_stride = INPUT_STRIDE

    def __init__(self, in_channels: int = 3, classes: int = 2, base_channels: int = 16) -> None:
        super().__init__()
        c1, c2, c3 = base_channels, 4 * base_channels, 8 * base_channels  # paper: 16, 64, 128
        self.initial = InitialBlock(in_channels, c1)
        self.down1 = Bottleneck(self.initial.out_channels, c2, "downsampling", dropout=0.01)
        self.stage1 = nn.Sequential(*(Bottleneck(c2, dropout=0.01) for _ in range(4)))
        self.down2 = Bottleneck(c2, c3, "downsampling", dropout=0.1)
        self.stage2 = nn.Sequential(*_stage_body(c3, 0.1))
        self.stage3 = nn.Sequential(*_stage_body(c3, 0.1))
        self.up4 = Bottleneck(c3, c2, "upsampling", dropout=0.1)
        self.stage4 = nn.Sequential(Bottleneck(c2, dropout=0.1), Bottleneck(c2, dropout=0.1))
        self.up5 = Bottleneck(c2, c1, "upsampling", dropout=0.1)
        self.stage5 = Bottleneck(c1, dropout=0.1)
        self.fullconv = nn.ConvTranspose2d(c1, classes, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """N×C×H×W (H, W multiples of 8) → N×classes×H×W logits."""
        x, indices1 = self.down1(self.initial(x))
        x, indices2 = self.down2(self.stage1(x))
        x = self.stage3(self.stage2(x))
        x = self.stage4(self.up4(x, indices2))
        x = self.stage5(self.up5(x, indices1))
        return self.fullconv(x)


@register_model("enet", family="classic")
def enet(in_channels: int = 3, classes: int = 2, base_channels: int = 16) -> ENet:
    """ENet; `base_channels` 16 as in the paper (stages of 16, 64, 128 channels)."""
    return ENet(in_channels, classes, base_channels)
