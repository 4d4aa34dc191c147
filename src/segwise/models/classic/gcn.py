"""GCN (Peng et al., CVPR 2017, "Large Kernel Matters"): class scores from each ResNet stage through Global
Convolutional Network blocks, refined by Boundary Refinement blocks and merged from coarse to fine.

As in the paper and pytorch-segmentation's GCN: a GCN block sums two separable large-kernel branches, k×1 then
1×k and 1×k then k×1, without BatchNorm or non-linearity, and gives `classes` score maps from each of res-2 …
res-5 (strides 4 … 32); a Boundary Refinement (BR) block is the residual x + conv3×3(ReLU(conv3×3(x))); each
coarser map is upsampled onto the next finer one, the sum refined by a BR, then two more upsamplings (to stride 2,
then to the input) each followed by a BR. As in pytorch-segmentation, upsampling is bilinear to the finer map's
size (the paper's are ×2 deconvolutions), so any input size gives logits at its size.
Differences: k defaults to 15, the paper's best (pytorch-segmentation: 11); the backbone is any smp encoder,
ResNet-50 unless `encoder` names another (the paper's final model uses ResNet-152), randomly initialised unless
`encoder_weights` is given; there is no final 1×1 conv after the last BR (pytorch-segmentation adds one).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from segwise.errors import ModelError
from segwise.models.smp_bridge import build_encoder, load_encoder_weights
from segwise.models.registry import register_model

INPUT_STRIDE = 32
DEFAULT_ENCODER = "resnet50"


class GlobalConvolution(nn.Module):
    """k×1 → 1×k plus 1×k → k×1: a dense k×k receptive field at the cost of 2·2k weights per channel pair."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ModelError(f"gcn kernel_size must be an odd number ≥ 1 (maps keep their size), got {kernel_size}")
        pad = kernel_size // 2
        tall = {"kernel_size": (kernel_size, 1), "padding": (pad, 0)}
        wide = {"kernel_size": (1, kernel_size), "padding": (0, pad)}
        self.tall_wide = nn.Sequential(nn.Conv2d(in_channels, out_channels, **tall),
                                       nn.Conv2d(out_channels, out_channels, **wide))
        self.wide_tall = nn.Sequential(nn.Conv2d(in_channels, out_channels, **wide),
                                       nn.Conv2d(out_channels, out_channels, **tall))

    def forward(self, x: Tensor) -> Tensor:
        return self.tall_wide(x) + self.wide_tall(x)


class BoundaryRefinement(nn.Module):
    """x + conv3×3(ReLU(conv3×3(x))): a residual correction of the score maps, mostly along object boundaries."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual(x)


def _resize(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class GCN(nn.Module):
    """Encoder → GCN + BR per stage (strides 4 … 32) → coarse-to-fine sums, each with a BR → two upsamplings."""

    input_stride = INPUT_STRIDE

    def __init__(self, in_channels: int = 3, classes: int = 2, encoder: str | None = None,
                 encoder_weights: str | None = None, kernel_size: int = 15) -> None:
        super().__init__()
        self.encoder = build_encoder(encoder or DEFAULT_ENCODER, in_channels, encoder_weights)
        widths = self.encoder.out_channels[2:]  # res-2 … res-5
        self.gcn = nn.ModuleList(GlobalConvolution(width, classes, kernel_size) for width in widths)
        self.stage_br = nn.ModuleList(BoundaryRefinement(classes) for _ in widths)
        self.merge_br = nn.ModuleList(BoundaryRefinement(classes) for _ in widths[1:])  # coarse to fine
        self.stride2_br = BoundaryRefinement(classes)
        self.output_br = BoundaryRefinement(classes)
        load_encoder_weights(self, encoder_weights)

    def forward(self, x: Tensor) -> Tensor:
        """N×C×H×W → N×classes×H×W logits."""
        features = self.encoder(x)
        scores = [br(gcn(f)) for gcn, br, f in zip(self.gcn, self.stage_br, features[2:])]
        out = scores[-1]
        for br, finer in zip(self.merge_br, reversed(scores[:-1])):
            out = br(_resize(out, finer) + finer)
        out = self.stride2_br(_resize(out, features[1]))
        return self.output_br(_resize(out, x))


@register_model("gcn", family="classic", uses_encoder=True)
def gcn(in_channels: int = 3, classes: int = 2, encoder: str | None = None, encoder_weights: str | None = None,
        kernel_size: int = 15) -> GCN:
    """GCN on a ResNet-50 (or any smp encoder); `kernel_size` k of the large separable kernels (15 in the paper)."""
    return GCN(in_channels, classes, encoder, encoder_weights, kernel_size)
