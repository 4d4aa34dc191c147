"""Classic segmentation architectures of S2's model zoo (SegNet, FCN-8s, ENet) as plain `nn.Module`s.

Importing the package registers them in family 'classic': no encoder argument, no pretrained weights, and each
declares `input_stride` (inputs are padded to it by the engine) and returns logits at input resolution.
"""

from segwise.models.classic import enet, fcn, segnet  # noqa: F401  (registers enet, fcn8, segnet)
from segwise.models.classic.enet import ENet
from segwise.models.classic.fcn import FCN8s, bilinear_kernel
from segwise.models.classic.segnet import SegNet

__all__ = ["ENet", "FCN8s", "SegNet", "bilinear_kernel"]
