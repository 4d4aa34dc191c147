"""Every segmentation_models_pytorch architecture × encoder, registered under its lower-case smp name."""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segwise.errors import ModelError
from segwise.models.registry import register_model


def list_encoders() -> list[str]:
    """smp's own encoders; any timm model is also accepted as `tu-<timm name>`."""
    return sorted(smp.encoders.get_encoder_names())


def _load_local_encoder_weights(model: nn.Module, path: Path) -> None:
    """Load encoder weights from a local file without unpickling code (safetensors or weights_only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    if len(unexpected) == len(state):
        raise ModelError(f"encoder weights {path}: no key matches encoder '{type(model.encoder).__name__}'")


def _build(arch: str, in_channels: int, classes: int, encoder: str | None = "resnet34",
           encoder_weights: str | None = None, **kwargs) -> nn.Module:
    encoder = encoder or "resnet34"
    local = Path(encoder_weights) if encoder_weights and Path(encoder_weights).is_file() else None
    weights = None if local else encoder_weights
    try:
        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=weights,
                                 in_channels=in_channels, classes=classes, **kwargs)
    except KeyError as exc:
        raise ModelError(f"model.encoder: smp has no encoder {encoder!r} ({exc}); run `segwise models` to list them, "
                         "or use 'tu-<timm model>'") from None
    except OSError as exc:  # requests/urllib/hf-hub connection errors are OSError subclasses
        raise ModelError(
            f"model.encoder_weights={encoder_weights!r}: the weights for encoder {encoder!r} could not be downloaded "
            f"({type(exc).__name__}). segwise never needs the network: set model.encoder_weights: null to train "
            "from scratch, or give a local .pth/.safetensors file path.") from None
    except ValueError as exc:
        raise ModelError(f"model {arch}/{encoder}: {exc}") from None
    if local:
        _load_local_encoder_weights(model, local)
    return model


def _register_smp() -> None:
    for arch in smp.MODEL_ARCHITECTURES_MAPPING:
        register_model(arch, family="smp", uses_encoder=True)(
            lambda arch=arch, **kw: _build(arch, **kw))


_register_smp()
