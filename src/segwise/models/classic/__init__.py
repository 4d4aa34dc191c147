"""Classic segmentation architectures of pytorch-segmentation's model zoo as plain `nn.Module`s: SegNet, FCN-8s
and ENet (fixed backbones, trained from scratch), GCN and DUC-HDC (on an smp encoder: `encoder`, and
`encoder_weights` when pretrained weights are asked for).

Importing the package registers them in family 'classic'; each declares `input_stride` (inputs are padded to it
by the engine) and returns logits at input resolution.
"""

from segwise.models.classic import duc_hdc, enet, fcn, gcn, segnet  # noqa: F401  (registers each)
from segwise.models.classic.duc_hdc import DUCHDC
from segwise.models.classic.enet import ENet
from segwise.models.classic.fcn import FCN8s, bilinear_kernel
from segwise.models.classic.gcn import GCN
from segwise.models.classic.segnet import SegNet

__all__ = ["DUCHDC", "ENet", "FCN8s", "GCN", "SegNet", "bilinear_kernel"]
