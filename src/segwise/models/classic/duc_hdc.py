"""DUC-HDC (Wang et al., WACV 2018, "Understanding Convolution for Semantic Segmentation"): a ResNet kept at output
stride 8 by hybrid dilated convolution (HDC), and dense upsampling convolution (DUC) that predicts the class
scores of every pixel of each 8×8 cell from the stride-8 map instead of upsampling coarse scores bilinearly.

As in the paper: res-4 and res-5 lose their strides; their successive 3×3 convolutions cycle through dilation
rates without a common factor, (1, 2, 5, 9) and (5, 9, 17) by default (pytorch-segmentation's `dilation_bigger`;
its default cycles (1, 2, 3) and (3, 4, 5): `res4_rates`, `res5_rates`), so the stacked receptive field has no
holes (no "gridding"); the DUC layer, as in the authors' model, sums 3×3 convolutions dilated (6, 12, 18, 24)
(DeepLab-v2's ASPP) with classes·8² outputs and rearranges them (pixel shuffle) into full-resolution logits.
As in pytorch-segmentation, the DUC convolutions start with ICNR initialisation (Aitken et al. 2017: the 8²
sub-pixel filters of a class are equal, so the initial output is a nearest-neighbour upsampling without
checkerboard artefacts).
Differences: pytorch-segmentation puts a DeepLab-v3+ ASPP and decoder between the backbone and a ×4 DUC; here the
DUC sits on the backbone as in the paper. The backbone is any smp ResNet, ResNet-101 (the paper's) unless
`encoder` names another, randomly initialised unless `encoder_weights` is given; with two 3×3 convolutions per
block (ResNet-18/34) the rates cycle over convolutions, not blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.resnet import ResNet

from segwise.errors import ModelError
from segwise.models.smp_bridge import build_encoder, load_encoder_weights
from segwise.models.registry import register_model

OUTPUT_STRIDE = 8
DEFAULT_ENCODER = "resnet101"


def hybrid_dilation(stage: nn.Module, rates: Sequence[int]) -> None:
    """Keep a ResNet stage at its input's resolution: every stride becomes 1 and the stage's successive 3×3
    convolutions are dilated by `rates` in turn (padding = rate, so sizes are kept)."""
    if not rates or any(int(rate) < 1 for rate in rates):
        raise ModelError(f"duc_hdc dilation rates must be integers ≥ 1, got {list(rates)}")
    convolutions = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]  # in execution order
    for index, conv in enumerate(c for c in convolutions if c.kernel_size == (3, 3)):
        rate = int(rates[index % len(rates)])
        conv.dilation, conv.padding = (rate, rate), (rate, rate)
    for conv in convolutions:
        conv.stride = (1, 1)


class DenseUpsampling(nn.Module):
    """Stride-`factor` features → N×classes×(factor·h)×(factor·w) logits: dilated 3×3 convolutions with
    classes·factor² outputs, summed, then pixel shuffle (each output channel becomes one pixel of a cell)."""

    def __init__(self, in_channels: int, classes: int, factor: int, rates: Sequence[int]) -> None:
        super().__init__()
        if not rates or any(int(rate) < 1 for rate in rates):
            raise ModelError(f"duc_hdc duc_rates must be integers ≥ 1, got {list(rates)}")
        cells = factor * factor
        self.branches = nn.ModuleList(nn.Conv2d(in_channels, classes * cells, 3, padding=int(r), dilation=int(r))
                                      for r in rates)
        self.shuffle = nn.PixelShuffle(factor)
        with torch.no_grad():  # ICNR: the factor² filters that become one class's cell start equal
            for conv in self.branches:
                conv.weight.copy_(conv.weight[::cells].repeat_interleave(cells, dim=0))
                conv.bias.copy_(conv.bias[::cells].repeat_interleave(cells))

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(sum(branch(x) for branch in self.branches))


class DUCHDC(nn.Module):
    """ResNet with HDC in res-4 and res-5 (output stride 8) → DUC to full resolution."""

    input_stride = OUTPUT_STRIDE

    def __init__(self, in_channels: int = 3, classes: int = 2, encoder: str | None = None,
                 encoder_weights: str | None = None, res4_rates: Sequence[int] = (1, 2, 5, 9),
                 res5_rates: Sequence[int] = (5, 9, 17), duc_rates: Sequence[int] = (6, 12, 18, 24)) -> None:
        super().__init__()
        encoder = encoder or DEFAULT_ENCODER
        self.encoder = build_encoder(encoder, in_channels, encoder_weights)
        if not isinstance(self.encoder, ResNet):
            raise ModelError(f"duc_hdc dilates the last two stages of a ResNet; encoder {encoder!r} is not one of "
                             "smp's ResNets (resnet18/34/50/101/152, resnext50_32x4d, ...)")
        hybrid_dilation(self.encoder.layer3, res4_rates)
        hybrid_dilation(self.encoder.layer4, res5_rates)
        self.duc = DenseUpsampling(self.encoder.out_channels[-1], classes, OUTPUT_STRIDE, duc_rates)
        load_encoder_weights(self, encoder_weights)

    def forward(self, x: Tensor) -> Tensor:
        """N×C×H×W → N×classes×H×W logits (computed for H, W rounded up to multiples of 8, then cropped)."""
        return self.duc(self.encoder(x)[-1])[..., : x.shape[-2], : x.shape[-1]]


@register_model("duc_hdc", family="classic", uses_encoder=True)
def duc_hdc(in_channels: int = 3, classes: int = 2, encoder: str | None = None, encoder_weights: str | None = None,
            res4_rates: Sequence[int] = (1, 2, 5, 9), res5_rates: Sequence[int] = (5, 9, 17),
            duc_rates: Sequence[int] = (6, 12, 18, 24)) -> DUCHDC:
    """DUC-HDC on a ResNet-101 (or another smp ResNet); the dilation rates of res-4, res-5 and the DUC layer."""
    return DUCHDC(in_channels, classes, encoder, encoder_weights, res4_rates, res5_rates, duc_rates)
