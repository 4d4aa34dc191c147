"""PSPNet (Zhao et al., CVPR 2017, "Pyramid Scene Parsing Network") as pytorch-segmentation trains it: a dilated
ResNet at output stride 8, a pyramid pooling module on its last stage and an auxiliary FCN head on res-4.

As in pytorch-segmentation's PSPNet: res-4 and res-5 keep stride 8 by dilation (2 and 4; smp's dilation of its
encoders); the pyramid pooling module average-pools the res-5 map to 1×1, 2×2, 3×3 and 6×6 bins (`bins`), reduces
each to width/len(bins) channels (1×1 conv, BN, ReLU), upsamples them bilinearly and concatenates them with the
map; a 3×3 conv-BN-ReLU to a quarter of the width, Dropout2d 0.1 and a 1×1 conv give the class scores, upsampled
bilinearly to the input. The auxiliary head (3×3 conv-BN-ReLU to a quarter of res-5's width, Dropout2d 0.1, 1×1
conv) scores res-4 in training only: `model(x, aux=True)` returns both logits and the trainer adds
`loss.aux_weight` (0.4, pytorch-segmentation's and the paper's) × the same loss on the auxiliary logits; `model(x)`
(inference, ONNX export) runs no auxiliary head.
Differences: the stem is the encoder's own (pytorch-segmentation's ResNets have a three-conv "deep" stem); the
backbone is any smp encoder that smp can dilate, ResNet-50 unless `encoder` names another (pytorch-segmentation's
code defaults to ResNet-152, its config to ResNet-50), randomly initialised unless `encoder_weights` is given.
smp's `pspnet` is a different, lighter model (no dilation: its pyramid sits on the stride-8 stage, no aux head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segwise.errors import ModelError
from segwise.models.classic.segnet import conv_bn_relu
from segwise.models.smp_bridge import build_encoder, load_encoder_weights
from segwise.models.registry import register_model

OUTPUT_STRIDE = 8
DEFAULT_ENCODER = "resnet50"


def _resize(x: Tensor, size: torch.Size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """The map, concatenated with its average over each bin grid (1×1 conv-BN-ReLU, upsampled back), then fused by a
    3×3 conv-BN-ReLU: every pixel sees the whole image's context at several scales."""

    def __init__(self, in_channels: int, out_channels: int, bins: Sequence[int]) -> None:
        super().__init__()
        if not bins or any(int(b) < 1 for b in bins):
            raise ModelError(f"pspnet_dilated bins must be integers ≥ 1 (pooled grid sides), got {list(bins)}")
        branch = in_channels // len(bins)
        self.branches = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(int(b)), conv_bn_relu(in_channels, branch, 1))
                                      for b in bins)
        self.fuse = nn.Sequential(conv_bn_relu(in_channels + branch * len(bins), out_channels), nn.Dropout2d(0.1))

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([x, *(_resize(branch(x), x.shape[-2:]) for branch in self.branches)], dim=1))


class PSPNetDilated(nn.Module):
    """Dilated encoder (output stride 8) → pyramid pooling → 1×1 classifier → bilinear ×8; an auxiliary FCN head on
    the second-to-last stage, run only by `forward(x, aux=True)` (training)."""

    input_stride = OUTPUT_STRIDE
    has_aux = True  # the trainer calls model(x, aux=True) and weights the second logits by loss.aux_weight

    def __init__(self, in_channels: int = 3, classes: int = 2, encoder: str | None = None,
                 encoder_weights: str | None = None, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.encoder = build_encoder(encoder or DEFAULT_ENCODER, in_channels, encoder_weights, OUTPUT_STRIDE)
        res4, res5 = self.encoder.out_channels[-2:]
        self.head = nn.Sequential(PyramidPooling(res5, res5 // 4, bins), nn.Conv2d(res5 // 4, classes, 1))
        self.aux_head = nn.Sequential(conv_bn_relu(res4, res5 // 4), nn.Dropout2d(0.1),
                                      nn.Conv2d(res5 // 4, classes, 1))
        load_encoder_weights(self, encoder_weights)

    def forward(self, x: Tensor, aux: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """N×C×H×W → N×classes×H×W logits; with `aux`, (logits, auxiliary logits), both at input resolution."""
        features = self.encoder(x)
        logits = _resize(self.head(features[-1]), x.shape[-2:])
        if aux is not True:  # identity, not truth: torch.fx (BatchNorm folding for inference) traces `aux` as a
            return logits    # proxy whose truth it cannot know, and must take this branch
        return logits, _resize(self.aux_head(features[-2]), x.shape[-2:])


@register_model("pspnet_dilated", family="classic", uses_encoder=True)
def pspnet_dilated(in_channels: int = 3, classes: int = 2, encoder: str | None = None,
                   encoder_weights: str | None = None, bins: Sequence[int] = (1, 2, 3, 6)) -> PSPNetDilated:
    """PSPNet on a dilated ResNet-50 (or another smp encoder) with its auxiliary head; `bins` of the pyramid."""
    return PSPNetDilated(in_channels, classes, encoder, encoder_weights, bins)
