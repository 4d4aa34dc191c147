"""FactSeg (Ma et al., IEEE TGRS): small-object segmentation with foreground activation (FA) and semantic
refinement (SR) branches fused by collaborative probability (CP),.

Official checkpoints are converted by `segwise.convert.factseg`.

Output convention: `FactSeg.forward` returns log q, the log of the CP-fused class probabilities
q0 ∝ (1 − b)·s0, qc ∝ b·sc (b = σ(FA logit), s = softmax(SR logits)), in training and in evaluation. Since q
sums to 1, softmax(log q) = q: the engine's softmax, sliding-window/TTA probability averaging and argmax see
exactly FactSeg's probabilities, `ce` on it is the official joint CP loss and `som`/`ohem` its mined variants
(`segwise.losses.factseg`). `FactSeg.branches` gives the raw SR and FA logits.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork

from segwise.errors import ModelError
from segwise.models.registry import register_model
from segwise.models.smp_bridge import build_encoder, load_encoder_weights

INPUT_STRIDE = 32


class AsymmetricDecoder(nn.Module):
    """Semantic-FPN decoder: every pyramid level goes to stride 4 through [3×3 conv, BN, ReLU, ×2 bilinear] stages
    (one stage without upsampling at stride 4), and the levels are averaged."""

    def __init__(self, in_channels: int = 256, out_channels: int = 128, in_strides: tuple[int, ...] = (4, 8, 16, 32),
                 out_stride: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for stride in in_strides:
            num_up = int(math.log2(stride)) - int(math.log2(out_stride))
            stages = [nn.Sequential(
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True) if num_up else nn.Identity(),
            ) for i in range(max(num_up, 1))]
            self.blocks.append(nn.Sequential(*stages))

    def forward(self, features: list[Tensor]) -> Tensor:
        return sum(block(feature) for block, feature in zip(self.blocks, features)) / float(len(self.blocks))


def collaborative_log_probs(sr_logits: Tensor, fa_logits: Tensor) -> Tensor:
    """log q of the CP fusion (class 0 = background), computed in log space in at least float32."""
    dtype = torch.promote_types(sr_logits.dtype, torch.float32)
    fa = fa_logits.to(dtype)
    gate = torch.cat([F.logsigmoid(-fa), F.logsigmoid(fa).expand(-1, sr_logits.shape[1] - 1, -1, -1)], dim=1)
    joint = sr_logits.to(dtype).log_softmax(dim=1) + gate
    return joint - joint.logsumexp(dim=1, keepdim=True)


class FactSeg(nn.Module):
    """ResNet-style encoder → two FPNs → two asymmetric decoders → SR head (K classes) and FA head (1 logit)."""

    input_stride = INPUT_STRIDE

    def __init__(self, in_channels: int = 3, classes: int = 16, encoder: str | None = None,
                 encoder_weights: str | None = None, fpn_channels: int = 256, decoder_channels: int = 128) -> None:
        super().__init__()
        if classes < 2:
            raise ModelError(f"factseg needs classes >= 2 (class 0 = background), got {classes}")
        encoder = encoder or "resnet50"
        self.encoder = build_encoder(encoder, in_channels, encoder_weights)
        load_encoder_weights(self, encoder_weights)
        levels = list(self.encoder.out_channels[-4:])
        self.sr_fpn = FeaturePyramidNetwork(levels, fpn_channels)
        self.fa_fpn = FeaturePyramidNetwork(levels, fpn_channels)
        self.sr_decoder = AsymmetricDecoder(fpn_channels, decoder_channels)
        self.fa_decoder = AsymmetricDecoder(fpn_channels, decoder_channels)
        self.sr_head = nn.Conv2d(decoder_channels, classes, 1)
        self.fa_head = nn.Conv2d(decoder_channels, 1, 1)

    def _branch(self, fpn: FeaturePyramidNetwork, decoder: AsymmetricDecoder, head: nn.Conv2d,
                features: list[Tensor]) -> Tensor:
        pyramid = fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))
        logits = head(decoder(list(pyramid.values())))
        return F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=True)

    def branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """SR logits N×K×H×W and FA logit N×1×H×W; inputs are zero-padded to a multiple of 32 and cropped back
        (as the official evaluation pads each window)."""
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % INPUT_STRIDE, 0, -height % INPUT_STRIDE))
        features = list(self.encoder(x)[-4:])
        sr = self._branch(self.sr_fpn, self.sr_decoder, self.sr_head, features)
        fa = self._branch(self.fa_fpn, self.fa_decoder, self.fa_head, features)
        return sr[..., :height, :width], fa[..., :height, :width]

    def forward(self, x: Tensor) -> Tensor:
        """log q, N×K×H×W (see the module docstring): softmax of it is FactSeg's CP probability."""
        return collaborative_log_probs(*self.branches(x))


@register_model("factseg", uses_encoder=True)
def factseg(in_channels: int = 3, classes: int = 16, encoder: str | None = None, encoder_weights: str | None = None,
            **kwargs) -> FactSeg:
    """FactSeg with a ResNet-50 encoder unless `encoder` names another smp/timm encoder."""
    return FactSeg(in_channels, classes, encoder, encoder_weights, **kwargs)
