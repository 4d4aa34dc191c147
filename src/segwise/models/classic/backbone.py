"""The ResNet-style backbone GCN and DUC-HDC share: an smp encoder, random unless weights are asked for."""

from __future__ import annotations

from pathlib import Path

from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from segwise.errors import ModelError
from segwise.models.smp_bridge import load_local_encoder_weights


def build_encoder(name: str, in_channels: int, weights: str | None) -> nn.Module:
    """smp (or `tu-` timm) encoder of depth 5: features at strides 1, 2, 4, 8, 16 and 32, widths `out_channels`.

    `weights`: None (random init, nothing downloads), a weights name (downloads) or a local .pth/.safetensors
    file, which `load_encoder_weights` loads once the model around the encoder exists.
    """
    local = weights is not None and Path(weights).is_file()
    try:
        return get_encoder(name, in_channels=in_channels, depth=5, weights=None if local else weights)
    except KeyError as exc:
        raise ModelError(f"model.encoder={name!r} / encoder_weights={weights!r} unknown to smp ({exc}); run "
                         "`segwise models` for encoder names, or use 'tu-<timm model>'") from None
    except OSError as exc:
        raise ModelError(f"model.encoder_weights={weights!r} for encoder {name!r} could not be downloaded "
                         f"({type(exc).__name__}); use null or a local .pth/.safetensors file") from None


def load_encoder_weights(model: nn.Module, weights: str | None) -> None:
    """Load a local weights file into `model.encoder` (weight names were already loaded by `build_encoder`)."""
    if weights is not None and Path(weights).is_file():
        load_local_encoder_weights(model, Path(weights))
