"""Classic segmentation architectures of pytorch-segmentation's model zoo as plain `nn.Module`s: SegNet, FCN-8s,
ENet and U-Net (fixed backbones, trained from scratch), GCN, DUC-HDC, SegResNet and PSPNet (on an smp encoder:
`encoder`, and `encoder_weights` when pretrained weights are asked for).

Importing the package registers them in family 'classic'; each declares `input_stride` (inputs are padded to it
by the engine) and returns logits at input resolution.
"""

from segwise.models.classic import duc_hdc, enet, fcn, gcn, pspnet, segnet, segresnet, unet  # noqa: F401
from segwise.models.classic.duc_hdc import DUCHDC
from segwise.models.classic.enet import ENet
from segwise.models.classic.fcn import FCN8s, bilinear_kernel
from segwise.models.classic.gcn import GCN
from segwise.models.classic.pspnet import PSPNetDilated
from segwise.models.classic.segnet import SegNet
from segwise.models.classic.segresnet import SegResNet
from segwise.models.classic.unet import UNet

__all__ = ["DUCHDC", "ENet", "FCN8s", "GCN", "PSPNetDilated", "SegNet", "SegResNet", "UNet", "bilinear_kernel"]
